// SimAM on CUDA (semantics in csrc/schemas/simam_schema.cpp).
//
// Forward: statistics (one read of x: per thread a running mean and sum of
// squared deviations, merged across the block in a fixed tree) -> apply: two
// launches. Backward: sums A and B and the per-(n, c) coefficients (one read
// of dy and x) -> apply: two launches. A block covers one (n, c) plane (NCHW)
// or kPlaneTileC channels of one sample (channels_last: lane = channel, the
// reads coalesced). No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/cuda_utils.cuh"
#include "../common/dispatch.h"
#include "../common/simam.h"
#include "plane_stats.cuh"

namespace attnkernels {
namespace {

constexpr int kSimAMApplyThreads = 256;

// SimAM's statistics: mean and denom per (n, c).
template <typename acc_t>
struct SimAMStore {
  int64_t HW;
  double e_lambda;
  acc_t *mean, *denom;
  __device__ void operator()(int64_t nc, const MeanM2<acc_t>& s) const {
    mean[nc] = s.mean;
    denom[nc] = simam_denom(s.m2, HW, e_lambda);
  }
};

// Backward sums A = sum t (x - mean), B = sum t d per (n, c), then the
// coefficients of the apply: coefs (N, C, 3) = (k1, k2, k3).
template <bool kCL, typename scalar_t, typename acc_t>
__global__ void simam_grad_sums_kernel(const scalar_t* __restrict__ x,
                                       const scalar_t* __restrict__ dy,
                                       const acc_t* __restrict__ mean,
                                       const acc_t* __restrict__ denom, int64_t C, int64_t HW,
                                       acc_t* __restrict__ coefs) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_a, [kPlaneThreads]);
  AK_SHARED(acc_t, s_b, [kPlaneThreads]);
  const Block pb(C, HW);
  acc_t a = 0, b = 0, mu = 0, den = 1;
  if (pb.valid) {
    mu = mean[pb.b * C + pb.c];
    den = denom[pb.b * C + pb.c];
    for (int64_t p = pb.row; p < HW; p += Block::kRows) {
      const int64_t i = pb.offset + p * pb.step;
      const acc_t v = static_cast<acc_t>(x[i]), dev = v - mu, s = simam_gate(dev, den);
      const acc_t t = static_cast<acc_t>(dy[i]) * v * s * (acc_t(1) - s);
      a += t * dev;
      b += t * (dev * dev);
    }
  }
  s_a[threadIdx.x] = a;
  s_b[threadIdx.x] = b;
  for (int half = Block::kRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (pb.row < half) {
      const int other = threadIdx.x + half * Block::kLanesC;
      a += s_a[other];
      b += s_b[other];
      s_a[threadIdx.x] = a;
      s_b[threadIdx.x] = b;
    }
  }
  if (pb.row == 0 && pb.valid) {
    const SimAMGradCoefs<acc_t> k(a, b, den, HW);
    acc_t* out = coefs + (pb.b * C + pb.c) * 3;
    out[0] = k.k1;
    out[1] = k.k2;
    out[2] = k.k3;
  }
}

// y = x * s; with kGrad (out = dx): dx = dy * s + (x - mean)(k1 t - k2) - k3.
template <bool kGrad, bool kCL, typename scalar_t, typename acc_t>
__global__ void simam_apply_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                   const acc_t* __restrict__ mean,
                                   const acc_t* __restrict__ denom,
                                   const acc_t* __restrict__ coefs, int64_t N, int64_t C,
                                   int64_t HW, scalar_t* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t nc = kCL ? (i / (C * HW)) * C + i % C : i / HW;
    const acc_t v = static_cast<acc_t>(x[i]), dev = v - mean[nc];
    const acc_t s = simam_gate(dev, denom[nc]);
    if (kGrad) {
      const acc_t g = static_cast<acc_t>(dy[i]), t = g * v * s * (acc_t(1) - s);
      const acc_t* k = coefs + nc * 3;
      out[i] = static_cast<scalar_t>(g * s + dev * (k[0] * t - k[1]) - k[2]);
    } else {
      out[i] = static_cast<scalar_t>(v * s);
    }
  }
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_apply(const at::Tensor& x, const scalar_t* dy, const acc_t* mean, const acc_t* denom,
                  const acc_t* coefs, at::Tensor& out, cudaStream_t stream) {
  const int64_t N = x.numel(), C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = grid_stride_blocks(N, kSimAMApplyThreads);
  if (is_channels_last(x))
    AK_LAUNCH(grid, kSimAMApplyThreads, 0, stream, simam_apply_kernel<kGrad, true, scalar_t, acc_t>)(
        x.data_ptr<scalar_t>(), dy, mean, denom, coefs, N, C, HW, out.data_ptr<scalar_t>());
  else
    AK_LAUNCH(grid, kSimAMApplyThreads, 0, stream, simam_apply_kernel<kGrad, false, scalar_t, acc_t>)(
        x.data_ptr<scalar_t>(), dy, mean, denom, coefs, N, C, HW, out.data_ptr<scalar_t>());
  AK_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> simam_forward_cuda(const at::Tensor& x,
                                                                  double e_lambda) {
  AK_DEVICE_GUARD(x);
  SimAMForwardOutputs out = simam_forward_outputs(x);
  if (x.numel() == 0) return {out.y, out.mean, out.denom};
  const int64_t HW = x.size(2) * x.size(3);
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "simam_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* mean = out.mean.data_ptr<acc_t>();
    acc_t* denom = out.denom.data_ptr<acc_t>();
    launch_plane_stats<scalar_t, acc_t>(x, SimAMStore<acc_t>{HW, e_lambda, mean, denom}, stream);
    launch_apply<false, scalar_t, acc_t>(x, nullptr, mean, denom, nullptr, out.y, stream);
  });
  return {out.y, out.mean, out.denom};
}

at::Tensor simam_backward_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                               const at::Tensor& denom) {
  AK_DEVICE_GUARD(x);
  check_simam_backward_args(dy, x, mean, denom);
  at::Tensor dx = empty_output_like(x);
  if (x.numel() == 0) return dx;
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const bool cl = is_channels_last(x);
  at::Tensor coefs = at::empty({B, C, 3}, mean.options());
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "simam_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    const acc_t* mp = mean.data_ptr<acc_t>();
    const acc_t* dp = denom.data_ptr<acc_t>();
    acc_t* kp = coefs.data_ptr<acc_t>();
    if (cl)
      AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, simam_grad_sums_kernel<true, scalar_t, acc_t>)(
          xp, dyp, mp, dp, C, HW, kp);
    else
      AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, simam_grad_sums_kernel<false, scalar_t, acc_t>)(
          xp, dyp, mp, dp, C, HW, kp);
    AK_LAUNCH_CHECK();
    launch_apply<true, scalar_t, acc_t>(x, dyp, mp, dp, kp, dx, stream);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_SIMAM_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
