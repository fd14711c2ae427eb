// Exact statistics of a set of values, merged in a fixed order: the per-plane
// reductions of SimAM and NAM (CPU and CUDA).
#pragma once
#include "gate_math.h"

namespace attnkernels {

// Running (count, mean, sum of squared deviations) of a set of values; merge
// combines two sets exactly (Chan et al.), so a reduction can take exact
// statistics per chunk (two passes over a chunk in cache) and merge them.
template <typename T>
struct MeanM2 {
  T count = 0, mean = 0, m2 = 0;
  AK_HD void merge(T n, T chunk_mean, T chunk_m2) {
    if (n == T(0)) return;
    const T total = count + n, delta = chunk_mean - mean;
    mean += delta * (n / total);
    m2 += chunk_m2 + delta * delta * (count * n / total);
    count = total;
  }
};

}  // namespace attnkernels
