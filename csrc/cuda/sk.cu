// Selective Kernel attention on CUDA (semantics in csrc/schemas/sk_schema.cpp).
//
// Pool: one launch, one read of each branch. Select forward: one launch, the
// softmax over the branches per element from the (B, K, C) logits, one read
// of each branch and a write of y. Select backward: one launch, one read of
// dy and of each branch: each branch's gradient written and g_k = sum_hw dy *
// branch_k summed in the same loop, merged across the block in a fixed tree,
// then the logits' gradient. A block covers one (n, c) plane (NCHW) or
// kPlaneTileC channels of one sample (channels_last; plane_stats.cuh's
// geometry). The branches' pointers travel by value. No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <limits>

#include "../common/cuda_utils.cuh"
#include "../common/dispatch.h"
#include "../common/sk.h"
#include "plane_stats.cuh"

namespace attnkernels {
namespace {

constexpr int kSKApplyThreads = 256;

// Every loop over the branches runs to kSKMaxBranches, unrolled, with k < K
// guarding the work: the per-branch values stay in registers and the
// branches' pointers are read at fixed offsets (no local-memory copies).

// a[k] = softmax over k < K of l[k * C] (a[k] = 0 beyond): softmax_over's order.
template <typename acc_t>
__device__ __forceinline__ void softmax_regs(const acc_t* __restrict__ l, int K, int64_t C,
                                             acc_t (&a)[kSKMaxBranches]) {
  acc_t m = l[0];
#pragma unroll
  for (int k = 1; k < kSKMaxBranches; ++k)
    if (k < K) m = max_nan(m, l[k * C]);
  acc_t sum = 0;
#pragma unroll
  for (int k = 0; k < kSKMaxBranches; ++k) {
    a[k] = k < K ? static_cast<acc_t>(std::exp(l[k * C] - m)) : acc_t(0);
    sum += a[k];
  }
#pragma unroll
  for (int k = 0; k < kSKMaxBranches; ++k) a[k] /= sum;
}

template <bool kCL, typename scalar_t, typename acc_t>
__global__ void sk_pool_kernel(BranchPtrs<scalar_t> f, int K, int64_t C, int64_t HW,
                               scalar_t* __restrict__ s) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_sum, [kPlaneThreads]);
  const Block pb(C, HW);
  acc_t t = 0;
  if (pb.valid) {
#pragma unroll
    for (int k = 0; k < kSKMaxBranches; ++k)
      if (k < K)
        for (int64_t p = pb.row; p < HW; p += Block::kRows)
          t += static_cast<acc_t>(f.p[k][pb.offset + p * pb.step]);
  }
  s_sum[threadIdx.x] = t;
  for (int half = Block::kRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (pb.row < half) {
      t += s_sum[threadIdx.x + half * Block::kLanesC];
      s_sum[threadIdx.x] = t;
    }
  }
  if (pb.row == 0 && pb.valid) s[pb.b * C + pb.c] = static_cast<scalar_t>(t / static_cast<acc_t>(HW));
}

// y = sum_k a_k branch_k, a the softmax of logits[b, :, c] (per element).
template <bool kCL, typename scalar_t, typename acc_t>
__global__ void sk_select_kernel(BranchPtrs<scalar_t> f, const acc_t* __restrict__ l, int K,
                                 int64_t N, int64_t C, int64_t HW, scalar_t* __restrict__ y) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (C * HW), c = kCL ? i % C : (i / HW) % C;
    acc_t a[kSKMaxBranches];
    softmax_regs(l + b * K * C + c, K, C, a);
    acc_t v = 0;
#pragma unroll
    for (int k = 0; k < kSKMaxBranches; ++k)
      if (k < K) v += a[k] * static_cast<acc_t>(f.p[k][i]);
    y[i] = static_cast<scalar_t>(v);
  }
}

// dbranch_k = a_k dy and g_k = sum_hw dy * branch_k per (b, c), then
// dlogits_k = a_k (g_k - sum_j a_j g_j).
template <bool kCL, typename scalar_t, typename acc_t>
__global__ void sk_select_grad_kernel(BranchPtrs<scalar_t> f, BranchOutPtrs<scalar_t> df,
                                      const scalar_t* __restrict__ dy,
                                      const acc_t* __restrict__ l, int K, int64_t C, int64_t HW,
                                      acc_t* __restrict__ dl) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_g, [kPlaneThreads]);
  const Block pb(C, HW);
  acc_t a[kSKMaxBranches], g[kSKMaxBranches];
#pragma unroll
  for (int k = 0; k < kSKMaxBranches; ++k) a[k] = g[k] = 0;
  const int64_t row = pb.b * K * C + pb.c;
  if (pb.valid) {
    softmax_regs(l + row, K, C, a);
    for (int64_t p = pb.row; p < HW; p += Block::kRows) {
      const int64_t i = pb.offset + p * pb.step;
      const acc_t d = static_cast<acc_t>(dy[i]);
#pragma unroll
      for (int k = 0; k < kSKMaxBranches; ++k) {
        if (k < K) {
          df.p[k][i] = static_cast<scalar_t>(a[k] * d);
          g[k] += d * static_cast<acc_t>(f.p[k][i]);
        }
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kSKMaxBranches; ++k) {  // each g_k merged in the same fixed tree
    if (k < K) {
      __syncthreads();
      s_g[threadIdx.x] = g[k];
      for (int half = Block::kRows / 2; half > 0; half /= 2) {
        __syncthreads();
        if (pb.row < half) {
          g[k] += s_g[threadIdx.x + half * Block::kLanesC];
          s_g[threadIdx.x] = g[k];
        }
      }
    }
  }
  if (pb.row == 0 && pb.valid) {  // dlogits_k = a_k (g_k - sum_j a_j g_j)
    acc_t dot = 0;
#pragma unroll
    for (int k = 0; k < kSKMaxBranches; ++k) dot += a[k] * g[k];
#pragma unroll
    for (int k = 0; k < kSKMaxBranches; ++k)
      if (k < K) dl[row + k * C] = a[k] * (g[k] - dot);
  }
}

at::Tensor sk_pool_cuda(at::TensorList branches) {
  check_sk_branches(branches);
  const at::Tensor& x = branches[0];
  AK_DEVICE_GUARD(x);
  at::Tensor s = at::empty({x.size(0), x.size(1)}, x.options());
  if (s.numel() == 0) return s;
  if (x.numel() == 0) return s.fill_(std::numeric_limits<double>::quiet_NaN());  // as torch.mean
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const int K = static_cast<int>(branches.size());
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "sk_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const BranchPtrs<scalar_t> f = branch_ptrs<scalar_t>(branches);
    if (is_channels_last(x))
      AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, sk_pool_kernel<true, scalar_t, acc_t>)(
          f, K, C, HW, s.data_ptr<scalar_t>());
    else
      AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, sk_pool_kernel<false, scalar_t, acc_t>)(
          f, K, C, HW, s.data_ptr<scalar_t>());
    AK_LAUNCH_CHECK();
  });
  return s;
}

at::Tensor sk_forward_cuda(at::TensorList branches, const at::Tensor& logits) {
  check_sk_branches(branches);
  const at::Tensor& x = branches[0];
  AK_DEVICE_GUARD(x);
  const at::Tensor l = sk_logits_acc(branches, logits);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const int64_t N = x.numel(), C = x.size(1), HW = x.size(2) * x.size(3);
  const int K = static_cast<int>(branches.size());
  const unsigned int grid = grid_stride_blocks(N, kSKApplyThreads);
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "sk_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const BranchPtrs<scalar_t> f = branch_ptrs<scalar_t>(branches);
    if (is_channels_last(x))
      AK_LAUNCH(grid, kSKApplyThreads, 0, stream, sk_select_kernel<true, scalar_t, acc_t>)(
          f, l.data_ptr<acc_t>(), K, N, C, HW, y.data_ptr<scalar_t>());
    else
      AK_LAUNCH(grid, kSKApplyThreads, 0, stream, sk_select_kernel<false, scalar_t, acc_t>)(
          f, l.data_ptr<acc_t>(), K, N, C, HW, y.data_ptr<scalar_t>());
    AK_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> sk_backward_cuda(
    const at::Tensor& dy, at::TensorList branches, const at::Tensor& logits) {
  check_sk_branches(branches);
  const at::Tensor& x = branches[0];
  AK_DEVICE_GUARD(x);
  const at::Tensor l = sk_logits_acc(branches, logits);
  check_grad_like_x(dy, x, "dy");
  std::vector<at::Tensor> dbranches = sk_branch_grads(branches);
  at::Tensor dl = at::zeros_like(l);
  if (x.numel() != 0) {
    const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
    const int K = static_cast<int>(branches.size());
    const cudaStream_t stream = AK_CURRENT_STREAM();
    AK_DISPATCH(x, "sk_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const BranchPtrs<scalar_t> f = branch_ptrs<scalar_t>(branches);
      const BranchOutPtrs<scalar_t> df = branch_out_ptrs<scalar_t>(dbranches);
      if (is_channels_last(x))
        AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, sk_select_grad_kernel<true, scalar_t, acc_t>)(
            f, df, dy.data_ptr<scalar_t>(), l.data_ptr<acc_t>(), K, C, HW, dl.data_ptr<acc_t>());
      else
        AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, sk_select_grad_kernel<false, scalar_t, acc_t>)(
            f, df, dy.data_ptr<scalar_t>(), l.data_ptr<acc_t>(), K, C, HW, dl.data_ptr<acc_t>());
      AK_LAUNCH_CHECK();
    });
  }
  return {dbranches, dl.to(logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_SK_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
