// CUDA kernels of the mix-in-epilogue strategy, with the semantics of cpu/bank_mixing.cpp (awnet.h states
// them): mixing the stacked bank outputs per sample, and the one pass over dy that the backward needs.
#include "../awnet.h"
#include "launch.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace awnet::cuda {
namespace {

// One thread per output element, walked in y's memory order.
template <typename scalar_t, typename acc_t>
__global__ void mix_banks_kernel(const scalar_t* banks, const acc_t* a, const acc_t* bias_b, scalar_t* y,
                                 BankDims d, bool channels_last) {
  const int64_t n = d.batch * d.out * d.pixels, width = d.banks * d.out;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t b = i / (d.out * d.pixels);
    const int64_t o = channels_last ? i % d.out : i / d.pixels % d.out;
    const int64_t p = channels_last ? i / d.out % d.pixels : i % d.pixels;
    acc_t acc = bias_b ? bias_b[b * d.out + o] : acc_t(0);
    for (int64_t k = 0; k < d.banks; ++k) {
      const auto bank = banks[offset(b, d.stacked(k, o), p, width, d.pixels, channels_last)];
      acc += a[(b * d.banks + k) * d.out + o] * static_cast<acc_t>(bank);
    }
    y[i] = static_cast<scalar_t>(acc);
  }
}

// One block per (sample, tile of filters), see PixelTile: dy_sum, then per bank the scaled dy and the dot
// product with the bank's output. Block sums instead of float atomics keep the results deterministic.
template <typename scalar_t, typename acc_t>
__global__ void bank_grads_kernel(const scalar_t* dy, const scalar_t* banks, const acc_t* a, scalar_t* dy_banks,
                                  acc_t* da, acc_t* dy_sum, BankDims d, bool channels_last, PixelTile tile) {
  __shared__ acc_t shared[kThreads];
  const int64_t b = tile.sample(d.out), o = tile.channel(d.out), width = d.banks * d.out;
  // Lanes past the last filter load nothing but still take part in the block sums.
  const bool active = o < d.out, leader = active && tile.pixel_lane() == 0;
  const auto dy_at = [&](int64_t p) {
    return static_cast<acc_t>(dy[offset(b, o, p, d.out, d.pixels, channels_last)]);
  };

  acc_t total = 0;
  if (active)
    for (int64_t p = tile.pixel_lane(); p < d.pixels; p += tile.pixel_lanes()) total += dy_at(p);
  total = sum_pixel_lanes(total, shared, tile);
  if (leader) dy_sum[b * d.out + o] = total;

  for (int64_t k = 0; k < d.banks; ++k) {
    const int64_t bko = (b * d.banks + k) * d.out + o;
    acc_t dot = 0;
    if (active) {
      const acc_t ak = a[bko];
      const int64_t s = d.stacked(k, o);
      for (int64_t p = tile.pixel_lane(); p < d.pixels; p += tile.pixel_lanes()) {
        const acc_t g = dy_at(p);
        const int64_t i = offset(b, s, p, width, d.pixels, channels_last);
        if (dy_banks) dy_banks[i] = static_cast<scalar_t>(ak * g);
        if (banks) dot += g * static_cast<acc_t>(banks[i]);
      }
    }
    if (banks) {  // the same for the whole block, so every thread reaches the block sum
      dot = sum_pixel_lanes(dot, shared, tile);
      if (leader) da[bko] = dot;
    }
  }
}

}  // namespace

void mix_banks(const Tensor& banks, const Tensor& a, const Tensor& bias_b, int64_t groups, bool channels_last,
               Tensor& y) {
  const c10::cuda::CUDAGuard guard(y.device());
  const auto d = BankDims::of(a, banks, groups);
  if (y.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, banks.scalar_type(), "awnet_mix_banks_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    mix_banks_kernel<<<grid_stride_blocks(y.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        banks.data_ptr<scalar_t>(), a.data_ptr<acc_t>(), data_or_null<acc_t>(bias_b), y.data_ptr<scalar_t>(), d,
        channels_last);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void bank_grads(const Tensor& dy, const Tensor& banks, const Tensor& a, int64_t groups, bool channels_last,
                Tensor& dy_banks, Tensor& da, Tensor& dy_sum) {
  const c10::cuda::CUDAGuard guard(dy.device());
  const auto d = BankDims::of(a, dy, groups);
  if (dy_sum.numel() == 0) return;
  const auto tile = PixelTile::for_layout(channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "awnet_bank_grads_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    bank_grads_kernel<<<tile.blocks(d.batch, d.out), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dy.data_ptr<scalar_t>(), data_or_null<scalar_t>(banks), a.data_ptr<acc_t>(), data_or_null<scalar_t>(dy_banks),
        data_or_null<acc_t>(da), dy_sum.data_ptr<acc_t>(), d, channels_last, tile);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace awnet::cuda
