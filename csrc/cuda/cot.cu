// CoT attention's softmax gate on CUDA (semantics in csrc/schemas/cot_schema.cpp).
//
// Forward: statistics (per (n, c): the max of att, then the sum of
// exp(att - max), each merged across the block in a fixed tree: two reads of
// the plane) -> apply (y = k1 + w v): two launches. Backward: r = sum w dy v
// per (n, c) -> apply (datt, dv): two launches. A block covers one (n, c)
// plane (NCHW) or kPlaneTileC channels of one sample (channels_last: lane =
// channel, the reads coalesced). No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/cot.h"
#include "../common/cuda_utils.cuh"
#include "../common/dispatch.h"
#include "plane_stats.cuh"

namespace attnkernels {
namespace {

constexpr int kCoTApplyThreads = 256;

// Merges the block's rows of value (kMax: NaN-propagating max, else sum) in a
// fixed tree, row r with row r + half; returns the plane's result to every
// thread of its channel.
template <bool kCL, bool kMax, typename acc_t>
__device__ acc_t rows_reduce(acc_t value, acc_t* s_rows) {
  using Block = PlaneBlock<kCL>;
  const int row = threadIdx.x / Block::kLanesC;
  __syncthreads();  // s_rows may still be read from a previous call
  s_rows[threadIdx.x] = value;
  for (int half = Block::kRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (row < half) {
      const acc_t other = s_rows[threadIdx.x + half * Block::kLanesC];
      value = kMax ? max_nan(value, other) : value + other;
      s_rows[threadIdx.x] = value;
    }
  }
  __syncthreads();
  return s_rows[threadIdx.x % Block::kLanesC];
}

// Per (n, c): max and inv_sum (forward), or r = sum w dy v (backward, kGrad).
template <bool kGrad, bool kCL, typename scalar_t, typename acc_t>
__global__ void cot_reduce_kernel(const scalar_t* __restrict__ att,
                                  const scalar_t* __restrict__ v,
                                  const scalar_t* __restrict__ dy, int64_t C, int64_t HW,
                                  acc_t* __restrict__ max, acc_t* __restrict__ inv_sum,
                                  acc_t* __restrict__ r) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_rows, [kPlaneThreads]);
  const Block pb(C, HW);
  const int64_t nc = pb.b * C + pb.c;
  acc_t m = static_cast<acc_t>(-INFINITY), inv = 0;
  if (kGrad) {
    if (pb.valid) {
      m = max[nc];
      inv = inv_sum[nc];
    }
  } else {
    if (pb.valid)
      for (int64_t p = pb.row; p < HW; p += Block::kRows)
        m = max_nan(m, static_cast<acc_t>(att[pb.offset + p * pb.step]));
    m = rows_reduce<kCL, true>(m, s_rows);
  }
  acc_t s = 0;
  if (pb.valid) {
    for (int64_t p = pb.row; p < HW; p += Block::kRows) {
      const int64_t i = pb.offset + p * pb.step;
      if (kGrad)
        s += cot_weight(static_cast<acc_t>(att[i]), m, inv) *
             (static_cast<acc_t>(dy[i]) * static_cast<acc_t>(v[i]));
      else
        s += std::exp(static_cast<acc_t>(att[i]) - m);
    }
  }
  s = rows_reduce<kCL, false>(s, s_rows);
  if (pb.row == 0 && pb.valid) {
    if (kGrad) {
      r[nc] = s;
    } else {
      max[nc] = m;
      inv_sum[nc] = acc_t(1) / s;
    }
  }
}

// Forward: y = k1 + w v (out); backward (kGrad): datt = w (dy v - r) (out), dv = dy w (out2).
template <bool kGrad, bool kCL, typename scalar_t, typename acc_t>
__global__ void cot_apply_kernel(const scalar_t* __restrict__ att, const scalar_t* __restrict__ v,
                                 const scalar_t* __restrict__ other,  // k1, or dy
                                 const acc_t* __restrict__ max, const acc_t* __restrict__ inv_sum,
                                 const acc_t* __restrict__ r, int64_t N, int64_t C, int64_t HW,
                                 scalar_t* __restrict__ out, scalar_t* __restrict__ out2) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t nc = kCL ? (i / (C * HW)) * C + i % C : i / HW;
    const acc_t w = cot_weight(static_cast<acc_t>(att[i]), max[nc], inv_sum[nc]);
    const acc_t vi = static_cast<acc_t>(v[i]), o = static_cast<acc_t>(other[i]);
    if (kGrad) {
      out[i] = static_cast<scalar_t>(w * (o * vi - r[nc]));
      out2[i] = static_cast<scalar_t>(o * w);
    } else {
      out[i] = static_cast<scalar_t>(o + w * vi);
    }
  }
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch(const at::Tensor& att, const scalar_t* v, const scalar_t* other, acc_t* max,
            acc_t* inv_sum, acc_t* r, scalar_t* out, scalar_t* out2, cudaStream_t stream) {
  const int64_t N = att.numel(), B = att.size(0), C = att.size(1);
  const int64_t HW = att.size(2) * att.size(3);
  const scalar_t* a = att.data_ptr<scalar_t>();
  const scalar_t* dy = kGrad ? other : nullptr;
  const unsigned int grid = grid_stride_blocks(N, kCoTApplyThreads);
  if (is_channels_last(att)) {
    AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, cot_reduce_kernel<kGrad, true, scalar_t, acc_t>)(
        a, v, dy, C, HW, max, inv_sum, r);
    AK_LAUNCH_CHECK();
    AK_LAUNCH(grid, kCoTApplyThreads, 0, stream, cot_apply_kernel<kGrad, true, scalar_t, acc_t>)(
        a, v, other, max, inv_sum, r, N, C, HW, out, out2);
  } else {
    AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, cot_reduce_kernel<kGrad, false, scalar_t, acc_t>)(
        a, v, dy, C, HW, max, inv_sum, r);
    AK_LAUNCH_CHECK();
    AK_LAUNCH(grid, kCoTApplyThreads, 0, stream, cot_apply_kernel<kGrad, false, scalar_t, acc_t>)(
        a, v, other, max, inv_sum, r, N, C, HW, out, out2);
  }
  AK_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cot_forward_cuda(const at::Tensor& att,
                                                                const at::Tensor& v,
                                                                const at::Tensor& k1) {
  AK_DEVICE_GUARD(att);
  CoTForwardOutputs out = cot_forward_outputs(att, v, k1);
  if (att.numel() == 0) return {out.y, out.max, out.inv_sum};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(att, "cot_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch<false, scalar_t, acc_t>(att, v.data_ptr<scalar_t>(), k1.data_ptr<scalar_t>(),
                                   out.max.data_ptr<acc_t>(), out.inv_sum.data_ptr<acc_t>(),
                                   nullptr, out.y.data_ptr<scalar_t>(), nullptr, stream);
  });
  return {out.y, out.max, out.inv_sum};
}

std::tuple<at::Tensor, at::Tensor> cot_backward_cuda(const at::Tensor& dy, const at::Tensor& att,
                                                     const at::Tensor& v, const at::Tensor& max,
                                                     const at::Tensor& inv_sum) {
  AK_DEVICE_GUARD(att);
  check_cot_backward_args(dy, att, v, max, inv_sum);
  at::Tensor datt = empty_output_like(att), dv = empty_output_like(att);
  if (att.numel() == 0) return {datt, dv};
  at::Tensor r = at::empty({max.size(0), max.size(1)}, max.options());
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(att, "cot_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch<true, scalar_t, acc_t>(att, v.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                  const_cast<acc_t*>(max.data_ptr<acc_t>()),
                                  const_cast<acc_t*>(inv_sum.data_ptr<acc_t>()),
                                  r.data_ptr<acc_t>(), datt.data_ptr<scalar_t>(),
                                  dv.data_ptr<scalar_t>(), stream);
  });
  return {datt, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_COT_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
