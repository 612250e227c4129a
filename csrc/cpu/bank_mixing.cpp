// CPU kernels of the scaled and stacked strategies: mixing the (stacked) bank outputs per sample, and the
// one pass over dy that the backward needs. Every tensor is dense in the caller's memory format, walked in
// memory order: NCHW by (sample, filter) planes, channels_last by (sample, pixel) rows. Each pass is one
// profiler event, so kernel counts see it as the one kernel it is on the GPU.
#include "../awnet.h"

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

// Coefficient row of sample b and bank k: a[(b * K + k) * C_out + o].
template <typename acc_t>
const acc_t* coeff_row(const acc_t* a, int64_t b, int64_t k, const BankDims& d) {
  return a + (b * d.banks + k) * d.out;
}

template <typename scalar_t, typename acc_t>
void mix_nchw(const scalar_t* banks, const acc_t* a, const acc_t* bias_b, scalar_t* y, const BankDims& d) {
  at::parallel_for(0, d.batch * d.out, grain(d.banks * d.pixels), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(d.banks > 1 ? d.pixels : 0);
    for (int64_t bo = begin; bo < end; ++bo) {
      const int64_t b = bo / d.out, o = bo % d.out;
      const acc_t shift = bias_b ? bias_b[bo] : acc_t(0);
      const auto plane = [&](int64_t k) { return banks + (b * d.banks * d.out + d.stacked(k, o)) * d.pixels; };
      scalar_t* dst = y + bo * d.pixels;
      const scalar_t* src = plane(0);
      const acc_t a0 = coeff_row(a, b, 0, d)[o];
      if (d.banks == 1) {  // the scaled strategy: one multiply-add per element, straight to y
        for (int64_t p = 0; p < d.pixels; ++p) dst[p] = static_cast<scalar_t>(a0 * static_cast<acc_t>(src[p]) + shift);
        continue;
      }
      for (int64_t p = 0; p < d.pixels; ++p) row[p] = a0 * static_cast<acc_t>(src[p]) + shift;
      for (int64_t k = 1; k < d.banks; ++k) {
        const acc_t ak = coeff_row(a, b, k, d)[o];
        src = plane(k);
        for (int64_t p = 0; p < d.pixels; ++p) row[p] += ak * static_cast<acc_t>(src[p]);
      }
      for (int64_t p = 0; p < d.pixels; ++p) dst[p] = static_cast<scalar_t>(row[p]);
    }
  });
}

// Channels_last rows hold the stacked channels group-major, then bank, then filter within the group
// (awnet.h), so every (group, bank) is a contiguous run of C_out / groups values: the inner loops vectorise.
template <typename scalar_t, typename acc_t>
void mix_channels_last(const scalar_t* banks, const acc_t* a, const acc_t* bias_b, scalar_t* y, const BankDims& d) {
  const int64_t width = d.banks * d.out, groups = d.out / d.group_out;
  at::parallel_for(0, d.batch * d.pixels, grain(width), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(d.out);
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / d.pixels;
      if (bias_b)
        std::copy(bias_b + b * d.out, bias_b + (b + 1) * d.out, row.begin());
      else
        std::fill(row.begin(), row.end(), acc_t(0));
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t k = 0; k < d.banks; ++k) {
          const scalar_t* src = banks + bp * width + d.stacked(k, g * d.group_out);
          const acc_t* ak = coeff_row(a, b, k, d) + g * d.group_out;
          acc_t* r = row.data() + g * d.group_out;
          for (int64_t j = 0; j < d.group_out; ++j) r[j] += ak[j] * static_cast<acc_t>(src[j]);
        }
      scalar_t* dst = y + bp * d.out;
      for (int64_t o = 0; o < d.out; ++o) dst[o] = static_cast<scalar_t>(row[o]);
    }
  });
}

template <typename scalar_t, typename acc_t>
void grads_nchw(const scalar_t* dy, const scalar_t* banks, const acc_t* a, scalar_t* dy_banks, acc_t* da,
                acc_t* dy_sum, const BankDims& d) {
  at::parallel_for(0, d.batch * d.out, grain(d.banks * d.pixels), [&](int64_t begin, int64_t end) {
    for (int64_t bo = begin; bo < end; ++bo) {
      const int64_t b = bo / d.out, o = bo % d.out;
      const scalar_t* g = dy + bo * d.pixels;
      dy_sum[bo] = sum_of<acc_t>(d.pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]); });
      for (int64_t k = 0; k < d.banks; ++k) {
        const int64_t plane = (b * d.banks * d.out + d.stacked(k, o)) * d.pixels;
        if (dy_banks) {
          const acc_t ak = coeff_row(a, b, k, d)[o];
          scalar_t* dst = dy_banks + plane;
          for (int64_t p = 0; p < d.pixels; ++p) dst[p] = static_cast<scalar_t>(ak * static_cast<acc_t>(g[p]));
        }
        if (banks) {
          const scalar_t* src = banks + plane;
          da[(b * d.banks + k) * d.out + o] = sum_of<acc_t>(
              d.pixels, [&](int64_t p) { return static_cast<acc_t>(g[p]) * static_cast<acc_t>(src[p]); });
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void grads_channels_last(const scalar_t* dy, const scalar_t* banks, const acc_t* a, scalar_t* dy_banks, acc_t* da,
                         acc_t* dy_sum, const BankDims& d) {
  const int64_t width = d.banks * d.out, groups = d.out / d.group_out;
  // One sample per task: its (K, C_out) dot products accumulate over all of its pixels, one row at a time.
  at::parallel_for(0, d.batch, grain(d.pixels * width), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dots(width), sums(d.out);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(dots.begin(), dots.end(), acc_t(0));
      std::fill(sums.begin(), sums.end(), acc_t(0));
      for (int64_t p = 0; p < d.pixels; ++p) {
        const int64_t row = b * d.pixels + p;
        const scalar_t* g = dy + row * d.out;
        for (int64_t o = 0; o < d.out; ++o) sums[o] += static_cast<acc_t>(g[o]);
        for (int64_t gi = 0; gi < groups; ++gi)
          for (int64_t k = 0; k < d.banks; ++k) {
            const int64_t first = gi * d.group_out, at = row * width + d.stacked(k, first);
            const scalar_t* gg = g + first;
            if (dy_banks) {
              const acc_t* ak = coeff_row(a, b, k, d) + first;
              scalar_t* dst = dy_banks + at;
              for (int64_t j = 0; j < d.group_out; ++j) dst[j] = static_cast<scalar_t>(ak[j] * static_cast<acc_t>(gg[j]));
            }
            if (banks) {
              const scalar_t* src = banks + at;
              acc_t* dot = dots.data() + k * d.out + first;
              for (int64_t j = 0; j < d.group_out; ++j) dot[j] += static_cast<acc_t>(gg[j]) * static_cast<acc_t>(src[j]);
            }
          }
      }
      std::copy(sums.begin(), sums.end(), dy_sum + b * d.out);
      if (banks) std::copy(dots.begin(), dots.end(), da + b * width);
    }
  });
}

}  // namespace

void mix_banks(const Tensor& banks, const Tensor& a, const Tensor& bias_b, int64_t groups, bool channels_last,
               Tensor& y) {
  RECORD_FUNCTION("awnet::cpu::mix_banks", std::vector<c10::IValue>());
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
  RECORD_FUNCTION("awnet::cpu::bank_grads", std::vector<c10::IValue>());
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
