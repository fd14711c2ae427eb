// Small CUDA helpers shared by every family: block reductions in a fixed order
// (deterministic), launch geometry.
#pragma once
#include <algorithm>
#include <cstdint>

#include "../cuda/device.cuh"

#include "gate_math.h"

namespace attnkernels {

constexpr int kWarp = 32;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = max_nan(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// Sum (kMax: NaN-propagating max) over the block; the result is valid in
// thread 0. `scratch` holds blockDim.x / 32 values. Fixed order: deterministic.
template <bool kMax, typename T>
__device__ __forceinline__ T block_reduce(T v, T* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = blockDim.x / kWarp;
    v = lane < nwarps ? scratch[lane] : (kMax ? -INFINITY : T(0));
    v = kMax ? warp_max(v) : warp_sum(v);
  }
  return v;
}

inline unsigned int ceil_div(int64_t a, int64_t b) { return static_cast<unsigned int>((a + b - 1) / b); }

// Blocks for a grid-stride loop over n elements: one element per thread, up to
// AK_MAX_GRID_STRIDE_BLOCKS blocks (then each thread takes several; the
// emulator's small cap makes the tests run that loop).
inline unsigned int grid_stride_blocks(int64_t n, int threads) {
  return static_cast<unsigned int>(
      std::min<int64_t>(ceil_div(n, threads), AK_MAX_GRID_STRIDE_BLOCKS));
}

}  // namespace attnkernels
