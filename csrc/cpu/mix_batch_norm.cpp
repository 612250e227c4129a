// CPU passes of MixBN (awnet.h states them): the per-sample moments, the finalize steps of
// mix_batch_norm_finalize.h over the channels in parallel, and the backward's two passes over the pixels,
// each reading dy and x once. Every
// (B, C, H, W) tensor is walked in memory order: NCHW by (sample, channel) planes, channels_last by
// (sample, pixel) rows. Each pass is one profiler event, so kernel counts see it as one kernel.
#include "../awnet.h"
#include "../mix_batch_norm_finalize.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "loops.h"

#include <algorithm>
#include <vector>

namespace awnet::cpu {
namespace {

bool channels_last(const Tensor& x) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// The per-(sample, channel) mean and biased variance, two passes over each sample's data while it is in
// cache (the centred second pass keeps the variance accurate where the mean is large).
template <typename scalar_t, typename acc_t>
void moments(const scalar_t* x, acc_t* mean, acc_t* var, int64_t batch, int64_t channels, int64_t pixels,
             bool rows) {
  const acc_t inv = pixels ? acc_t(1) / static_cast<acc_t>(pixels) : acc_t(0);
  if (!rows) {
    at::parallel_for(0, batch * channels, grain(pixels), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        const scalar_t* v = x + bc * pixels;
        const acc_t m = inv * sum_of<acc_t>(pixels, [&](int64_t p) { return static_cast<acc_t>(v[p]); });
        mean[bc] = m;
        var[bc] = inv * sum_of<acc_t>(pixels, [&](int64_t p) {
          const acc_t c = static_cast<acc_t>(v[p]) - m;
          return c * c;
        });
      }
    });
    return;
  }
  at::parallel_for(0, batch, grain(pixels * channels), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* m = mean + b * channels;
      acc_t* s = var + b * channels;
      std::fill(m, m + channels, acc_t(0));
      std::fill(s, s + channels, acc_t(0));
      const scalar_t* sample = x + b * pixels * channels;
      for (int64_t p = 0; p < pixels; ++p)
        for (int64_t c = 0; c < channels; ++c) m[c] += static_cast<acc_t>(sample[p * channels + c]);
      for (int64_t c = 0; c < channels; ++c) m[c] *= inv;
      for (int64_t p = 0; p < pixels; ++p)
        for (int64_t c = 0; c < channels; ++c) {
          const acc_t d = static_cast<acc_t>(sample[p * channels + c]) - m[c];
          s[c] += d * d;
        }
      for (int64_t c = 0; c < channels; ++c) s[c] *= inv;
    }
  });
}

template <typename scalar_t, typename acc_t>
void grad_sums(const scalar_t* dy, const scalar_t* x, acc_t* dy_sum, acc_t* dy_x_sum, int64_t batch,
               int64_t channels, int64_t pixels, bool rows) {
  if (!rows) {
    at::parallel_for(0, batch * channels, grain(pixels), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        const scalar_t* g = dy + bc * pixels;
        const scalar_t* v = x + bc * pixels;
        dy_sum[bc] = sum_of<acc_t>(pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]); });
        dy_x_sum[bc] = sum_of<acc_t>(pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]) * static_cast<acc_t>(v[p]); });
      }
    });
    return;
  }
  at::parallel_for(0, batch, grain(pixels * channels), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* sum = dy_sum + b * channels;
      acc_t* dot = dy_x_sum + b * channels;
      std::fill(sum, sum + channels, acc_t(0));
      std::fill(dot, dot + channels, acc_t(0));
      for (int64_t p = 0; p < pixels; ++p) {
        const scalar_t* g = dy + (b * pixels + p) * channels;
        const scalar_t* v = x + (b * pixels + p) * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const acc_t gc = static_cast<acc_t>(g[c]);
          sum[c] += gc;
          dot[c] += gc * static_cast<acc_t>(v[c]);
        }
      }
    }
  });
}

// out = a[b,c] * u + cx[b,c] * v + c0[b,c], the map of every pass that writes a (B, C, H, W) tensor: dx
// (u = dy, v = x) and, without the v term (v null), the eval forward's y (u = x).
template <typename scalar_t, typename acc_t>
void per_channel_map(const scalar_t* u, const scalar_t* v, const acc_t* a, const acc_t* cx, const acc_t* c0,
                     scalar_t* out, int64_t batch, int64_t channels, int64_t pixels, bool rows) {
  const auto term = [&](int64_t bc, int64_t i) {
    const acc_t linear = a[bc] * static_cast<acc_t>(u[i]) + c0[bc];
    return static_cast<scalar_t>(v ? linear + cx[bc] * static_cast<acc_t>(v[i]) : linear);
  };
  if (!rows) {
    at::parallel_for(0, batch * channels, grain(pixels), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc)
        for (int64_t p = 0, base = bc * pixels; p < pixels; ++p) out[base + p] = term(bc, base + p);
    });
    return;
  }
  at::parallel_for(0, batch * pixels, grain(channels), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      for (int64_t c = 0, bc = row / pixels * channels, base = row * channels; c < channels; ++c)
        out[base + c] = term(bc + c, base + c);
  });
}

// The eval backward's pass: the sums of dy and dy * x and (dx non-null) dx = scale * dy, each (sample, channel)
// plane or sample written while its dy is in cache.
template <typename scalar_t, typename acc_t>
void eval_grad_pass(const scalar_t* dy, const scalar_t* x, const acc_t* scale, scalar_t* dx, acc_t* dy_sum,
                    acc_t* dy_x_sum, int64_t batch, int64_t channels, int64_t pixels, bool rows) {
  if (!rows) {
    at::parallel_for(0, batch * channels, grain(pixels), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        const scalar_t* g = dy + bc * pixels;
        const scalar_t* v = x + bc * pixels;
        dy_sum[bc] = sum_of<acc_t>(pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]); });
        dy_x_sum[bc] = sum_of<acc_t>(pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]) * static_cast<acc_t>(v[p]); });
        if (dx)
          for (int64_t p = 0; p < pixels; ++p) dx[bc * pixels + p] = static_cast<scalar_t>(scale[bc] * static_cast<acc_t>(g[p]));
      }
    });
    return;
  }
  at::parallel_for(0, batch, grain(pixels * channels), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* sum = dy_sum + b * channels;
      acc_t* dot = dy_x_sum + b * channels;
      const acc_t* a = scale + b * channels;
      std::fill(sum, sum + channels, acc_t(0));
      std::fill(dot, dot + channels, acc_t(0));
      for (int64_t p = 0; p < pixels; ++p) {
        const int64_t base = (b * pixels + p) * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const acc_t gc = static_cast<acc_t>(dy[base + c]);
          sum[c] += gc;
          dot[c] += gc * static_cast<acc_t>(x[base + c]);
          if (dx) dx[base + c] = static_cast<scalar_t>(a[c] * gc);
        }
      }
    }
  });
}

// The eval map of every (sample, channel): (B, C) is small next to the pass that applies it. `prescaled`:
// the scale of x (times the prescale), else of z.
template <typename acc_t>
void eval_maps(const EvalMap<acc_t>& map, int64_t batch, bool prescaled, std::vector<acc_t>& scale,
               std::vector<acc_t>& shift) {
  scale.resize(batch * map.channels);
  shift.resize(batch * map.channels);
  at::parallel_for(0, batch * map.channels, grain(4 * map.banks), [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / map.channels, c = bc % map.channels;
      map(b, c, scale[bc], shift[bc]);
      if (prescaled) scale[bc] *= map.prescale_at(b, c);
    }
  });
}

template <typename acc_t>
const acc_t* ptr_or_null(const Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<acc_t>() : nullptr;
}

}  // namespace

Tensor bn_train_forward(const Tensor& x, const Tensor& w, const Tensor& sample_mean, const Tensor& sample_var,
                        const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                        double momentum, double eps, Tensor& mean, Tensor& invstd) {
  RECORD_FUNCTION("awnet::cpu::bn_train_forward", std::vector<c10::IValue>());
  const auto dense_x = x.contiguous(x.suggest_memory_format());
  auto y = at::empty_like(dense_x);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_train_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> scale(batch * channels), shift(batch * channels);
    const FinalizeForward<acc_t> step{
        w.data_ptr<acc_t>(), sample_mean.data_ptr<acc_t>(), sample_var.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(),
        beta.data_ptr<acc_t>(), running_mean.data_ptr<acc_t>(), running_var.data_ptr<acc_t>(),
        mean.data_ptr<acc_t>(), invstd.data_ptr<acc_t>(), scale.data(), shift.data(), batch, w.size(1), channels,
        static_cast<acc_t>(pixels), static_cast<acc_t>(momentum), static_cast<acc_t>(eps)};
    // The finalize over the channels, then the output pass.
    at::parallel_for(0, channels, grain(batch * w.size(1)), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) step(c);
    });
    per_channel_map(dense_x.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr), scale.data(),
                    static_cast<const acc_t*>(nullptr), shift.data(), y.data_ptr<scalar_t>(), batch, channels, pixels,
                    channels_last(x));
  });
  return y;
}

Tensor bn_train_grad_input(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dy_sum,
                           const Tensor& dy_x_sum, const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                           const Tensor& beta, const Tensor& sample_mean, const Tensor& sample_var, double eps,
                           Tensor& dgamma, Tensor& dbeta) {
  RECORD_FUNCTION("awnet::cpu::bn_train_grad_input", std::vector<c10::IValue>());
  const auto format = x.suggest_memory_format();
  const auto dense_dy = dy.contiguous(format), dense_x = x.contiguous(format);
  auto dx = at::empty_like(dense_x);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_train_grad_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> scale_dy(batch * channels), scale_x(batch * channels), shift(batch * channels);
    const FinalizeBackward<acc_t> step{
        w.data_ptr<acc_t>(), dy_sum.data_ptr<acc_t>(), dy_x_sum.data_ptr<acc_t>(), mean.data_ptr<acc_t>(),
        invstd.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(), sample_mean.data_ptr<acc_t>(),
        sample_var.data_ptr<acc_t>(), dgamma.data_ptr<acc_t>(), dbeta.data_ptr<acc_t>(), nullptr, scale_dy.data(),
        scale_x.data(), shift.data(), batch, w.size(1), channels, static_cast<acc_t>(pixels),
        static_cast<acc_t>(eps), true};
    // The backward finalize over the channels, then the dx pass.
    at::parallel_for(0, channels, grain(batch * w.size(1)), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) step(c);
    });
    per_channel_map(dense_dy.data_ptr<scalar_t>(), dense_x.data_ptr<scalar_t>(), scale_dy.data(), scale_x.data(),
                    shift.data(), dx.data_ptr<scalar_t>(), batch, channels, pixels, channels_last(x));
  });
  return dx;
}

void bn_finalize_backward(const Tensor& w, const Tensor& dy_sum, const Tensor& dy_x_sum, const Tensor& mean,
                          const Tensor& invstd, const Tensor& gamma, const Tensor& beta, const Tensor& sample_mean,
                          const Tensor& sample_var, bool training, double eps, int64_t pixels, Tensor& dgamma,
                          Tensor& dbeta, Tensor& dcoeff, Tensor& scale_dy, Tensor& scale_x, Tensor& shift) {
  RECORD_FUNCTION("awnet::cpu::bn_finalize_backward", std::vector<c10::IValue>());
  const auto batch = w.size(0), banks = w.size(1), channels = gamma.size(1);
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "awnet_bn_finalize_backward_cpu", [&] {
    // dcoeff's share of each channel, summed over the channels below (in a fixed order: deterministic).
    std::vector<scalar_t> per_channel(dcoeff.defined() ? batch * banks * channels : 0);
    const FinalizeBackward<scalar_t> step{
        w.data_ptr<scalar_t>(), dy_sum.data_ptr<scalar_t>(), dy_x_sum.data_ptr<scalar_t>(),
        mean.data_ptr<scalar_t>(), invstd.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
        beta.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(sample_mean), ptr_or_null<scalar_t>(sample_var),
        dgamma.data_ptr<scalar_t>(), dbeta.data_ptr<scalar_t>(), dcoeff.defined() ? per_channel.data() : nullptr,
        scale_dy.data_ptr<scalar_t>(), scale_x.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), batch, banks,
        channels, static_cast<scalar_t>(pixels), static_cast<scalar_t>(eps), training};
    at::parallel_for(0, channels, grain(batch * banks), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) step(c);
    });
    if (dcoeff.defined()) {
      auto* out = dcoeff.data_ptr<scalar_t>();
      for (int64_t bk = 0; bk < batch * banks; ++bk) {
        scalar_t total = 0;
        for (int64_t c = 0; c < channels; ++c) total += per_channel[bk * channels + c];
        out[bk] = total;
      }
    }
  });
}

std::tuple<Tensor, Tensor> bn_moments(const Tensor& x) {
  RECORD_FUNCTION("awnet::cpu::bn_moments", std::vector<c10::IValue>());
  const auto dense_x = x.contiguous(x.suggest_memory_format());
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const auto options = x.options().dtype(at::toOpMathType(x.scalar_type())).memory_format(at::MemoryFormat::Contiguous);
  auto mean = at::empty({batch, channels}, options), var = at::empty({batch, channels}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_moments_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    moments(dense_x.data_ptr<scalar_t>(), mean.data_ptr<acc_t>(), var.data_ptr<acc_t>(), batch, channels, pixels,
            channels_last(x));
  });
  return {mean, var};
}

std::tuple<Tensor, Tensor> bn_grad_sums(const Tensor& dy, const Tensor& x) {
  RECORD_FUNCTION("awnet::cpu::bn_grad_sums", std::vector<c10::IValue>());
  const auto format = x.suggest_memory_format();
  const auto dense_dy = dy.contiguous(format), dense_x = x.contiguous(format);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const auto options = x.options().dtype(at::toOpMathType(x.scalar_type())).memory_format(at::MemoryFormat::Contiguous);
  auto dy_sum = at::empty({batch, channels}, options), dy_x_sum = at::empty({batch, channels}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_grad_sums_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    grad_sums(dense_dy.data_ptr<scalar_t>(), dense_x.data_ptr<scalar_t>(), dy_sum.data_ptr<acc_t>(),
              dy_x_sum.data_ptr<acc_t>(), batch, channels, pixels, channels_last(x));
  });
  return {dy_sum, dy_x_sum};
}

Tensor bn_grad_input(const Tensor& dy, const Tensor& x, const Tensor& scale_dy, const Tensor& scale_x,
                     const Tensor& shift) {
  RECORD_FUNCTION("awnet::cpu::bn_grad_input", std::vector<c10::IValue>());
  const auto format = x.suggest_memory_format();
  const auto dense_dy = dy.contiguous(format), dense_x = x.contiguous(format);
  auto dx = at::empty_like(dense_x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_grad_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    per_channel_map(dense_dy.data_ptr<scalar_t>(), dense_x.data_ptr<scalar_t>(), scale_dy.data_ptr<acc_t>(),
                    scale_x.data_ptr<acc_t>(), shift.data_ptr<acc_t>(), dx.data_ptr<scalar_t>(), x.size(0), x.size(1),
                    x.size(2) * x.size(3), channels_last(x));
  });
  return dx;
}

Tensor bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta,
                       const Tensor& running_mean, const Tensor& running_var, const Tensor& prescale, double eps,
                       Tensor& mean, Tensor& invstd) {
  RECORD_FUNCTION("awnet::cpu::bn_eval_forward", std::vector<c10::IValue>());
  const auto dense_x = x.contiguous(x.suggest_memory_format());
  auto y = at::empty_like(dense_x);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_eval_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EvalMap<acc_t> map{w.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(),
                             running_mean.data_ptr<acc_t>(), running_var.data_ptr<acc_t>(), nullptr,
                             data_or_null<acc_t>(prescale), w.size(1), channels, static_cast<acc_t>(eps)};
    for (int64_t c = 0; c < channels; ++c) map.stats(c, mean.data_ptr<acc_t>(), invstd.data_ptr<acc_t>());
    std::vector<acc_t> scale, shift;
    eval_maps(map, batch, true, scale, shift);
    per_channel_map(dense_x.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr), scale.data(),
                    static_cast<const acc_t*>(nullptr), shift.data(), y.data_ptr<scalar_t>(), batch, channels, pixels,
                    channels_last(x));
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> bn_eval_grad(const Tensor& dy, const Tensor& x, const Tensor& w,
                                                const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                                const Tensor& invstd, const Tensor& prescale, bool need_x,
                                                Tensor& dcoeff, Tensor& dprescale) {
  RECORD_FUNCTION("awnet::cpu::bn_eval_grad", std::vector<c10::IValue>());
  const auto format = x.suggest_memory_format();
  const auto dense_dy = dy.contiguous(format), dense_x = x.contiguous(format);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const auto options = w.options().memory_format(at::MemoryFormat::Contiguous);
  auto dy_sum = at::empty({batch, channels}, options), dy_x_sum = at::empty({batch, channels}, options);
  auto dx = need_x ? at::empty_like(dense_x) : Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_eval_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EvalMap<acc_t> map{w.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(),
                             mean.data_ptr<acc_t>(), nullptr, invstd.data_ptr<acc_t>(), data_or_null<acc_t>(prescale),
                             w.size(1), channels, acc_t(0)};
    std::vector<acc_t> scale, unused, scale_x;
    eval_maps(map, batch, false, scale, unused);  // dz = scale * dy
    if (map.prescale) eval_maps(map, batch, true, scale_x, unused);  // dx = scale * prescale * dy
    const auto* sum = dy_sum.data_ptr<acc_t>();
    auto* dot = dy_x_sum.data_ptr<acc_t>();
    eval_grad_pass(dense_dy.data_ptr<scalar_t>(), dense_x.data_ptr<scalar_t>(),
                   map.prescale ? scale_x.data() : scale.data(), need_x ? dx.data_ptr<scalar_t>() : nullptr,
                   dy_sum.data_ptr<acc_t>(), dot, batch, channels, pixels, channels_last(x));
    if (map.prescale) {
      // The pass summed dy * x: dprescale = scale * that, and the sums the finalize reads are of dy * z.
      auto* ds = dprescale.data_ptr<acc_t>();
      for (int64_t bc = 0; bc < batch * channels; ++bc) {
        ds[bc] = scale[bc] * dot[bc];
        dot[bc] *= map.prescale[bc];
      }
    }
    if (!dcoeff.defined()) return;
    // dcoeff[b, k]: the channels' shares summed in a fixed order (deterministic).
    auto* out = dcoeff.data_ptr<acc_t>();
    at::parallel_for(0, batch, grain(map.banks * channels), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        for (int64_t k = 0; k < map.banks; ++k)
          out[b * map.banks + k] = sum_of<acc_t>(channels, [&](int64_t c) {
            return map.coeff_grad(k, c, sum[b * channels + c], dot[b * channels + c]);
          });
    });
  });
  return {dx, dy_sum, dy_x_sum};
}

}  // namespace awnet::cpu
