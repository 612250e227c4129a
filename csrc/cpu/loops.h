// Loop helpers shared by the CPU kernels.
#pragma once

#include <cstdint>

namespace awnet::cpu {

// sum_{p < n} term(p) with independent partial sums: one accumulator is a chain of dependent adds (one per
// add latency), partial sums let the compiler vectorise the reduction. The order is fixed: deterministic.
template <typename acc_t, typename Term>
inline acc_t sum_of(int64_t n, Term term) {
  constexpr int64_t kLanes = 16;
  acc_t part[kLanes] = {};
  int64_t p = 0;
  for (; p + kLanes <= n; p += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += term(p + l);
  acc_t total = 0;
  for (; p < n; ++p) total += term(p);
  for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  return total;
}

}  // namespace awnet::cpu
