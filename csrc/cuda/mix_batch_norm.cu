// CUDA passes of MixBN (awnet.h states them), each one read of the (B, C, H, W) tensors where ATen needs two
// or three: the per-(sample, channel) sums of dy and dy * x, and the output and dx passes, which in training
// compute the finalize steps of mix_batch_norm_finalize.h themselves (a block's first warp sums its channels'
// terms over the samples); the backward finalize with the coefficient gradient is a kernel of its own (a thread per
// channel). In eval, one pass each way.
#include "../awnet.h"
#include "../mix_batch_norm_finalize.h"
#include "launch.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/var_mean.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace awnet::cuda {
namespace {

// One block per (sample, tile of channels), see PixelTile; block sums keep the results deterministic.
template <typename scalar_t, typename acc_t>
__global__ void grad_sums_kernel(const scalar_t* dy, const scalar_t* x, acc_t* dy_sum, acc_t* dy_x_sum,
                                 int64_t channels, int64_t pixels, bool channels_last, PixelTile tile) {
  __shared__ acc_t shared[kThreads];
  const int64_t b = tile.sample(channels), c = tile.channel(channels);
  const bool active = c < channels;  // lanes past the last channel still take part in the block sums
  acc_t sum = 0, dot = 0;
  if (active) {
    for (int64_t p = tile.pixel_lane(); p < pixels; p += tile.pixel_lanes()) {
      const int64_t i = offset(b, c, p, channels, pixels, channels_last);
      const acc_t g = static_cast<acc_t>(dy[i]);
      sum += g;
      dot += g * static_cast<acc_t>(x[i]);
    }
  }
  sum = sum_pixel_lanes(sum, shared, tile);
  dot = sum_pixel_lanes(dot, shared, tile);
  if (active && tile.pixel_lane() == 0) {
    dy_sum[b * channels + c] = sum;
    dy_x_sum[b * channels + c] = dot;
  }
}

template <typename Step>
__global__ void per_channel_kernel(Step step, int64_t channels) {
  for (int64_t c = global_thread(); c < channels; c += grid_threads()) step(c);
}

template <typename acc_t>
const acc_t* ptr_or_null(const Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<acc_t>() : nullptr;
}

// One thread per element, walked in memory order.
template <typename scalar_t, typename acc_t>
__global__ void grad_input_kernel(const scalar_t* dy, const scalar_t* x, const acc_t* scale_dy, const acc_t* scale_x,
                                  const acc_t* shift, scalar_t* dx, int64_t n, int64_t channels, int64_t pixels,
                                  bool channels_last) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t bc = channels_last ? i / (pixels * channels) * channels + i % channels : i / pixels;
    dx[i] = static_cast<scalar_t>(scale_dy[bc] * static_cast<acc_t>(dy[i]) + scale_x[bc] * static_cast<acc_t>(x[i]) +
                                  shift[bc]);
  }
}

// Eval, one block per (sample, tile of channels) as above: each thread computes its channel's map (K terms,
// the same loads across a channel's threads) and applies it; the first sample's blocks write the banks' mean
// and invstd for the backward.
template <typename scalar_t, typename acc_t>
__global__ void eval_forward_kernel(const scalar_t* x, EvalMap<acc_t> map, acc_t* mean, acc_t* invstd, scalar_t* y,
                                    int64_t pixels, bool channels_last, PixelTile tile) {
  const int64_t channels = map.channels;
  const int64_t b = tile.sample(channels), c = tile.channel(channels);
  if (c >= channels) return;
  acc_t scale, shift;
  map(b, c, scale, shift);
  scale *= map.prescale_at(b, c);
  if (b == 0 && tile.pixel_lane() == 0) map.stats(c, mean, invstd);
  for (int64_t p = tile.pixel_lane(); p < pixels; p += tile.pixel_lanes()) {
    const int64_t i = offset(b, c, p, channels, pixels, channels_last);
    y[i] = static_cast<scalar_t>(scale * static_cast<acc_t>(x[i]) + shift);
  }
}

// The eval backward's one pass: the sums of grad_sums_kernel (of dy * z, z = prescale * x), (dx non-null)
// dx = scale * prescale * dy, (dprescale non-null) sum_p dy * scale * x and (dcoeff non-null, zeroed) each
// channel's share of dcoeff added to it: float atomics, so the callers take this only outside deterministic
// mode.
template <typename scalar_t, typename acc_t>
__global__ void eval_grad_kernel(const scalar_t* dy, const scalar_t* x, EvalMap<acc_t> map, scalar_t* dx,
                                 acc_t* dy_sum, acc_t* dy_x_sum, acc_t* dcoeff, acc_t* dprescale, int64_t pixels,
                                 bool channels_last, PixelTile tile) {
  __shared__ acc_t shared[kThreads];
  const int64_t channels = map.channels;
  const int64_t b = tile.sample(channels), c = tile.channel(channels);
  const bool active = c < channels;  // lanes past the last channel still take part in the block sums
  acc_t scale = 0, unused, prescale = 1, sum = 0, dot = 0;
  if (active) {
    map(b, c, scale, unused);
    prescale = map.prescale_at(b, c);
    for (int64_t p = tile.pixel_lane(); p < pixels; p += tile.pixel_lanes()) {
      const int64_t i = offset(b, c, p, channels, pixels, channels_last);
      const acc_t g = static_cast<acc_t>(dy[i]);
      sum += g;
      dot += g * static_cast<acc_t>(x[i]);
      if (dx) dx[i] = static_cast<scalar_t>(scale * prescale * g);
    }
  }
  sum = sum_pixel_lanes(sum, shared, tile);
  dot = sum_pixel_lanes(dot, shared, tile);
  if (active && tile.pixel_lane() == 0) {
    if (dprescale) dprescale[b * channels + c] = scale * dot;
    dot *= prescale;
    dy_sum[b * channels + c] = sum;
    dy_x_sum[b * channels + c] = dot;
    if (dcoeff)
      for (int64_t k = 0; k < map.banks; ++k) atomicAdd(dcoeff + b * map.banks + k, map.coeff_grad(k, c, sum, dot));
  }
}

// Training, the output pass with the finalize in it, one block per (sample, tile of channels): the block's
// first warp computes the map of its sample at its channels, its threads summing each bank's terms over the
// samples (warp shuffles, no block barrier per sum: the samples are few next to the pixels), and the first
// sample's blocks write the bank and running statistics; then every thread applies the map.
template <typename scalar_t, typename acc_t>
__global__ void train_forward_kernel(const scalar_t* x, FinalizeForward<acc_t> step, scalar_t* y, int64_t pixels,
                                     bool channels_last, PixelTile tile) {
  __shared__ acc_t map_scale[32], map_shift[32];  // per channel lane
  const int64_t channels = step.channels;
  const int64_t b = tile.sample(channels), c = tile.channel(channels);
  if (threadIdx.x < 32) {
    const bool active = c < channels;
    const int sample_lane = threadIdx.x / tile.lanes, sample_lanes = 32 / tile.lanes;
    acc_t scale = 0, shift = 0;
    for (int64_t k = 0; k < step.banks; ++k) {
      acc_t weight = 0, mean_sum = 0, var_sum = 0;
      for (int64_t s = sample_lane; active && s < step.batch; s += sample_lanes) {
        weight += step.weight_term(s, k);
        mean_sum += step.mean_term(s, k, c);
      }
      weight = sum_sample_lanes(weight, tile);
      mean_sum = sum_sample_lanes(mean_sum, tile);
      const int64_t kc = k * channels + c;
      const acc_t m = active ? step.bank_mean(kc, weight, mean_sum) : acc_t(0);
      for (int64_t s = sample_lane; active && s < step.batch; s += sample_lanes) var_sum += step.var_term(s, k, c, m);
      var_sum = sum_sample_lanes(var_sum, tile);
      if (!active) continue;
      const acc_t v = step.bank_var(kc, weight, var_sum);
      if (b == 0 && sample_lane == 0) step.store(kc, weight, m, v);
      step.add_bank(b, kc, k, m, inverse_sqrt(v + step.eps), scale, shift);
    }
    if (sample_lane == 0) {
      map_scale[threadIdx.x] = scale;
      map_shift[threadIdx.x] = shift;
    }
  }
  __syncthreads();
  if (c >= channels) return;
  const acc_t scale = map_scale[threadIdx.x % tile.lanes], shift = map_shift[threadIdx.x % tile.lanes];
  for (int64_t p = tile.pixel_lane(); p < pixels; p += tile.pixel_lanes()) {
    const int64_t i = offset(b, c, p, channels, pixels, channels_last);
    y[i] = static_cast<scalar_t>(scale * static_cast<acc_t>(x[i]) + shift);
  }
}

// Training, the dx pass with the backward finalize in it (no coefficient gradient), blocks as above: the first
// warp sums each bank's dgamma, dbeta and weight over the samples and makes its sample's dx map, the first
// sample's blocks write dgamma and dbeta, then every thread applies the map.
template <typename scalar_t, typename acc_t>
__global__ void train_grad_input_kernel(const scalar_t* dy, const scalar_t* x, FinalizeBackward<acc_t> step,
                                        scalar_t* dx, int64_t pixels, bool channels_last, PixelTile tile) {
  __shared__ acc_t map_dy[32], map_x[32], map_shift[32];  // per channel lane
  const int64_t channels = step.channels;
  const int64_t b = tile.sample(channels), c = tile.channel(channels);
  if (threadIdx.x < 32) {
    const bool active = c < channels;
    const int sample_lane = threadIdx.x / tile.lanes, sample_lanes = 32 / tile.lanes;
    acc_t a = 0, cx = 0, c0 = 0;
    for (int64_t k = 0; k < step.banks; ++k) {
      acc_t g = 0, bsum = 0, weight = 0;
      for (int64_t s = sample_lane; active && s < step.batch; s += sample_lanes) step.add_sums(s, k, c, g, bsum, weight);
      g = sum_sample_lanes(g, tile);
      bsum = sum_sample_lanes(bsum, tile);
      weight = sum_sample_lanes(weight, tile);
      if (!active) continue;
      if (b == 0 && sample_lane == 0) {
        step.dgamma[k * channels + c] = g;
        step.dbeta[k * channels + c] = bsum;
      }
      step.add_bank(b, k, c, g, bsum, weight, a, cx, c0, nullptr);
    }
    if (sample_lane == 0) {
      map_dy[threadIdx.x] = a;
      map_x[threadIdx.x] = cx;
      map_shift[threadIdx.x] = c0;
    }
  }
  __syncthreads();
  if (c >= channels) return;
  const int lane = threadIdx.x % tile.lanes;
  const acc_t a = map_dy[lane], cx = map_x[lane], c0 = map_shift[lane];
  for (int64_t p = tile.pixel_lane(); p < pixels; p += tile.pixel_lanes()) {
    const int64_t i = offset(b, c, p, channels, pixels, channels_last);
    dx[i] = static_cast<scalar_t>(a * static_cast<acc_t>(dy[i]) + cx * static_cast<acc_t>(x[i]) + c0);
  }
}

// dy and x dense in x's suggested memory format, the layout the kernels walk (a copy only when they are not).
struct Dense {
  Tensor dy, x;
  bool channels_last;
};

Dense dense(const Tensor& dy, const Tensor& x) {
  const auto format = x.suggest_memory_format();
  return {dy.contiguous(format), x.contiguous(format), format == at::MemoryFormat::ChannelsLast};
}

}  // namespace

Tensor bn_train_forward(const Tensor& x, const Tensor& w, const Tensor& sample_mean, const Tensor& sample_var,
                        const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                        double momentum, double eps, Tensor& mean, Tensor& invstd) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto format = x.suggest_memory_format();
  const auto dense_x = x.contiguous(format);
  auto y = at::empty_like(dense_x);
  const auto batch = x.size(0), channels = x.size(1);
  if (batch * channels == 0) {  // no block would write the statistics: the running ones
    mean.copy_(running_mean);
    invstd.copy_(at::rsqrt(running_var.add(eps)));
    return y;
  }
  const auto tile = PixelTile::for_layout(format == at::MemoryFormat::ChannelsLast);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_train_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const FinalizeForward<acc_t> step{
        w.data_ptr<acc_t>(), sample_mean.data_ptr<acc_t>(), sample_var.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(),
        beta.data_ptr<acc_t>(), running_mean.data_ptr<acc_t>(), running_var.data_ptr<acc_t>(),
        mean.data_ptr<acc_t>(), invstd.data_ptr<acc_t>(), nullptr, nullptr, batch, w.size(1), channels,
        static_cast<acc_t>(x.size(2) * x.size(3)), static_cast<acc_t>(momentum), static_cast<acc_t>(eps)};
    train_forward_kernel<<<tile.blocks(batch, channels), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dense_x.data_ptr<scalar_t>(), step, y.data_ptr<scalar_t>(), x.size(2) * x.size(3),
        format == at::MemoryFormat::ChannelsLast, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

Tensor bn_train_grad_input(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dy_sum,
                           const Tensor& dy_x_sum, const Tensor& mean, const Tensor& invstd, const Tensor& gamma,
                           const Tensor& beta, const Tensor& sample_mean, const Tensor& sample_var, double eps,
                           Tensor& dgamma, Tensor& dbeta) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto in = dense(dy, x);
  auto dx = at::empty_like(in.x);
  const auto batch = x.size(0), channels = x.size(1);
  if (batch == 0 || channels == 0) {
    dgamma.zero_();
    dbeta.zero_();
    return dx;
  }
  const auto tile = PixelTile::for_layout(in.channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_train_grad_input_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const FinalizeBackward<acc_t> step{
        w.data_ptr<acc_t>(), dy_sum.data_ptr<acc_t>(), dy_x_sum.data_ptr<acc_t>(), mean.data_ptr<acc_t>(),
        invstd.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(), sample_mean.data_ptr<acc_t>(),
        sample_var.data_ptr<acc_t>(), dgamma.data_ptr<acc_t>(), dbeta.data_ptr<acc_t>(), nullptr, nullptr, nullptr,
        nullptr, batch, w.size(1), channels, static_cast<acc_t>(x.size(2) * x.size(3)), static_cast<acc_t>(eps),
        true};
    train_grad_input_kernel<<<tile.blocks(batch, channels), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        in.dy.data_ptr<scalar_t>(), in.x.data_ptr<scalar_t>(), step, dx.data_ptr<scalar_t>(), x.size(2) * x.size(3),
        in.channels_last, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

void bn_finalize_backward(const Tensor& w, const Tensor& dy_sum, const Tensor& dy_x_sum, const Tensor& mean,
                          const Tensor& invstd, const Tensor& gamma, const Tensor& beta, const Tensor& sample_mean,
                          const Tensor& sample_var, bool training, double eps, int64_t pixels, Tensor& dgamma,
                          Tensor& dbeta, Tensor& dcoeff, Tensor& scale_dy, Tensor& scale_x, Tensor& shift) {
  const c10::cuda::CUDAGuard guard(w.device());
  const auto batch = w.size(0), banks = w.size(1), channels = gamma.size(1);
  if (channels == 0) {
    if (dcoeff.defined()) dcoeff.zero_();
    return;
  }
  // dcoeff's share of each channel, summed over the channels after (deterministic, unlike atomics).
  const auto per_channel = dcoeff.defined() ? at::empty({batch, banks, channels}, w.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "awnet_bn_finalize_backward_cuda", [&] {
    const FinalizeBackward<scalar_t> step{
        w.data_ptr<scalar_t>(), dy_sum.data_ptr<scalar_t>(), dy_x_sum.data_ptr<scalar_t>(),
        mean.data_ptr<scalar_t>(), invstd.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
        beta.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(sample_mean), ptr_or_null<scalar_t>(sample_var),
        dgamma.data_ptr<scalar_t>(), dbeta.data_ptr<scalar_t>(),
        per_channel.defined() ? per_channel.data_ptr<scalar_t>() : nullptr, scale_dy.data_ptr<scalar_t>(),
        scale_x.data_ptr<scalar_t>(), shift.data_ptr<scalar_t>(), batch, banks, channels,
        static_cast<scalar_t>(pixels), static_cast<scalar_t>(eps), training};
    per_channel_kernel<<<grid_stride_blocks(channels), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(step,
                                                                                                     channels);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (dcoeff.defined()) at::sum_out(dcoeff, per_channel, {2});
}

std::tuple<Tensor, Tensor> bn_moments(const Tensor& x) {
  // Welford in ATen's reduction; a half x is upcast first, since var_mean returns x's dtype and moments
  // rounded to half put 1e-4..2e-3 errors in the statistics (seen on an H100).
  auto [var, mean] = at::var_mean(x.to(at::toOpMathType(x.scalar_type())), {2, 3}, /*correction=*/0,
                                  /*keepdim=*/false);
  return {mean.contiguous(), var.contiguous()};
}

std::tuple<Tensor, Tensor> bn_grad_sums(const Tensor& dy, const Tensor& x) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto in = dense(dy, x);
  const auto batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const auto options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  auto dy_sum = at::empty({batch, channels}, options), dy_x_sum = at::empty({batch, channels}, options);
  if (dy_sum.numel() == 0) return {dy_sum, dy_x_sum};
  const auto tile = PixelTile::for_layout(in.channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_grad_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    grad_sums_kernel<<<tile.blocks(batch, channels), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        in.dy.data_ptr<scalar_t>(), in.x.data_ptr<scalar_t>(), dy_sum.data_ptr<acc_t>(), dy_x_sum.data_ptr<acc_t>(),
        channels, pixels, in.channels_last, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dy_sum, dy_x_sum};
}

Tensor bn_grad_input(const Tensor& dy, const Tensor& x, const Tensor& scale_dy, const Tensor& scale_x,
                     const Tensor& shift) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto in = dense(dy, x);
  auto dx = at::empty_like(in.x);
  if (dx.numel() == 0) return dx;
  const auto a = scale_dy.contiguous(), c1 = scale_x.contiguous(), c0 = shift.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_grad_input_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    grad_input_kernel<<<grid_stride_blocks(dx.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        in.dy.data_ptr<scalar_t>(), in.x.data_ptr<scalar_t>(), a.data_ptr<acc_t>(), c1.data_ptr<acc_t>(),
        c0.data_ptr<acc_t>(), dx.data_ptr<scalar_t>(), dx.numel(), x.size(1), x.size(2) * x.size(3),
        in.channels_last);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

Tensor bn_eval_forward(const Tensor& x, const Tensor& w, const Tensor& gamma, const Tensor& beta,
                       const Tensor& running_mean, const Tensor& running_var, const Tensor& prescale, double eps,
                       Tensor& mean, Tensor& invstd) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto format = x.suggest_memory_format();
  const auto dense_x = x.contiguous(format);
  auto y = at::empty_like(dense_x);
  const auto batch = x.size(0), channels = x.size(1);
  if (y.numel() == 0) {  // no block would write the statistics
    mean.copy_(running_mean);
    invstd.copy_(at::rsqrt(running_var.add(eps)));
    return y;
  }
  const auto tile = PixelTile::for_layout(format == at::MemoryFormat::ChannelsLast);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_eval_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EvalMap<acc_t> map{w.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(),
                             running_mean.data_ptr<acc_t>(), running_var.data_ptr<acc_t>(), nullptr,
                             data_or_null<acc_t>(prescale), w.size(1), channels, static_cast<acc_t>(eps)};
    eval_forward_kernel<<<tile.blocks(batch, channels), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dense_x.data_ptr<scalar_t>(), map, mean.data_ptr<acc_t>(), invstd.data_ptr<acc_t>(), y.data_ptr<scalar_t>(),
        x.size(2) * x.size(3), format == at::MemoryFormat::ChannelsLast, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> bn_eval_grad(const Tensor& dy, const Tensor& x, const Tensor& w,
                                                const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                                const Tensor& invstd, const Tensor& prescale, bool need_x,
                                                Tensor& dcoeff, Tensor& dprescale) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto in = dense(dy, x);
  const auto batch = x.size(0), channels = x.size(1);
  auto dy_sum = at::empty({batch, channels}, w.options()), dy_x_sum = at::empty({batch, channels}, w.options());
  auto dx = need_x ? at::empty_like(in.x) : Tensor();
  if (dcoeff.defined() && dcoeff.numel())  // a memset, not a kernel: the pass adds into it
    C10_CUDA_CHECK(cudaMemsetAsync(dcoeff.data_ptr(), 0, dcoeff.nbytes(), stream));
  if (dy_sum.numel() == 0) return {dx, dy_sum, dy_x_sum};
  const auto tile = PixelTile::for_layout(in.channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "awnet_bn_eval_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EvalMap<acc_t> map{w.data_ptr<acc_t>(), gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(),
                             mean.data_ptr<acc_t>(), nullptr, invstd.data_ptr<acc_t>(), data_or_null<acc_t>(prescale),
                             w.size(1), channels, acc_t(0)};
    eval_grad_kernel<<<tile.blocks(batch, channels), kThreads, 0, stream>>>(
        in.dy.data_ptr<scalar_t>(), in.x.data_ptr<scalar_t>(), map, need_x ? dx.data_ptr<scalar_t>() : nullptr,
        dy_sum.data_ptr<acc_t>(), dy_x_sum.data_ptr<acc_t>(), dcoeff.defined() ? dcoeff.data_ptr<acc_t>() : nullptr,
        data_or_null<acc_t>(dprescale), x.size(2) * x.size(3), in.channels_last, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx, dy_sum, dy_x_sum};
}

}  // namespace awnet::cuda
