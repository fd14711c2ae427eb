// The per-(n, c) plane reductions of SimAM and NAM on CUDA: the block
// geometry (one (n, c) plane per block for NCHW; kPlaneTileC channels of one
// sample for channels_last, lane = channel, reads coalesced) and the
// statistics pass. Deterministic: fixed trees, no atomics.
#pragma once
#include <ATen/core/Tensor.h>

#include "../common/checks.h"
#include "../common/cuda_utils.cuh"
#include "../common/mean_m2.h"

namespace attnkernels {
namespace {

constexpr int kPlaneThreads = 256;
constexpr int kPlaneTileC = 32;

// The block's geometry: kCL (channels_last): kPlaneTileC channels, one per lane,
// kPlaneThreads / kPlaneTileC rows of positions; NCHW: one channel, every thread a row.
template <bool kCL>
struct PlaneBlock {
  static constexpr int kLanesC = kCL ? kPlaneTileC : 1;
  static constexpr int kRows = kPlaneThreads / kLanesC;
  int64_t b, c, row, offset, step;  // element p of the thread's channel: offset + p * step
  bool valid;
  __device__ PlaneBlock(int64_t C, int64_t HW) {
    b = blockIdx.y;
    c = static_cast<int64_t>(blockIdx.x) * kLanesC + threadIdx.x % kLanesC;
    row = threadIdx.x / kLanesC;
    valid = c < C;
    offset = kCL ? b * C * HW + c : (b * C + c) * HW;
    step = kCL ? C : 1;
  }
};

// Per (n, c): the mean and the sum of squared deviations over the H*W
// positions (per thread Welford, the rows merged in a fixed tree), given to
// store(nc, MeanM2).
template <bool kCL, typename scalar_t, typename acc_t, typename Store>
__global__ void plane_stats_kernel(const scalar_t* __restrict__ x, int64_t C, int64_t HW,
                                   Store store) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_count, [kPlaneThreads]);
  AK_SHARED(acc_t, s_mean, [kPlaneThreads]);
  AK_SHARED(acc_t, s_m2, [kPlaneThreads]);
  const Block pb(C, HW);
  MeanM2<acc_t> s;
  if (pb.valid) {
    for (int64_t p = pb.row; p < HW; p += Block::kRows) {  // Welford, one value at a time
      const acc_t v = static_cast<acc_t>(x[pb.offset + p * pb.step]);
      s.count += acc_t(1);
      const acc_t delta = v - s.mean;
      s.mean += delta / s.count;
      s.m2 += delta * (v - s.mean);
    }
  }
  s_count[threadIdx.x] = s.count;
  s_mean[threadIdx.x] = s.mean;
  s_m2[threadIdx.x] = s.m2;
  // Merge the rows pairwise, row r with row r + half: a fixed tree.
  for (int half = Block::kRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (pb.row < half) {
      const int other = threadIdx.x + half * Block::kLanesC;
      s.merge(s_count[other], s_mean[other], s_m2[other]);
      s_count[threadIdx.x] = s.count;
      s_mean[threadIdx.x] = s.mean;
      s_m2[threadIdx.x] = s.m2;
    }
  }
  if (pb.row == 0 && pb.valid) store(pb.b * C + pb.c, s);
}

template <bool kCL>
dim3 plane_grid(int64_t B, int64_t C) {
  return dim3(ceil_div(C, PlaneBlock<kCL>::kLanesC), static_cast<unsigned int>(B));
}

// The statistics pass over x (dense NCHW or channels_last), store(nc, MeanM2) per (n, c).
template <typename scalar_t, typename acc_t, typename Store>
void launch_plane_stats(const at::Tensor& x, const Store& store, cudaStream_t stream) {
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  if (is_channels_last(x))
    AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, plane_stats_kernel<true, scalar_t, acc_t, Store>)(
        xp, C, HW, store);
  else
    AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, plane_stats_kernel<false, scalar_t, acc_t, Store>)(
        xp, C, HW, store);
  AK_LAUNCH_CHECK();
}

}  // namespace
}  // namespace attnkernels
