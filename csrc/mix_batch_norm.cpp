// mix_batch_norm: K batch norms mixed per sample, in two passes per direction. Every bank's statistics
// come from per-(sample, channel) moments, and the output is one per-(sample, channel) affine map
// y = A[b,c] * x + B[b,c] with A = sum_k coeff[b,k] gamma_k invstd_k and
// B = sum_k coeff[b,k] (beta_k - gamma_k mu_k invstd_k). Forward: the moments (one pass over x), then the
// affine pass, which computes the (K, C) bank statistics and its map itself (the finalize). Backward: the
// sums of dy and dy * x (one pass), then the dx pass with its finalize (parameter gradients, dx's map
// dx = A dy + C1 x + C0); the coefficient gradient, a sum over the channels, takes a finalize kernel of its
// own between them. The forward returns the per-sample moments so the backward never reads x for them again. In eval
// (the attack's steps) the map needs no batch statistic: one pass forward, and backward one pass for dx and
// dcoeff (the finalize only for the parameter gradients). A prescale s (B, C) (an AW convolution's omega,
// folded in) normalises z = s * x: in eval the map absorbs it (y = A s x + B, dx = A s dy, ds = A sum(dy x));
// in training z is made by a product first and the backward's dz turned into dx and ds after.
#include "awnet.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

namespace awnet {
namespace {

// Every tensor the kernels index, checked before they do: a bad call of torch.ops.awnet.* raises instead of
// reading out of bounds.
void check_args(const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias, const Tensor& stat_a,
                const Tensor& stat_b, double eps) {
  TORCH_CHECK_VALUE(x.dim() == 4, "awnet::mix_batch_norm: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK_VALUE(coeff.dim() == 2 && coeff.size(0) == x.size(0),
                    "awnet::mix_batch_norm: coeff must be (B, K) with B = ", x.size(0), ", got ", coeff.sizes());
  const std::array<int64_t, 2> bank_shape{coeff.size(1), x.size(1)};
  for (const auto* t : {&weight, &bias, &stat_a, &stat_b})
    TORCH_CHECK_VALUE(t->sizes() == at::IntArrayRef(bank_shape), "awnet::mix_batch_norm: parameters and statistics "
                      "must be (K, C) = ", at::IntArrayRef(bank_shape), ", got ", t->sizes());
  for (const auto* t : {&coeff, &weight, &bias, &stat_a, &stat_b}) {
    TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), "awnet::mix_batch_norm: expected floating tensors, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x.device(), "awnet::mix_batch_norm: every tensor must be on ", x.device());
  }
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "awnet::mix_batch_norm: x must be floating, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(eps > 0, "awnet::mix_batch_norm: eps must be positive, got ", eps);
}

Tensor dense_acc(const Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous();  // no copy when t already is
}

void check_prescale(const std::optional<Tensor>& prescale, const Tensor& x) {
  if (!prescale) return;
  TORCH_CHECK_VALUE(prescale->dim() == 2 && prescale->size(0) == x.size(0) && prescale->size(1) == x.size(1) &&
                        prescale->device() == x.device(),
                    "awnet::mix_batch_norm: prescale must be (B, C) = (", x.size(0), ", ", x.size(1), ") on ",
                    x.device(), ", got ", prescale->sizes());
  TORCH_CHECK_TYPE(prescale->scalar_type() == x.scalar_type(), "awnet::mix_batch_norm: prescale must have x's dtype ",
                   x.scalar_type(), ", got ", prescale->scalar_type());
}

// z = s * x per (sample, channel), in the accumulation type (half z would round what the statistics see):
// training's prescale.
Tensor prescaled(const Tensor& x, const Tensor& prescale) {
  const auto acc = at::toOpMathType(x.scalar_type());
  return x.to(acc) * prescale.to(acc).view({x.size(0), x.size(1), 1, 1});
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch_norm(
    const Tensor& x_in, const Tensor& coeff, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
    Tensor& running_var, bool training, double momentum, double eps, const std::optional<Tensor>& prescale) {
  const NoAutocast no_autocast;
  check_args(x_in, coeff, weight, bias, running_mean, running_var, eps);
  check_prescale(prescale, x_in);
  TORCH_CHECK_VALUE(momentum >= 0 && momentum <= 1, "awnet::mix_batch_norm: momentum must be in [0, 1], got ",
                    momentum);
  const auto acc = at::toOpMathType(x_in.scalar_type());
  const auto w = dense_acc(coeff, acc), gamma = dense_acc(weight, acc), beta = dense_acc(bias, acc);
  if (!training) {
    // Eval: one pass, the map computed where it is applied.
    auto mean = at::empty(weight.sizes(), w.options()), invstd = at::empty(weight.sizes(), w.options());
    const auto s = prescale ? dense_acc(*prescale, acc) : Tensor();
    auto y = kernels_for(x_in).bn_eval_forward(x_in, w, gamma, beta, dense_acc(running_mean, acc),
                                               dense_acc(running_var, acc), s, eps, mean, invstd);
    return {y, mean, invstd, w.new_empty({0}), w.new_empty({0})};
  }
  const Tensor x = prescale ? prescaled(x_in, *prescale) : x_in;
  // Pass 1: the per-(sample, channel) moments, accumulated (and returned) in float.
  const auto [sample_mean, sample_var] = kernels_for(x).bn_moments(x);
  // Pass 2, the finalize in it: the bank and running statistics (in place when the running statistics are
  // dense and in the accumulation type), and y = scale * x + shift.
  auto run_mean = dense_acc(running_mean, acc), run_var = dense_acc(running_var, acc);
  auto mean = at::empty(weight.sizes(), w.options()), invstd = at::empty(weight.sizes(), w.options());
  auto y = kernels_for(x).bn_train_forward(x, w, sample_mean, sample_var, gamma, beta, run_mean, run_var, momentum,
                                           eps, mean, invstd);
  if (!run_mean.is_same(running_mean)) running_mean.copy_(run_mean);
  if (!run_var.is_same(running_var)) running_var.copy_(run_var);
  return {y.to(x_in.scalar_type()), mean, invstd, sample_mean, sample_var};
}

namespace {

using Grads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

// The backward of arguments `mix_batch_norm_backward` has checked: in training of a call without a prescale
// (the caller passes z), in eval with the prescale in the accumulation type (or undefined), whose gradient
// comes back in that type.
Grads backward(const Tensor& grad_y, const Tensor& mean, const Tensor& invstd, const Tensor& sample_mean,
               const Tensor& sample_var, const Tensor& x, const Tensor& coeff, const Tensor& weight, const Tensor& bias,
               bool training, double eps, std::array<bool, 4> output_mask, const Tensor& prescale) {
  const auto acc = at::toOpMathType(x.scalar_type());
  const auto [need_x, need_coeff, need_weight, need_bias] = output_mask;
  const auto w = dense_acc(coeff, acc), gamma = dense_acc(weight, acc), beta = dense_acc(bias, acc);
  const auto& kernels = kernels_for(x);
  auto empty = x.new_empty({0});
  if (!training) {
    // Eval: dx = scale * dy needs no sum, so it comes from the pass that takes them, and so do dcoeff when no
    // parameter gradient is asked (an attack) and dprescale: one pass. The finalize runs for the parameter
    // gradients, and for dcoeff on CUDA in deterministic mode (the pass adds into it with atomics there).
    const bool params = need_weight || need_bias;
    const bool fused_coeff = need_coeff && !params && (x.is_cpu() || !at::globalContext().deterministicAlgorithms());
    auto dcoeff = need_coeff ? at::empty(coeff.sizes(), w.options()) : Tensor();
    auto pass_dcoeff = fused_coeff ? dcoeff : Tensor();
    auto dprescale = prescale.defined() ? at::empty(prescale.sizes(), w.options()) : Tensor();
    const auto saved_mean = dense_acc(mean, acc), saved_invstd = dense_acc(invstd, acc);
    auto [dx, dy_sum, dy_x_sum] = kernels.bn_eval_grad(grad_y, x, w, gamma, beta, saved_mean, saved_invstd, prescale,
                                                       need_x, pass_dcoeff, dprescale);
    const auto ds = prescale.defined() ? dprescale : empty;
    if (params || (need_coeff && !fused_coeff)) {
      auto dgamma = at::empty(weight.sizes(), w.options()), dbeta = at::empty_like(dgamma);
      auto unused = at::empty_like(dy_sum), unused_x = at::empty_like(dy_sum), unused_shift = at::empty_like(dy_sum);
      kernels.bn_finalize_backward(w, dy_sum, dy_x_sum, saved_mean, saved_invstd, gamma, beta, Tensor(), Tensor(),
                                   false, eps, x.size(2) * x.size(3), dgamma, dbeta, dcoeff, unused, unused_x,
                                   unused_shift);
      return {need_x ? dx : empty, need_coeff ? dcoeff.to(coeff.scalar_type()) : empty,
              need_weight ? dgamma.to(weight.scalar_type()) : empty, need_bias ? dbeta.to(bias.scalar_type()) : empty,
              ds};
    }
    return {need_x ? dx : empty, need_coeff ? dcoeff.to(coeff.scalar_type()) : empty, empty, empty, ds};
  }
  // Pass 1: sum_p dy and sum_p dy * x per (sample, channel).
  const auto [dy_sum, dy_x_sum] = kernels.bn_grad_sums(grad_y, x);
  auto dgamma = at::empty(weight.sizes(), w.options()), dbeta = at::empty_like(dgamma);
  const auto saved_mean = dense_acc(mean, acc), saved_invstd = dense_acc(invstd, acc);
  const auto moments_mean = sample_mean.contiguous(), moments_var = sample_var.contiguous();
  const auto out = [&](const Tensor& dx, const Tensor& dcoeff) -> Grads {
    return {need_x ? dx : empty, need_coeff ? dcoeff.to(coeff.scalar_type()) : empty,
            need_weight ? dgamma.to(weight.scalar_type()) : empty, need_bias ? dbeta.to(bias.scalar_type()) : empty,
            empty};
  };
  if (need_x && !need_coeff)  // Pass 2, the finalize in it: dx (and the parameter gradients).
    return out(kernels.bn_train_grad_input(grad_y, x, w, dy_sum, dy_x_sum, saved_mean, saved_invstd, gamma, beta,
                                           moments_mean, moments_var, eps, dgamma, dbeta),
               Tensor());
  // The coefficient gradient sums over the channels: a finalize of its own (pass 2), then dx (pass 3).
  auto dcoeff = need_coeff ? at::empty(coeff.sizes(), w.options()) : Tensor();
  auto scale_dy = at::empty_like(dy_sum), scale_x = at::empty_like(dy_sum), shift = at::empty_like(dy_sum);
  kernels.bn_finalize_backward(w, dy_sum, dy_x_sum, saved_mean, saved_invstd, gamma, beta, moments_mean, moments_var,
                               true, eps, x.size(2) * x.size(3), dgamma, dbeta, dcoeff, scale_dy, scale_x, shift);
  return out(need_x ? kernels.bn_grad_input(grad_y, x, scale_dy, scale_x, shift) : empty, dcoeff);
}

}  // namespace

Grads mix_batch_norm_backward(const Tensor& grad_y, const Tensor& mean, const Tensor& invstd,
                              const Tensor& sample_mean, const Tensor& sample_var, const Tensor& x, const Tensor& coeff,
                              const Tensor& weight, const Tensor& bias, bool training, double eps,
                              std::array<bool, 4> output_mask, const std::optional<Tensor>& prescale) {
  const NoAutocast no_autocast;
  check_args(x, coeff, weight, bias, mean, invstd, eps);
  check_prescale(prescale, x);
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type() &&
                        grad_y.device() == x.device(),
                    "awnet::mix_batch_norm_backward: grad_y must be like x ", x.sizes(), ", got ", grad_y.sizes());
  const auto acc = at::toOpMathType(x.scalar_type());
  const std::array<int64_t, 2> sample_shape{x.size(0), x.size(1)};
  if (training)
    for (const auto* t : {&sample_mean, &sample_var})
      TORCH_CHECK_VALUE(t->sizes() == at::IntArrayRef(sample_shape) && t->scalar_type() == acc,
                        "awnet::mix_batch_norm_backward: the per-sample moments must be (B, C) = ",
                        at::IntArrayRef(sample_shape), " in ", acc);
  TORCH_CHECK_VALUE(mean.scalar_type() == acc && invstd.scalar_type() == acc,
                    "awnet::mix_batch_norm_backward: mean and invstd must be in ", acc);
  if (!prescale) return backward(grad_y, mean, invstd, sample_mean, sample_var, x, coeff, weight, bias, training, eps,
                                 output_mask, Tensor());
  if (!training) {
    auto grads = backward(grad_y, mean, invstd, sample_mean, sample_var, x, coeff, weight, bias, false, eps,
                          output_mask, dense_acc(*prescale, acc));
    std::get<4>(grads) = std::get<4>(grads).to(prescale->scalar_type());
    return grads;
  }
  // Training: the backward of z = s * x, then dx = s * dz and ds = sum_p dz * x.
  auto mask = output_mask;
  mask[0] = true;
  auto [dz, dcoeff, dweight, dbias, unused] = backward(grad_y.to(acc), mean, invstd, sample_mean, sample_var,
                                                       prescaled(x, *prescale), coeff, weight, bias, true, eps, mask,
                                                       Tensor());
  auto dprescale = at::sum(dz * x, {2, 3}).to(prescale->scalar_type());
  return {output_mask[0] ? prescaled(dz, *prescale).to(x.scalar_type()) : x.new_empty({0}), dcoeff, dweight, dbias,
          dprescale};
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
