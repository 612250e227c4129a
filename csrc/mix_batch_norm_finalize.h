// MixBN's small finalize steps, one channel at a time, written once for the CPU (a parallel loop over the
// channels) and CUDA (a thread per channel): everything between the passes over the (B, C, H, W) tensors.
// Every pointer is a dense row-major array in the accumulation type: (B, K) coefficients w, (B, C)
// per-sample tensors, (K, C) per-bank tensors.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace awnet {

template <typename acc_t>
C10_HOST_DEVICE inline acc_t inverse_sqrt(acc_t v) {
#ifdef __CUDA_ARCH__
  return acc_t(1) / ::sqrt(v);
#else
  return acc_t(1) / std::sqrt(v);
#endif
}

// Channel c's share of dcoeff[b, k] through bank k's affine map, from the sums over the pixels of dy and
// dy * x: gamma_k sum_p dy xhat_k + beta_k sum_p dy, with sum_p dy xhat_k = invstd_k (sum_p dy x - mu_k sum_p dy).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t coeff_grad_share(acc_t invstd, acc_t gamma, acc_t beta, acc_t mean, acc_t dy_sum,
                                              acc_t dy_x_sum) {
  return invstd * gamma * (dy_x_sum - mean * dy_sum) + beta * dy_sum;
}

// Forward, in training: bank k's statistics are the w[:, k]-weighted moments of the samples (parallel-axis
// rule, as sums over the samples: no pass over x subtracts two large sums); a bank with zero weight uses its
// running statistics. Then the per-(sample, channel) affine map y = scale * x + shift that the output pass
// applies. The sums over the samples are made by one thread per channel (`operator()`, CPU), or inside the
// output pass by the threads of a block, each block for its own sample (CUDA): the terms are written once here.
template <typename acc_t>
struct FinalizeForward {
  const acc_t *w, *sample_mean, *sample_var, *gamma, *beta;  // (B, K), (B, C) x 2, (K, C) x 2
  acc_t *running_mean, *running_var;                          // (K, C), updated
  acc_t *mean, *invstd, *scale, *shift;                       // out: (K, C), (K, C), (B, C), (B, C)
  int64_t batch, banks, channels;
  acc_t pixels, momentum, eps;

  // Summed over the samples b: bank k's weight, then sum_b w m_b, then (given its mean m) sum_b w (v_b + (m_b - m)^2).
  C10_HOST_DEVICE acc_t weight_term(int64_t b, int64_t k) const { return w[b * banks + k]; }
  C10_HOST_DEVICE acc_t mean_term(int64_t b, int64_t k, int64_t c) const {
    return w[b * banks + k] * sample_mean[b * channels + c];
  }
  C10_HOST_DEVICE acc_t var_term(int64_t b, int64_t k, int64_t c, acc_t m) const {
    const acc_t shift_b = sample_mean[b * channels + c] - m;
    return w[b * banks + k] * (sample_var[b * channels + c] + shift_b * shift_b);
  }
  C10_HOST_DEVICE bool batch_stats(acc_t weight) const { return weight * pixels != acc_t(0); }
  C10_HOST_DEVICE acc_t bank_mean(int64_t kc, acc_t weight, acc_t mean_sum) const {
    return batch_stats(weight) ? mean_sum / weight : running_mean[kc];
  }
  C10_HOST_DEVICE acc_t bank_var(int64_t kc, acc_t weight, acc_t var_sum) const {
    return batch_stats(weight) ? var_sum / weight : running_var[kc];
  }
  // Bank k's mean and invstd at c written, and its running statistics updated: once per (bank, channel).
  C10_HOST_DEVICE void store(int64_t kc, acc_t weight, acc_t m, acc_t v) const {
    if (batch_stats(weight)) {
      const acc_t count = weight * pixels;
      const acc_t unbias = count > acc_t(1) ? count / (count - acc_t(1)) : acc_t(1);
      running_mean[kc] = (acc_t(1) - momentum) * running_mean[kc] + momentum * m;
      running_var[kc] = (acc_t(1) - momentum) * running_var[kc] + momentum * v * unbias;
    }
    mean[kc] = m;
    invstd[kc] = inverse_sqrt(v + eps);
  }
  // Bank k's share of sample b's map at c.
  C10_HOST_DEVICE void add_bank(int64_t b, int64_t kc, int64_t k, acc_t m, acc_t bank_invstd, acc_t& a,
                                acc_t& s) const {
    const acc_t bank_scale = gamma[kc] * bank_invstd;
    a += w[b * banks + k] * bank_scale;
    s += w[b * banks + k] * (beta[kc] - m * bank_scale);
  }

  C10_HOST_DEVICE void operator()(int64_t c) const {
    for (int64_t k = 0; k < banks; ++k) {
      acc_t weight = 0, mean_sum = 0, var_sum = 0;
      for (int64_t b = 0; b < batch; ++b) weight += weight_term(b, k);
      for (int64_t b = 0; b < batch; ++b) mean_sum += mean_term(b, k, c);
      const acc_t m = bank_mean(k * channels + c, weight, mean_sum);
      for (int64_t b = 0; b < batch; ++b) var_sum += var_term(b, k, c, m);
      store(k * channels + c, weight, m, bank_var(k * channels + c, weight, var_sum));
    }
    for (int64_t b = 0; b < batch; ++b) {
      acc_t a = 0, s = 0;
      for (int64_t k = 0; k < banks; ++k) add_bank(b, k * channels + c, k, mean[k * channels + c], invstd[k * channels + c], a, s);
      scale[b * channels + c] = a;
      shift[b * channels + c] = s;
    }
  }
};

// Eval: every bank normalises with its running statistics, so the map of (sample b, channel c) needs only the
// K banks' values at c, and a pass computes it where it applies it. The forward reads the running variance
// (and writes bank k's mean and invstd for the backward with `stats`), the backward the invstd it saved, and
// with the sums of its pass, each channel's share of dcoeff: an attack's MixBN backward is that one pass.
template <typename acc_t>
struct EvalMap {
  const acc_t *w, *gamma, *beta, *mean;  // (B, K), (K, C) x 3
  const acc_t *running_var, *saved_invstd;  // (K, C): one of them
  const acc_t* prescale;  // (B, C) or null: the map is of z = prescale * x
  int64_t banks, channels;
  acc_t eps;

  C10_HOST_DEVICE acc_t prescale_at(int64_t b, int64_t c) const {
    return prescale ? prescale[b * channels + c] : acc_t(1);
  }
  C10_HOST_DEVICE acc_t invstd(int64_t kc) const {
    return saved_invstd ? saved_invstd[kc] : inverse_sqrt(running_var[kc] + eps);
  }
  C10_HOST_DEVICE void stats(int64_t c, acc_t* mean_out, acc_t* invstd_out) const {
    for (int64_t k = 0; k < banks; ++k) {
      mean_out[k * channels + c] = mean[k * channels + c];
      invstd_out[k * channels + c] = invstd(k * channels + c);
    }
  }
  // y = scale * z + shift; the backward's dz = scale * dy.
  C10_HOST_DEVICE void operator()(int64_t b, int64_t c, acc_t& scale, acc_t& shift) const {
    scale = shift = 0;
    for (int64_t k = 0; k < banks; ++k) {
      const int64_t kc = k * channels + c;
      const acc_t bank_scale = gamma[kc] * invstd(kc);
      scale += w[b * banks + k] * bank_scale;
      shift += w[b * banks + k] * (beta[kc] - mean[kc] * bank_scale);
    }
  }
  C10_HOST_DEVICE acc_t coeff_grad(int64_t k, int64_t c, acc_t dy_sum, acc_t dy_x_sum) const {
    const int64_t kc = k * channels + c;
    return coeff_grad_share(invstd(kc), gamma[kc], beta[kc], mean[kc], dy_sum, dy_x_sum);
  }
};

// Backward, from the per-(sample, channel) sums of dy and dy * x: the parameter gradients, the coefficient
// gradient's share of channel c (dcoeff_c (B, K, C), summed over C by the caller), and dx's per-(sample,
// channel) map dx = scale_dy * dy + scale_x * x + shift. With xhat_k = (x - mu_k) invstd_k:
// sum_p dy xhat_k = invstd_k (sum_p dy x - mu_k sum_p dy); banks on batch statistics also pass gradient
// through their mean and variance (to x, and to w through the weighted moments). As in the forward, the sums
// over the samples are made by one thread per channel (`operator()`) or by a block inside the dx pass (CUDA,
// in training without dcoeff).
template <typename acc_t>
struct FinalizeBackward {
  const acc_t *w, *dy_sum, *dy_x_sum, *mean, *invstd, *gamma, *beta, *sample_mean, *sample_var;
  acc_t *dgamma, *dbeta, *dcoeff_c, *scale_dy, *scale_x, *shift;  // dcoeff_c may be null
  int64_t batch, banks, channels;
  acc_t pixels, eps;
  bool training;

  // Summed over the samples b: bank k's dgamma (g), dbeta (bsum) and weight.
  C10_HOST_DEVICE void add_sums(int64_t b, int64_t k, int64_t c, acc_t& g, acc_t& bsum, acc_t& weight) const {
    const int64_t kc = k * channels + c, bc = b * channels + c;
    const acc_t wk = w[b * banks + k];
    g += wk * invstd[kc] * (dy_x_sum[bc] - mean[kc] * dy_sum[bc]);
    bsum += wk * dy_sum[bc];
    weight += wk;
  }
  // Bank k's share of sample b's dx map at c, from its sums; and its share of dcoeff[b, k] (d non-null).
  C10_HOST_DEVICE void add_bank(int64_t b, int64_t k, int64_t c, acc_t g, acc_t bsum, acc_t weight, acc_t& a,
                                acc_t& cx, acc_t& c0, acc_t* d) const {
    const int64_t kc = k * channels + c, bc = b * channels + c;
    const acc_t wk = w[b * banks + k];
    const bool batch_stats = training && weight != acc_t(0);
    const acc_t per_count = batch_stats ? acc_t(1) / (weight * pixels) : acc_t(0);
    a += wk * gamma[kc] * invstd[kc];
    cx -= wk * per_count * invstd[kc] * invstd[kc] * gamma[kc] * g;
    c0 -= wk * per_count * invstd[kc] * gamma[kc] * (bsum - mean[kc] * invstd[kc] * g);
    if (d) {
      *d = coeff_grad_share(invstd[kc], gamma[kc], beta[kc], mean[kc], dy_sum[bc], dy_x_sum[bc]);
      if (batch_stats) {
        const acc_t var = acc_t(1) / (invstd[kc] * invstd[kc]) - eps;
        const acc_t dmean = -invstd[kc] * gamma[kc] * bsum;
        const acc_t dvar = acc_t(-0.5) * invstd[kc] * invstd[kc] * gamma[kc] * g;
        const acc_t shift_b = sample_mean[bc] - mean[kc];
        *d += per_count * pixels * (dmean * shift_b + dvar * (sample_var[bc] + shift_b * shift_b - var));
      }
    }
  }

  C10_HOST_DEVICE void operator()(int64_t c) const {
    for (int64_t b = 0; b < batch; ++b) scale_dy[b * channels + c] = scale_x[b * channels + c] = shift[b * channels + c] = 0;
    for (int64_t k = 0; k < banks; ++k) {
      acc_t g = 0, bsum = 0, weight = 0;
      for (int64_t b = 0; b < batch; ++b) add_sums(b, k, c, g, bsum, weight);
      dgamma[k * channels + c] = g;
      dbeta[k * channels + c] = bsum;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t bc = b * channels + c;
        add_bank(b, k, c, g, bsum, weight, scale_dy[bc], scale_x[bc], shift[bc],
                 dcoeff_c ? dcoeff_c + (b * banks + k) * channels + c : nullptr);
      }
    }
  }
};

}  // namespace awnet
