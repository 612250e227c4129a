// Autograd for awnet::mix_batch_norm, in C++ so the compiled backends need no Python in the hot path (the
// formula of awkernels/_contract.py's register_autograd).
#include "../awnet.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace awnet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> call_forward(
    const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps, const std::optional<Tensor>& prescale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("awnet::mix_batch_norm", "")
                       .typed<decltype(mix_batch_norm)>();
  return op.call(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> call_backward(
    const Tensor& grad_y, const Tensor& mean, const Tensor& invstd, const Tensor& sample_mean,
    const Tensor& sample_var, const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias,
    bool training, double eps, std::array<bool, 4> output_mask, const std::optional<Tensor>& prescale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("awnet::mix_batch_norm_backward", "")
                       .typed<decltype(mix_batch_norm_backward)>();
  return op.call(grad_y, mean, invstd, sample_mean, sample_var, x, coeff, weight, bias, training, eps, output_mask,
                 prescale);
}

class MixBatchNormFunction : public torch::autograd::Function<MixBatchNormFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& coeff, const Tensor& weight,
                               const Tensor& bias, Tensor running_mean, Tensor running_var, bool training,
                               double momentum, double eps, const std::optional<Tensor>& prescale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, invstd, sample_mean, sample_var] =
        call_forward(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps, prescale);
    ctx->save_for_backward({x, coeff, weight, bias, mean, invstd, sample_mean, sample_var,
                            prescale ? *prescale : Tensor()});
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    ctx->mark_non_differentiable({mean, invstd, sample_mean, sample_var});
    ctx->set_materialize_grads(false);  // no zero-filled gradients for the statistics
    return {y, mean, invstd, sample_mean, sample_var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    // An undefined gradient of y is a zero one: every input gradient is zero, so none is computed.
    if (!grad_outputs[0].defined()) return variable_list(10);
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                      ctx->needs_input_grad(3)};
    const std::optional<Tensor> prescale = s[8].defined() ? std::optional<Tensor>(s[8]) : std::nullopt;
    auto [dx, dcoeff, dweight, dbias, dprescale] =
        call_backward(grad_outputs[0], s[4], s[5], s[6], s[7], s[0], s[1], s[2], s[3],
                      ctx->saved_data["training"].toBool(), ctx->saved_data["eps"].toDouble(), mask, prescale);
    // One slot per forward argument; the running statistics and the three scalars get none. The prescale is
    // the seventh tensor input (edge 6) when given.
    return {mask[0] ? dx : Tensor(), mask[1] ? dcoeff : Tensor(), mask[2] ? dweight : Tensor(),
            mask[3] ? dbias : Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            prescale && ctx->needs_input_grad(6) ? dprescale : Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch_norm_autograd(
    const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps, const std::optional<Tensor>& prescale) {
  auto out = MixBatchNormFunction::apply(x, coeff, weight, bias, running_mean, running_var, training, momentum, eps,
                                         prescale);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(awnet, Autograd, m) {
  m.impl("mix_batch_norm", &mix_batch_norm_autograd);
}

}  // namespace awnet
