// Autograd for awnet::aw_conv2d, in C++ so the compiled backends need no Python in the hot path: the formula of
// awkernels/_contract.py's register_autograd, through the aw_conv2d_forward/aw_conv2d_backward pair.
#include "../awnet.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace awnet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<Tensor, Tensor> call_forward(const Tensor& x, const Tensor& weight, const Tensor& coeff,
                                        const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding,
                                        IntArrayRef dilation, int64_t groups) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("awnet::aw_conv2d_forward", "")
                       .typed<decltype(aw_conv2d_forward)>();
  return op.call(x, weight, coeff, bias, stride, padding, dilation, groups);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> call_backward(
    const Tensor& grad_y, const Tensor& saved, const Tensor& x, const Tensor& weight, const Tensor& coeff,
    const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
    int64_t groups, std::array<bool, 4> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("awnet::aw_conv2d_backward", "")
                       .typed<decltype(aw_conv2d_backward)>();
  return op.call(grad_y, saved, x, weight, coeff, bias, stride, padding, dilation, groups, output_mask);
}

class AWConv2dFunction : public torch::autograd::Function<AWConv2dFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, const Tensor& coeff,
                        const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef dilation, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, banks] = call_forward(x, weight, coeff, bias, stride, padding, dilation, groups);
    // The bank outputs serve dcoeff alone: kept only when coeff will need a gradient.
    ctx->save_for_backward({x, weight, coeff, bias.value_or(Tensor()), coeff.requires_grad() ? banks : Tensor()});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& bias = saved[3];
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                      bias.defined() && ctx->needs_input_grad(3)};
    auto [dx, dweight, dcoeff, dbias] = call_backward(
        grad_outputs[0], saved[4].defined() ? saved[4] : saved[0].new_empty({0}), saved[0], saved[1], saved[2],
        bias.defined() ? std::optional<Tensor>(bias) : std::nullopt, ctx->saved_data["stride"].toIntVector(),
        ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
        ctx->saved_data["groups"].toInt(), mask);
    // One slot per forward argument; the four int arguments get none.
    return {mask[0] ? dx : Tensor(), mask[1] ? dweight : Tensor(), mask[2] ? dcoeff : Tensor(),
            mask[3] ? dbias : Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor aw_conv2d_autograd(const Tensor& x, const Tensor& weight, const Tensor& coeff,
                          const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding,
                          IntArrayRef dilation, int64_t groups) {
  return AWConv2dFunction::apply(x, weight, coeff, bias, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(awnet, Autograd, m) {
  m.impl("aw_conv2d", &aw_conv2d_autograd);
}

}  // namespace awnet
