// mix_batch_norm: K batch norms mixed per sample. Every bank's statistics come from per-(sample, channel)
// moments, and the output is one per-(sample, channel) affine map y = A[b,c] * x + B[b,c]
// with A = sum_k coeff[b,k] gamma_k invstd_k and B = sum_k coeff[b,k] (beta_k - gamma_k mu_k invstd_k).
// The backward is the same shape: dx = A dy + C1 x + C0, with C1 and C0 per (sample, channel); its two
// passes over the pixels (the sums of dy and dy * x, then dx) are per-device kernels (cpu/ or cuda/).
#include "awnet.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

namespace awnet {
namespace {

struct Moments {
  Tensor mean, var;  // per (sample, channel), biased, in the accumulation type
};

// Welford moments per (sample, channel); a bank's centred second moment follows by the parallel-axis
// rule, so no pass over x ever subtracts two large sums. var_mean returns x's dtype, so a half x is
// upcast first: moments rounded to half put 1e-4 (fp16) to 2e-3 (bf16) errors in the statistics and in
// dgamma (seen on an H100).
Moments moments(const Tensor& x, at::ScalarType acc) {
  auto [var, mean] = at::var_mean(x.to(acc), {2, 3}, /*correction=*/0, /*keepdim=*/false);
  return {mean, var};
}

// sum_p (x[b,c,p] - mu[k,c])^2 as (B, K, C).
Tensor centred_second_moment(const Moments& m, const Tensor& mu, int64_t pixels) {
  const auto shift = m.mean.unsqueeze(1) - mu.unsqueeze(0);
  return (m.var.unsqueeze(1) + shift * shift) * static_cast<double>(pixels);
}

// Banks that normalise with batch statistics in training: those with nonzero total weight.
Tensor batch_banks(const Tensor& w, int64_t pixels) {
  return w.sum(0).mul(static_cast<double>(pixels));
}

Tensor affine(const Tensor& x, const Tensor& scale, const Tensor& shift) {
  const auto b = x.size(0), c = x.size(1);
  auto y = at::empty_like(x);
  at::addcmul_out(y, shift.view({b, c, 1, 1}), x, scale.view({b, c, 1, 1}));
  return y;
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> mix_batch_norm(
    const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps) {
  const NoAutocast no_autocast;
  TORCH_CHECK(x.dim() == 4 && coeff.dim() == 2 && coeff.size(0) == x.size(0) && weight.dim() == 2 &&
                  weight.size(0) == coeff.size(1) && weight.size(1) == x.size(1),
              "awnet::mix_batch_norm: expected x (B, C, H, W), coeff (B, K) and parameters (K, C)");
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto pixels = x.size(2) * x.size(3);
  const auto w = coeff.to(acc);
  // Copies: the op's outputs must not alias the running statistics it updates.
  Tensor mean = running_mean.to(acc, false, true), var = running_var.to(acc, false, true);
  if (training) {
    const auto m = moments(x, acc);
    const auto count = batch_banks(w, pixels);
    const auto used = count.ne(0).unsqueeze(1);
    const auto safe = at::where(count.ne(0), count, at::ones_like(count)).unsqueeze(1);
    const auto batch_mean = at::mm(w.t(), m.mean).mul(static_cast<double>(pixels)).div(safe);
    const auto batch_var = (w.unsqueeze(2) * centred_second_moment(m, batch_mean, pixels)).sum(0).div(safe);
    const auto unbias = at::where(count.gt(1), count / (count - 1), at::ones_like(count)).unsqueeze(1);
    running_mean.copy_(at::where(used, mean * (1 - momentum) + batch_mean * momentum, mean));
    running_var.copy_(at::where(used, var * (1 - momentum) + batch_var * unbias * momentum, var));
    mean = at::where(used, batch_mean, mean);
    var = at::where(used, batch_var, var);
  }
  const auto invstd = (var + eps).rsqrt();
  const auto scale = weight.to(acc) * invstd;
  const auto shift = bias.to(acc) - mean * scale;
  return {affine(x, at::mm(w, scale), at::mm(w, shift)), mean, invstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> mix_batch_norm_backward(
    const Tensor& grad_y, const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias,
    const Tensor& mean, const Tensor& invstd, bool training, double eps, std::array<bool, 4> output_mask) {
  const NoAutocast no_autocast;
  const auto [need_x, need_coeff, need_weight, need_bias] = output_mask;
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto pixels = x.size(2) * x.size(3);
  const auto w = coeff.to(acc), gamma = weight.to(acc), beta = bias.to(acc);
  const auto& kernels = kernels_for(x);
  const auto [dy_sum, dy_x_sum] = kernels.bn_grad_sums(grad_y, x);              // (B, C) each
  // sum_p dy * xhat_k per (sample, bank, channel)
  const auto dy_xhat = invstd.unsqueeze(0) * (dy_x_sum.unsqueeze(1) - mean.unsqueeze(0) * dy_sum.unsqueeze(1));
  const auto dgamma = (w.unsqueeze(2) * dy_xhat).sum(0);                         // (K, C)
  const auto dbeta = at::mm(w.t(), dy_sum);                                     // (K, C)
  auto dcoeff = (gamma.unsqueeze(0) * dy_xhat + beta.unsqueeze(0) * dy_sum.unsqueeze(1)).sum(2);  // (B, K)
  auto scale_x = at::zeros_like(dy_sum), shift = at::zeros_like(dy_sum);
  if (training) {
    // Banks on batch statistics also pass gradient through their mean and variance.
    const auto count = batch_banks(w, pixels);
    const auto per_count = at::where(count.ne(0), count.reciprocal(), at::zeros_like(count)).unsqueeze(1);
    const auto s1 = gamma * dbeta, s2 = gamma * dgamma;                         // sum dz, sum dz * xhat
    const auto dmean = -invstd * s1, dvar = -0.5 * invstd * invstd * s2;
    scale_x = -at::mm(w, per_count * invstd * invstd * s2);
    shift = -at::mm(w, per_count * invstd * (s1 - mean * invstd * s2));
    if (need_coeff) {
      const auto m = moments(x, acc);
      const auto var = invstd.pow(-2) - eps;
      const auto dmean_dw = (m.mean.unsqueeze(1) - mean.unsqueeze(0)) * static_cast<double>(pixels);
      const auto dvar_dw = centred_second_moment(m, mean, pixels) - var.unsqueeze(0) * static_cast<double>(pixels);
      dcoeff = dcoeff + (per_count.unsqueeze(0) * (dmean.unsqueeze(0) * dmean_dw + dvar.unsqueeze(0) * dvar_dw)).sum(2);
    }
  }
  auto empty = x.new_empty({0});
  const auto dx = need_x ? kernels.bn_grad_input(grad_y, x, at::mm(w, gamma * invstd), scale_x, shift) : empty;
  return {dx, need_coeff ? dcoeff.to(coeff.scalar_type()) : empty,
          need_weight ? dgamma.to(weight.scalar_type()) : empty, need_bias ? dbeta.to(bias.scalar_type()) : empty};
}

TORCH_LIBRARY_IMPL(awnet, CPU, m) {
  m.impl("mix_batch_norm", &mix_batch_norm);
  m.impl("mix_batch_norm_backward", &mix_batch_norm_backward);
}

#ifdef AWNET_WITH_CUDA
TORCH_LIBRARY_IMPL(awnet, CUDA, m) {
  m.impl("mix_batch_norm", &mix_batch_norm);
  m.impl("mix_batch_norm_backward", &mix_batch_norm_backward);
}
#endif

}  // namespace awnet
