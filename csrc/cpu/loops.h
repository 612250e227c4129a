// Loop helpers shared by the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
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

// Items per at::parallel_for task, so that a task holds at least ATen's grain of elements: small tensors
// stay on one thread (waking the pool costs more than their work).
inline int64_t grain(int64_t elements_per_item) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, elements_per_item));
}

}  // namespace awnet::cpu
