// The awnet:: operators: declarations shared by the schema, the backends and the autograd.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <array>
#include <tuple>

namespace awnet {

using at::IntArrayRef;
using at::Tensor;

// Device-generic implementations (ATen GEMMs plus the per-device kernels below).
Tensor aw_conv2d(const Tensor& x, const Tensor& weight, const Tensor& coeff, const std::optional<Tensor>& bias,
                 IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups);

std::tuple<Tensor, Tensor, Tensor, Tensor> aw_conv2d_backward(
    const Tensor& grad_y, const Tensor& x, const Tensor& weight, const Tensor& coeff,
    const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
    int64_t groups, std::array<bool, 4> output_mask);

std::tuple<Tensor, Tensor, Tensor> mix_batch_norm(
    const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps);

std::tuple<Tensor, Tensor, Tensor, Tensor> mix_batch_norm_backward(
    const Tensor& grad_y, const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias,
    const Tensor& mean, const Tensor& invstd, bool training, double eps, std::array<bool, 4> output_mask);

// Banks stacked along the output channels, group-major, so that one grouped convolution computes every
// bank: bank k's filter o sits at stacked channel (o / Cg) * K * Cg + k * Cg + o % Cg, Cg = C_out / groups.
inline int64_t stacked_channel(int64_t k, int64_t o, int64_t banks, int64_t group_out) {
  return (o / group_out) * banks * group_out + k * group_out + o % group_out;
}

// Per-device kernels of the mix-in-epilogue strategy. `banks` is (B, K * C_out, H, W) in the stacked
// order; it and every (B, C, H, W) tensor are dense in one memory format (channels_last or NCHW); `a` is
// the (B, K, C_out) coefficient, and da, dy_sum and bias_b are in the accumulation type.
namespace cpu {
// y[b,o,p] = sum_k a[b,k,o] * banks[b, stacked(k,o), p] + bias_b[b,o]   (bias_b may be undefined)
void mix_banks(const Tensor& banks, const Tensor& a, const Tensor& bias_b, int64_t groups, bool channels_last,
               Tensor& y);
// One pass over dy: dy_banks[b, stacked(k,o), p] = a[b,k,o] * dy[b,o,p] (if defined),
// da[b,k,o] = sum_p dy[b,o,p] * banks[b, stacked(k,o), p] (if defined), dy_sum[b,o] = sum_p dy[b,o,p].
void bank_grads(const Tensor& dy, const Tensor& banks, const Tensor& a, int64_t groups, bool channels_last,
                Tensor& dy_banks, Tensor& da, Tensor& dy_sum);
}  // namespace cpu

}  // namespace awnet
