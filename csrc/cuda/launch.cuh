// What the CUDA kernels share: addressing a dense (B, C, H, W) tensor in either memory format, grid sizes,
// and the per-(sample, channel) sum over the pixels.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace awnet::cuda {

constexpr int kThreads = 256;  // a power of two: sum_pixel_lanes halves it

__host__ __device__ inline int64_t ceil_div(int64_t n, int64_t d) {
  return (n + d - 1) / d;
}

__device__ inline int64_t offset(int64_t b, int64_t c, int64_t p, int64_t channels, int64_t pixels,
                                 bool channels_last) {
  return channels_last ? (b * pixels + p) * channels + c : (b * channels + c) * pixels + p;
}

__device__ inline int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ inline int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Blocks for a grid-stride loop over n elements: no more than the GPU holds at once.
inline unsigned grid_stride_blocks(int64_t n) {
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const int64_t resident =
      static_cast<int64_t>(props->multiProcessorCount) * props->maxThreadsPerMultiProcessor / kThreads;
  return static_cast<unsigned>(std::min(ceil_div(n, kThreads), resident));
}

// Per-(sample, channel) reductions over the pixels. A block covers one sample and `lanes` consecutive
// channels; its threads are (channel lane, pixel lane) with the channel lane fastest, so that consecutive
// threads read consecutive addresses: NCHW runs one channel per block (all threads along its pixels),
// channels_last 32 channels per block (8 threads along the pixels).
struct PixelTile {
  int lanes;
  static PixelTile for_layout(bool channels_last) { return {channels_last ? 32 : 1}; }

  unsigned blocks(int64_t batch, int64_t channels) const {
    const auto n = batch * ceil_div(channels, lanes);
    TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), "awnet: too many (sample, channel) pairs for one grid");
    return static_cast<unsigned>(n);
  }
  __device__ int64_t sample(int64_t channels) const { return blockIdx.x / ceil_div(channels, lanes); }
  __device__ int64_t channel(int64_t channels) const {
    return blockIdx.x % ceil_div(channels, lanes) * lanes + threadIdx.x % lanes;
  }
  __device__ int pixel_lane() const { return threadIdx.x / lanes; }
  __device__ int pixel_lanes() const { return blockDim.x / lanes; }
};

// Sums `value` over the pixel lanes of the block, in a fixed order (deterministic); every thread gets its
// channel lane's total. Every thread of the block must call it: it synchronises and reuses `shared`.
template <typename acc_t>
__device__ acc_t sum_pixel_lanes(acc_t value, acc_t* shared, const PixelTile& tile) {
  const int t = threadIdx.x;
  shared[t] = value;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride >= tile.lanes; stride /= 2) {
    if (t < stride) shared[t] += shared[t + stride];
    __syncthreads();
  }
  const acc_t total = shared[t % tile.lanes];
  __syncthreads();
  return total;
}

// Sums `value` over the sample lanes of one warp whose 32 threads are (channel lane, sample lane) with the
// channel lane fastest (32 / lanes sample lanes), in a fixed order; every lane gets its channel's total. All
// 32 threads of the warp must call it.
template <typename acc_t>
__device__ acc_t sum_sample_lanes(acc_t value, const PixelTile& tile) {
  for (int offset = 16; offset >= tile.lanes; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

}  // namespace awnet::cuda
