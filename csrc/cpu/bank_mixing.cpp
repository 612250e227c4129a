// CPU kernels of the mix-in-epilogue strategy: mixing the stacked bank outputs per sample, and the one
// pass over dy that the backward needs. Every tensor is dense in the caller's memory format, walked in
// memory order: NCHW by (sample, filter) planes, channels_last by (sample, pixel) rows.
#include "../awnet.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

namespace awnet::cpu {
namespace {

template <typename scalar_t, typename acc_t>
void mix_nchw(const scalar_t* banks, const acc_t* a, const acc_t* bias_b, scalar_t* y, const BankDims& d) {
  at::parallel_for(0, d.batch * d.out, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(d.pixels);
    for (int64_t bo = begin; bo < end; ++bo) {
      const int64_t b = bo / d.out, o = bo % d.out;
      std::fill(row.begin(), row.end(), bias_b ? bias_b[bo] : acc_t(0));
      for (int64_t k = 0; k < d.banks; ++k) {
        const acc_t ak = a[(b * d.banks + k) * d.out + o];
        const scalar_t* src = banks + (b * d.banks * d.out + d.stacked(k, o)) * d.pixels;
        for (int64_t p = 0; p < d.pixels; ++p) row[p] += ak * static_cast<acc_t>(src[p]);
      }
      scalar_t* dst = y + bo * d.pixels;
      for (int64_t p = 0; p < d.pixels; ++p) dst[p] = static_cast<scalar_t>(row[p]);
    }
  });
}

template <typename scalar_t, typename acc_t>
void mix_channels_last(const scalar_t* banks, const acc_t* a, const acc_t* bias_b, scalar_t* y, const BankDims& d) {
  const int64_t width = d.banks * d.out;
  at::parallel_for(0, d.batch * d.pixels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / d.pixels;
      const scalar_t* src = banks + bp * width;
      for (int64_t o = 0; o < d.out; ++o) {
        acc_t acc = bias_b ? bias_b[b * d.out + o] : acc_t(0);
        for (int64_t k = 0; k < d.banks; ++k)
          acc += a[(b * d.banks + k) * d.out + o] * static_cast<acc_t>(src[d.stacked(k, o)]);
        y[bp * d.out + o] = static_cast<scalar_t>(acc);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void grads_nchw(const scalar_t* dy, const scalar_t* banks, const acc_t* a, scalar_t* dy_banks, acc_t* da,
                acc_t* dy_sum, const BankDims& d) {
  at::parallel_for(0, d.batch * d.out, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bo = begin; bo < end; ++bo) {
      const int64_t b = bo / d.out, o = bo % d.out;
      const scalar_t* g = dy + bo * d.pixels;
      acc_t total = 0;
      for (int64_t p = 0; p < d.pixels; ++p) total += static_cast<acc_t>(g[p]);
      dy_sum[bo] = total;
      for (int64_t k = 0; k < d.banks; ++k) {
        const int64_t bko = (b * d.banks + k) * d.out + o;
        const int64_t plane = (b * d.banks * d.out + d.stacked(k, o)) * d.pixels;
        if (dy_banks) {
          const acc_t ak = a[bko];
          for (int64_t p = 0; p < d.pixels; ++p)
            dy_banks[plane + p] = static_cast<scalar_t>(ak * static_cast<acc_t>(g[p]));
        }
        if (banks) {
          acc_t dot = 0;
          for (int64_t p = 0; p < d.pixels; ++p)
            dot += static_cast<acc_t>(g[p]) * static_cast<acc_t>(banks[plane + p]);
          da[bko] = dot;
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void grads_channels_last(const scalar_t* dy, const scalar_t* banks, const acc_t* a, scalar_t* dy_banks, acc_t* da,
                         acc_t* dy_sum, const BankDims& d) {
  const int64_t width = d.banks * d.out;
  // One sample per task: its (K, C_out) dot products accumulate over all of its pixels.
  at::parallel_for(0, d.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dots(width), sums(d.out);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(dots.begin(), dots.end(), acc_t(0));
      std::fill(sums.begin(), sums.end(), acc_t(0));
      for (int64_t p = 0; p < d.pixels; ++p) {
        const int64_t row = b * d.pixels + p;
        const scalar_t* g = dy + row * d.out;
        for (int64_t o = 0; o < d.out; ++o) {
          const acc_t go = static_cast<acc_t>(g[o]);
          sums[o] += go;
          for (int64_t k = 0; k < d.banks; ++k) {
            const int64_t s = row * width + d.stacked(k, o);
            if (dy_banks) dy_banks[s] = static_cast<scalar_t>(a[(b * d.banks + k) * d.out + o] * go);
            if (banks) dots[k * d.out + o] += go * static_cast<acc_t>(banks[s]);
          }
        }
      }
      for (int64_t o = 0; o < d.out; ++o) dy_sum[b * d.out + o] = sums[o];
      if (banks)
        for (int64_t ko = 0; ko < width; ++ko) da[b * width + ko] = dots[ko];
    }
  });
}

}  // namespace

void mix_banks(const Tensor& banks, const Tensor& a, const Tensor& bias_b, int64_t groups, bool channels_last,
               Tensor& y) {
  const auto d = BankDims::of(a, banks, groups);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, banks.scalar_type(), "awnet_mix_banks_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto* src = banks.data_ptr<scalar_t>();
    const auto* coeff = a.data_ptr<acc_t>();
    const auto* shift = data_or_null<acc_t>(bias_b);
    if (channels_last)
      mix_channels_last(src, coeff, shift, y.data_ptr<scalar_t>(), d);
    else
      mix_nchw(src, coeff, shift, y.data_ptr<scalar_t>(), d);
  });
}

void bank_grads(const Tensor& dy, const Tensor& banks, const Tensor& a, int64_t groups, bool channels_last,
                Tensor& dy_banks, Tensor& da, Tensor& dy_sum) {
  const auto d = BankDims::of(a, dy, groups);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "awnet_bank_grads_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto* g = dy.data_ptr<scalar_t>();
    const auto* src = data_or_null<scalar_t>(banks);
    auto* scaled = data_or_null<scalar_t>(dy_banks);
    if (channels_last)
      grads_channels_last(g, src, a.data_ptr<acc_t>(), scaled, data_or_null<acc_t>(da), dy_sum.data_ptr<acc_t>(), d);
    else
      grads_nchw(g, src, a.data_ptr<acc_t>(), scaled, data_or_null<acc_t>(da), dy_sum.data_ptr<acc_t>(), d);
  });
}

}  // namespace awnet::cpu
