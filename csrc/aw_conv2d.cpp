// aw_conv2d by the `stacked` strategy (`scaled` when K = 1; DESIGN.md section 3): one convolution against
// the K banks stacked along the output channels (ATen picks the GEMM: oneDNN on CPU, cuDNN on GPU), then a
// per-device kernel (cpu/ or cuda/bank_mixing) mixes the bank outputs with the per-sample coefficients. The
// forward returns the bank outputs too, and the backward reads them: dcoeff[b,k,o] =
// sum_p dy[b,o,p] * conv(x[b], W_k)[o,p] with no second forward convolution, and dx and every dW_k from one
// convolution backward of the coefficient-scaled dy.
#include "awnet.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

namespace awnet {
namespace {

Tensor stack_banks(const Tensor& weight, int64_t groups) {
  const auto banks = weight.size(0), out = weight.size(1);
  return weight.reshape({banks, groups, out / groups, weight.size(2), weight.size(3), weight.size(4)})
      .transpose(0, 1)
      .reshape({banks * out, weight.size(2), weight.size(3), weight.size(4)});
}

Tensor unstack_banks(const Tensor& stacked, int64_t banks, int64_t groups) {
  const auto out = stacked.size(0) / banks;
  return stacked.reshape({groups, banks, out / groups, stacked.size(1), stacked.size(2), stacked.size(3)})
      .transpose(0, 1)
      .reshape({banks, out, stacked.size(1), stacked.size(2), stacked.size(3)});
}

// (B, K) or (B, K, C_out) -> contiguous (B, K, C_out) in the accumulation type.
Tensor filter_coeff(const Tensor& coeff, int64_t out_channels, at::ScalarType acc) {
  const auto a = coeff.dim() == 2 ? coeff.unsqueeze(-1).expand({coeff.size(0), coeff.size(1), out_channels})
                                  : coeff;
  return a.to(acc).contiguous();
}

Tensor bank_outputs(const Tensor& x, const Tensor& stacked, IntArrayRef stride, IntArrayRef padding,
                    IntArrayRef dilation, int64_t groups) {
  return at::convolution(x, stacked, std::nullopt, stride, padding, dilation, false, {0, 0}, groups)
      .contiguous(x.suggest_memory_format());
}

// Every tensor the kernels index, checked before they do: a bad call of torch.ops.awnet.* raises
// ValueError/TypeError instead of reading out of bounds.
void check_args(const Tensor& x, const Tensor& weight, const Tensor& coeff, const std::optional<Tensor>& bias,
                IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK_VALUE(x.dim() == 4, "awnet::aw_conv2d: x must be (B, C_in, H, W), got ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 5 && weight.size(0) >= 1 && weight.size(1) >= 1,
                    "awnet::aw_conv2d: weight must be (K, C_out, C_in // groups, kH, kW), got ", weight.sizes());
  TORCH_CHECK_VALUE(x.size(1) >= 1, "awnet::aw_conv2d: x has no input channels: ", x.sizes());
  TORCH_CHECK_VALUE(groups >= 1 && x.size(1) == weight.size(2) * groups && weight.size(1) % groups == 0,
                    "awnet::aw_conv2d: weight ", weight.sizes(), " does not match x ", x.sizes(), " and groups=",
                    groups);
  TORCH_CHECK_VALUE((coeff.dim() == 2 || (coeff.dim() == 3 && coeff.size(2) == weight.size(1))) &&
                        coeff.size(0) == x.size(0) && coeff.size(1) == weight.size(0),
                    "awnet::aw_conv2d: coeff must be (B, K) or (B, K, C_out), got ", coeff.sizes());
  TORCH_CHECK_VALUE(!bias || (bias->dim() == 2 && bias->size(0) == weight.size(0) && bias->size(1) == weight.size(1)),
                    "awnet::aw_conv2d: bias must be (K, C_out)");
  for (const auto* t : {&weight, &coeff}) {
    TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), "awnet::aw_conv2d: every tensor must have x's dtype ",
                     x.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x.device(), "awnet::aw_conv2d: every tensor must be on ", x.device());
  }
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "awnet::aw_conv2d: x must be floating, got ",
                   x.scalar_type());
  TORCH_CHECK_TYPE(!bias || (bias->scalar_type() == x.scalar_type() && bias->device() == x.device()),
                   "awnet::aw_conv2d: bias must have x's dtype and device");
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "awnet::aw_conv2d: stride, padding and dilation must be pairs");
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK_VALUE(stride[i] >= 1 && dilation[i] >= 1 && padding[i] >= 0,
                      "awnet::aw_conv2d: stride and dilation must be >= 1 and padding >= 0");
    TORCH_CHECK_VALUE(x.size(2 + i) + 2 * padding[i] - dilation[i] * (weight.size(3 + i) - 1) - 1 >= 0,
                      "awnet::aw_conv2d: x's spatial size ", x.sizes().slice(2), " is smaller than the dilated kernel");
  }
}

// The bank outputs the forward keeps for the backward: (B, K * C_out, H_out, W_out) in x's memory format.
void check_saved(const Tensor& banks, const Tensor& grad_y, const Tensor& x, const Tensor& weight) {
  TORCH_CHECK_VALUE(grad_y.dim() == 4 && grad_y.size(0) == x.size(0) && grad_y.size(1) == weight.size(1) &&
                        grad_y.scalar_type() == x.scalar_type() && grad_y.device() == x.device(),
                    "awnet::aw_conv2d_backward: grad_y must be (B, C_out, H_out, W_out) like the output, got ",
                    grad_y.sizes());
  if (!banks.defined() || banks.numel() == 0) return;
  TORCH_CHECK_VALUE(banks.dim() == 4 && banks.size(0) == x.size(0) && banks.size(1) == weight.size(0) * weight.size(1) &&
                        banks.size(2) == grad_y.size(2) && banks.size(3) == grad_y.size(3) &&
                        banks.scalar_type() == x.scalar_type() && banks.device() == x.device(),
                    "awnet::aw_conv2d_backward: the saved bank outputs must be (B, K * C_out, H_out, W_out), got ",
                    banks.sizes());
}

bool is_channels_last(const Tensor& x) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

}  // namespace

std::tuple<Tensor, Tensor> aw_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& coeff,
                                             const std::optional<Tensor>& bias, IntArrayRef stride,
                                             IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  const NoAutocast no_autocast;
  check_args(x, weight, coeff, bias, stride, padding, dilation, groups);
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto out_channels = weight.size(1);
  const auto a = filter_coeff(coeff, out_channels, acc);
  auto banks = bank_outputs(x, stack_banks(weight, groups), stride, padding, dilation, groups);
  Tensor bias_b;
  if (bias) bias_b = at::einsum("bko,ko->bo", {a, bias->to(acc)}).contiguous();
  auto y = at::empty({x.size(0), out_channels, banks.size(2), banks.size(3)},
                     x.options().memory_format(x.suggest_memory_format()));
  kernels_for(x).mix_banks(banks, a, bias_b, groups, is_channels_last(x), y);
  return {y, banks};
}

Tensor aw_conv2d(const Tensor& x, const Tensor& weight, const Tensor& coeff, const std::optional<Tensor>& bias,
                 IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  return std::get<0>(aw_conv2d_forward(x, weight, coeff, bias, stride, padding, dilation, groups));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> aw_conv2d_backward(
    const Tensor& grad_y, const Tensor& saved, const Tensor& x, const Tensor& weight, const Tensor& coeff,
    const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
    int64_t groups, std::array<bool, 4> output_mask) {
  // Layouts are part of the contract (the fake kernels promise them): dx in x's memory format, the
  // other gradients contiguous.
  const NoAutocast no_autocast;
  check_args(x, weight, coeff, bias, stride, padding, dilation, groups);
  check_saved(saved, grad_y, x, weight);
  const auto [need_x, need_weight, need_coeff, need_bias] = output_mask;
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto num_banks = weight.size(0), out_channels = weight.size(1);
  const auto a = filter_coeff(coeff, out_channels, acc);
  const auto stacked = stack_banks(weight, groups);
  const auto dy = grad_y.contiguous(x.suggest_memory_format());

  Tensor banks, dy_banks, da;
  if (need_coeff) {
    TORCH_CHECK_VALUE(saved.defined() && saved.numel() == grad_y.numel() * num_banks,
                      "awnet::aw_conv2d_backward: dcoeff needs the bank outputs that aw_conv2d_forward returned");
    banks = saved.contiguous(x.suggest_memory_format());
    da = at::empty(a.sizes(), a.options());
  }
  if (need_x || need_weight) {
    dy_banks = at::empty({dy.size(0), stacked.size(0), dy.size(2), dy.size(3)},
                         dy.options().memory_format(x.suggest_memory_format()));
  }
  auto dy_sum = at::empty({dy.size(0), out_channels}, a.options());
  kernels_for(x).bank_grads(dy, banks, a, groups, is_channels_last(x), dy_banks, da, dy_sum);

  auto empty = x.new_empty({0});
  Tensor dx = empty, dweight = empty, dcoeff = empty, dbias = empty;
  if (need_x || need_weight) {
    auto [gx, gw, unused] = at::convolution_backward(dy_banks, x, stacked, std::nullopt, stride, padding, dilation,
                                                     false, {0, 0}, groups, {need_x, need_weight, false});
    if (need_x) dx = gx.contiguous(x.suggest_memory_format());
    if (need_weight) dweight = unstack_banks(gw, num_banks, groups).contiguous();  // channels_last x gives a strided gw
  }
  if (need_coeff) {
    if (bias) da.add_(bias->to(acc).unsqueeze(0) * dy_sum.unsqueeze(1));
    dcoeff = (coeff.dim() == 2 ? da.sum(2) : da).to(coeff.scalar_type()).contiguous();
  }
  if (need_bias && bias) dbias = at::einsum("bko,bo->ko", {a, dy_sum}).to(bias->scalar_type()).contiguous();
  return {dx, dweight, dcoeff, dbias};
}

TORCH_LIBRARY_IMPL(awnet, CPU, m) {
  m.impl("aw_conv2d", &aw_conv2d);
  m.impl("aw_conv2d_forward", &aw_conv2d_forward);
  m.impl("aw_conv2d_backward", &aw_conv2d_backward);
}

#ifdef AWNET_WITH_CUDA
TORCH_LIBRARY_IMPL(awnet, CUDA, m) {
  m.impl("aw_conv2d", &aw_conv2d);
  m.impl("aw_conv2d_forward", &aw_conv2d_forward);
  m.impl("aw_conv2d_backward", &aw_conv2d_backward);
}
#endif

}  // namespace awnet
