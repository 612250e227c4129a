// The awnet:: operators: the C++ kernels of the schemas that awkernels/_contract.py declares (the one place
// their argument lists are written), shared by the backends and the autograd.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Optional.h>

#include <array>
#include <tuple>

namespace awnet {

using at::IntArrayRef;
using at::Tensor;

// The ops choose their own precisions (accumulating in float): autocast, which the caller may have on, must
// not recast the ATen calls inside them.
struct NoAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// Device-generic implementations (ATen GEMMs plus the per-device kernels below).
Tensor aw_conv2d(const Tensor& x, const Tensor& weight, const Tensor& coeff, const std::optional<Tensor>& bias,
                 IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups);

// y and what the backward reads: the bank outputs (B, K * C_out, H_out, W_out).
std::tuple<Tensor, Tensor> aw_conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& coeff,
                                             const std::optional<Tensor>& bias, IntArrayRef stride,
                                             IntArrayRef padding, IntArrayRef dilation, int64_t groups);

std::tuple<Tensor, Tensor, Tensor, Tensor> aw_conv2d_backward(
    const Tensor& grad_y, const Tensor& saved, const Tensor& x, const Tensor& weight, const Tensor& coeff,
    const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
    int64_t groups, std::array<bool, 4> output_mask);

// y, the banks' (K, C) mean and invstd, and the (B, C) per-sample moments (training; else empty).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch_norm(
    const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps, const std::optional<Tensor>& prescale);

// dx, dcoeff, dweight, dbias, dprescale (empty without a prescale).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch_norm_backward(
    const Tensor& grad_y, const Tensor& mean, const Tensor& invstd, const Tensor& sample_mean,
    const Tensor& sample_var, const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias,
    bool training, double eps, std::array<bool, 4> output_mask, const std::optional<Tensor>& prescale);

// Banks stacked along the output channels, group-major, so that one grouped convolution computes every
// bank: bank k's filter o sits at stacked channel (o / Cg) * K * Cg + k * Cg + o % Cg, Cg = C_out / groups.
C10_HOST_DEVICE inline int64_t stacked_channel(int64_t k, int64_t o, int64_t banks, int64_t group_out) {
  return (o / group_out) * banks * group_out + k * group_out + o % group_out;
}

// The sizes the mixing kernels walk: `a` is (B, K, C_out), `planes` any (B, C, H, W) tensor of the layer.
struct BankDims {
  int64_t batch, banks, out, pixels, group_out;
  static BankDims of(const Tensor& a, const Tensor& planes, int64_t groups) {
    return {a.size(0), a.size(1), a.size(2), planes.size(2) * planes.size(3), a.size(2) / groups};
  }
  C10_HOST_DEVICE int64_t stacked(int64_t k, int64_t o) const { return stacked_channel(k, o, banks, group_out); }
};

// A kernel argument for an optional tensor.
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Per-device kernels: each signature is declared once here, defined in cpu/ and cuda/, and reached through
// kernels_for(tensor), so the host code in this folder is the same for every device.

// Mix-in-epilogue (aw_conv2d.cpp). `banks` is (B, K * C_out, H, W) in the stacked order; it and every
// (B, C, H, W) tensor are dense in one memory format (channels_last or NCHW); `a` is the (B, K, C_out)
// coefficient, and da, dy_sum and bias_b are in the accumulation type.
// y[b,o,p] = sum_k a[b,k,o] * banks[b, stacked(k,o), p] + bias_b[b,o]   (bias_b may be undefined)
using MixBanks = void(const Tensor& banks, const Tensor& a, const Tensor& bias_b, int64_t groups, bool channels_last,
                      Tensor& y);
// One pass over dy: dy_banks[b, stacked(k,o), p] = a[b,k,o] * dy[b,o,p] (if defined),
// da[b,k,o] = sum_p dy[b,o,p] * banks[b, stacked(k,o), p] (if defined), dy_sum[b,o] = sum_p dy[b,o,p].
using BankGrads = void(const Tensor& dy, const Tensor& banks, const Tensor& a, int64_t groups, bool channels_last,
                       Tensor& dy_banks, Tensor& da, Tensor& dy_sum);

// MixBN (mix_batch_norm.cpp). The finalize steps between its passes (mix_batch_norm_finalize.h states
// them): every (B, K), (B, C) and (K, C) tensor dense and in the accumulation type.
// Backward finalize: the parameter gradients, dx's per-(sample, channel) map and (dcoeff (B, K) defined) the
// coefficient gradient, from the per-sample sums of dy and dy * x (the per-sample moments in training, else
// empty).
using BnFinalizeBackward = void(const Tensor& w, const Tensor& dy_sum, const Tensor& dy_x_sum, const Tensor& mean,
                                const Tensor& invstd, const Tensor& gamma, const Tensor& beta,
                                const Tensor& sample_mean, const Tensor& sample_var, bool training, double eps,
                                int64_t pixels, Tensor& dgamma, Tensor& dbeta, Tensor& dcoeff, Tensor& scale_dy,
                                Tensor& scale_x, Tensor& shift);
// Training, the output pass with the finalize in it: from the per-sample moments, the banks' statistics (mean,
// invstd out; the running statistics updated) and y = scale * x + shift in x's suggested memory format.
using BnTrainForward = Tensor(const Tensor& x, const Tensor& w, const Tensor& sample_mean, const Tensor& sample_var,
                              const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                              double momentum, double eps, Tensor& mean, Tensor& invstd);
// Training, the dx pass with the backward finalize in it (no coefficient gradient): dgamma, dbeta (out) and
// dx from the sums of dy and dy * x and the saved statistics.
using BnTrainGradInput = Tensor(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dy_sum,
                                const Tensor& dy_x_sum, const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                                const Tensor& beta, const Tensor& sample_mean, const Tensor& sample_var, double eps,
                                Tensor& dgamma, Tensor& dbeta);
// The passes over the pixels: x and dy (B, C, H, W) in any layout, the (B, C) tensors in the accumulation
// type.
// One pass over x (training): the per-(sample, channel) mean and biased variance.
using BnMoments = std::tuple<Tensor, Tensor>(const Tensor& x);
// One pass over dy and x: (sum_p dy[b,c,p], sum_p dy[b,c,p] * x[b,c,p]).
using BnGradSums = std::tuple<Tensor, Tensor>(const Tensor& dy, const Tensor& x);
// One pass: dx = scale_dy[b,c] * dy + scale_x[b,c] * x + shift[b,c], in x's suggested memory format.
using BnGradInput = Tensor(const Tensor& dy, const Tensor& x, const Tensor& scale_dy, const Tensor& scale_x,
                           const Tensor& shift);

// In eval the per-(sample, channel) map needs no statistic of the batch, so each direction saves a pass: the
// kernel computes the map for its (sample, channel) where it applies it.
// A prescale s (B, C) (undefined: none) makes both of z = s * x: the map absorbs it.
// Forward, one pass: mean and invstd (K, C) from the running statistics, and y = scale * s * x + shift in x's
// suggested memory format (mix_batch_norm_finalize.h's EvalMap gives scale and shift).
using BnEvalForward = Tensor(const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& prescale, double eps,
                             Tensor& mean, Tensor& invstd);
// Backward, one pass over dy and x: dx = scale * s * dy (undefined unless need_x), (sum_p dy, sum_p dy * z)
// for the parameter gradients, when dcoeff (B, K) is defined the coefficient gradient into it (the attack's
// backward: no finalize), and when dprescale (B, C) is defined sum_p dy * scale * x into it. mean and invstd
// are the ones the forward saved.
using BnEvalGrad = std::tuple<Tensor, Tensor, Tensor>(const Tensor& dy, const Tensor& x, const Tensor& w,
                                                      const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                                      const Tensor& invstd, const Tensor& prescale, bool need_x,
                                                      Tensor& dcoeff, Tensor& dprescale);

struct DeviceKernels {
  MixBanks* mix_banks;
  BankGrads* bank_grads;
  BnMoments* bn_moments;
  BnTrainForward* bn_train_forward;
  BnFinalizeBackward* bn_finalize_backward;
  BnGradSums* bn_grad_sums;
  BnGradInput* bn_grad_input;
  BnEvalForward* bn_eval_forward;
  BnEvalGrad* bn_eval_grad;
  BnTrainGradInput* bn_train_grad_input;
};

namespace cpu {
MixBanks mix_banks;
BankGrads bank_grads;
BnMoments bn_moments;
BnTrainForward bn_train_forward;
BnFinalizeBackward bn_finalize_backward;
BnGradSums bn_grad_sums;
BnGradInput bn_grad_input;
BnEvalForward bn_eval_forward;
BnEvalGrad bn_eval_grad;
BnTrainGradInput bn_train_grad_input;
}  // namespace cpu

#ifdef AWNET_WITH_CUDA
namespace cuda {
MixBanks mix_banks;
BankGrads bank_grads;
BnMoments bn_moments;
BnTrainForward bn_train_forward;
BnFinalizeBackward bn_finalize_backward;
BnGradSums bn_grad_sums;
BnGradInput bn_grad_input;
BnEvalForward bn_eval_forward;
BnEvalGrad bn_eval_grad;
BnTrainGradInput bn_train_grad_input;
}  // namespace cuda
#endif

// The kernels for `t`'s device. The CUDA ops are registered only when the CUDA part is built, so a CUDA
// tensor reaches here only then.
inline const DeviceKernels& kernels_for(const Tensor& t) {
  static constexpr DeviceKernels cpu_kernels{
      cpu::mix_banks,     cpu::bank_grads,      cpu::bn_moments,      cpu::bn_train_forward,   cpu::bn_finalize_backward,
      cpu::bn_grad_sums,  cpu::bn_grad_input,   cpu::bn_eval_forward, cpu::bn_eval_grad,       cpu::bn_train_grad_input};
#ifdef AWNET_WITH_CUDA
  static constexpr DeviceKernels cuda_kernels{
      cuda::mix_banks,    cuda::bank_grads,     cuda::bn_moments,     cuda::bn_train_forward,  cuda::bn_finalize_backward,
      cuda::bn_grad_sums, cuda::bn_grad_input,  cuda::bn_eval_forward, cuda::bn_eval_grad,     cuda::bn_train_grad_input};
  if (t.is_cuda()) return cuda_kernels;
#endif
  return cpu_kernels;
}

}  // namespace awnet
