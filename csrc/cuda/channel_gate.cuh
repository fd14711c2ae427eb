// Channel-gate passes on CUDA, shared by every family whose output is
// y = x * g[b, c] with g computed per sample from per-(b, c) statistics of x
// (Squeeze-and-Excitation, ECA): the reduction over H*W (forward: mean and max;
// backward: sum(dy * x) and the argmax counts) and the elementwise apply. No
// atomics: every reduction is a fixed-order block reduction (deterministic).
// Internal to csrc/cuda/ (everything here has internal linkage).
#pragma once
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>

#include "../common/checks.h"
#include "../common/cuda_utils.cuh"

namespace attnkernels {
namespace {

constexpr int kReduceThreads = 256;
constexpr int kApplyThreads = 256;
constexpr int kTileC = 32;  // channels_last reduce: channels per block (one per lane)

// Forward (kGrad = false): out0 = mean (with kMax and mix, 0.5*mean + 0.5*max),
// out1 = max. Backward (kGrad = true): out0 = sum(dy * x), out1 = count of x == xmax.
template <bool kGrad, bool kMax, typename acc_t>
__device__ __forceinline__ void write_stats(int64_t nc, acc_t sum, acc_t aux, int64_t HW,
                                           bool mix, acc_t* out0, acc_t* out1) {
  if (kGrad) {
    out0[nc] = sum;
    if (kMax) out1[nc] = aux;
  } else {
    acc_t mean = sum / static_cast<acc_t>(HW);
    if (kMax) {
      out1[nc] = aux;
      if (mix) mean = acc_t(0.5) * mean + acc_t(0.5) * aux;
    }
    out0[nc] = mean;
  }
}

// NCHW: one block per (n, c) plane.
template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
__global__ void channel_reduce_nchw_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                      const acc_t* __restrict__ xmax, int64_t HW, bool mix,
                                      acc_t* __restrict__ out0, acc_t* __restrict__ out1) {
  AK_SHARED(acc_t, scratch, [kReduceThreads / kWarp]);
  const int64_t nc = blockIdx.x;
  const scalar_t* xp = x + nc * HW;
  const acc_t m = (kGrad && kMax) ? xmax[nc] : acc_t(0);
  acc_t sum = 0, aux = kGrad ? acc_t(0) : -std::numeric_limits<acc_t>::infinity();
  for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
    const acc_t v = static_cast<acc_t>(xp[i]);
    if (kGrad) {
      sum += static_cast<acc_t>(dy[nc * HW + i]) * v;
      if (kMax) aux += v == m ? acc_t(1) : acc_t(0);
    } else {
      sum += v;
      if (kMax) aux = max_nan(aux, v);
    }
  }
  sum = block_reduce<false>(sum, scratch);
  if (kMax) aux = (kGrad ? block_reduce<false>(aux, scratch) : block_reduce<true>(aux, scratch));
  if (threadIdx.x == 0) write_stats<kGrad, kMax>(nc, sum, aux, HW, mix, out0, out1);
}

// channels_last: a block covers kTileC channels of one sample; lane = channel,
// warp = a slice of positions; the warps' partials are combined in shared memory
// in a fixed order.
template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
__global__ void channel_reduce_nhwc_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                      const acc_t* __restrict__ xmax, int64_t C, int64_t HW,
                                      bool mix, acc_t* __restrict__ out0,
                                      acc_t* __restrict__ out1) {
  constexpr int kRows = kReduceThreads / kTileC;
  AK_SHARED(acc_t, ssum, [kRows][kTileC]);
  AK_SHARED(acc_t, saux, [kRows][kTileC]);
  const int64_t n = blockIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileC + threadIdx.x % kTileC;
  const int row = threadIdx.x / kTileC;
  acc_t sum = 0, aux = kGrad ? acc_t(0) : -std::numeric_limits<acc_t>::infinity();
  if (c < C) {
    const acc_t m = (kGrad && kMax) ? xmax[n * C + c] : acc_t(0);
    for (int64_t p = row; p < HW; p += kRows) {
      const int64_t i = (n * HW + p) * C + c;
      const acc_t v = static_cast<acc_t>(x[i]);
      if (kGrad) {
        sum += static_cast<acc_t>(dy[i]) * v;
        if (kMax) aux += v == m ? acc_t(1) : acc_t(0);
      } else {
        sum += v;
        if (kMax) aux = max_nan(aux, v);
      }
    }
  }
  ssum[row][threadIdx.x % kTileC] = sum;
  saux[row][threadIdx.x % kTileC] = aux;
  __syncthreads();
  if (row == 0 && c < C) {
    for (int r = 1; r < kRows; ++r) {
      sum += ssum[r][threadIdx.x];
      if (kMax) aux = kGrad ? aux + saux[r][threadIdx.x] : max_nan(aux, saux[r][threadIdx.x]);
    }
    write_stats<kGrad, kMax>(n * C + c, sum, aux, HW, mix, out0, out1);
  }
}

// Forward: out = x * g[n, c]. Backward (kGrad): out = dy * g + dmean + (x == xmax) * dmax.
template <bool kGrad, bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t>
__global__ void channel_apply_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                const acc_t* __restrict__ g, const acc_t* __restrict__ dmean,
                                const acc_t* __restrict__ xmax, const acc_t* __restrict__ dmax,
                                int64_t N, int64_t C, int64_t HW, scalar_t* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = kChannelsLast ? i % C : (i / HW) % C;
    const int64_t nc = (i / (C * HW)) * C + c;
    acc_t v;
    if (kGrad) {
      v = static_cast<acc_t>(dy[i]) * g[nc] + dmean[nc];
      if (kMax) v += static_cast<acc_t>(x[i]) == xmax[nc] ? dmax[nc] : acc_t(0);
    } else {
      v = static_cast<acc_t>(x[i]) * g[nc];
    }
    out[i] = static_cast<scalar_t>(v);
  }
}

// mix: the forward's out0 is 0.5 * mean + 0.5 * max with has_max (SE), else the mean.
template <bool kGrad, typename scalar_t, typename acc_t>
void launch_reduce(const at::Tensor& x, const at::Tensor* dy, const acc_t* xmax, bool has_max,
                   acc_t* out0, acc_t* out1, cudaStream_t stream, bool mix = true) {
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy ? dy->data_ptr<scalar_t>() : nullptr;
  if (is_channels_last(x)) {
    const dim3 grid(ceil_div(C, kTileC), static_cast<unsigned int>(B));
    if (has_max)
      AK_LAUNCH(grid, kReduceThreads, 0, stream, channel_reduce_nhwc_kernel<kGrad, true, scalar_t, acc_t>)(
          xp, dyp, xmax, C, HW, mix, out0, out1);
    else
      AK_LAUNCH(grid, kReduceThreads, 0, stream, channel_reduce_nhwc_kernel<kGrad, false, scalar_t, acc_t>)(
          xp, dyp, xmax, C, HW, mix, out0, out1);
  } else {
    const unsigned int grid = static_cast<unsigned int>(B * C);
    if (has_max)
      AK_LAUNCH(grid, kReduceThreads, 0, stream, channel_reduce_nchw_kernel<kGrad, true, scalar_t, acc_t>)(
          xp, dyp, xmax, HW, mix, out0, out1);
    else
      AK_LAUNCH(grid, kReduceThreads, 0, stream, channel_reduce_nchw_kernel<kGrad, false, scalar_t, acc_t>)(
          xp, dyp, xmax, HW, mix, out0, out1);
  }
  AK_LAUNCH_CHECK();
}

template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
void launch_apply(const at::Tensor& x, const scalar_t* dy, const acc_t* g, const acc_t* dmean,
                  const acc_t* xmax, const acc_t* dmax, at::Tensor& out, cudaStream_t stream) {
  const int64_t N = x.numel(), C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = grid_stride_blocks(N, kApplyThreads);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  if (is_channels_last(x))
    AK_LAUNCH(grid, kApplyThreads, 0, stream, channel_apply_kernel<kGrad, kMax, true, scalar_t, acc_t>)(
        xp, dy, g, dmean, xmax, dmax, N, C, HW, op);
  else
    AK_LAUNCH(grid, kApplyThreads, 0, stream, channel_apply_kernel<kGrad, kMax, false, scalar_t, acc_t>)(
        xp, dy, g, dmean, xmax, dmax, N, C, HW, op);
  AK_LAUNCH_CHECK();
}

}  // namespace
}  // namespace attnkernels
