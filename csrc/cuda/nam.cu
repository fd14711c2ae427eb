// NAM's channel attention on CUDA (semantics in csrc/schemas/nam_schema.cpp).
//
// Forward with batch statistics: per-(n, c) statistics (one read of x,
// plane_stats.cuh) -> per-channel merge and fold (one thread per channel, the
// samples in order) -> apply: three launches; with running statistics: fold
// -> apply, two. Backward: per-(n, c) sums S1, S2 (one read of dy and x) ->
// per-channel merge (dweight, dbias, the coefficients) -> apply: three
// launches, after the fold of the forward's values. No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common/cuda_utils.cuh"
#include "../common/dispatch.h"
#include "../common/nam.h"
#include "plane_stats.cuh"

namespace attnkernels {
namespace {

constexpr int kNAMChannelThreads = 256;
constexpr int kNAMApplyThreads = 256;

template <typename acc_t>
struct NAMStore {
  acc_t *mean, *m2;
  __device__ void operator()(int64_t nc, const MeanM2<acc_t>& s) const {
    mean[nc] = s.mean;
    m2[nc] = s.m2;
  }
};

// sum |gamma| over the C channels, the same fixed order in every block.
template <typename acc_t>
__device__ acc_t block_abs_sum(const acc_t* __restrict__ gamma, int64_t C) {
  AK_SHARED(acc_t, s_scratch, [kNAMChannelThreads / kWarp]);
  AK_SHARED(acc_t, s_total, [1]);
  acc_t v = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += gamma[c] < acc_t(0) ? -gamma[c] : gamma[c];
  v = block_reduce<false>(v, s_scratch);
  if (threadIdx.x == 0) s_total[0] = v;
  __syncthreads();
  return s_total[0];
}

// Per channel: with kBatch, the statistics from the per-(n, c) ones (m, m2)
// into mean, invstd and the unbiased var; then coefs (C, 2) = (a, b).
template <bool kBatch, typename acc_t>
__global__ void nam_fold_kernel(const acc_t* __restrict__ m, const acc_t* __restrict__ m2,
                                const acc_t* __restrict__ gamma, const acc_t* __restrict__ beta,
                                int64_t N, int64_t C, int64_t HW, double eps,
                                acc_t* __restrict__ mean, acc_t* __restrict__ invstd,
                                acc_t* __restrict__ var, acc_t* __restrict__ coefs) {
  const acc_t abs_sum = block_abs_sum(gamma, C);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  if (kBatch) {
    const NAMBatchStats<acc_t> s(m, m2, N, C, c, HW, eps);
    mean[c] = s.mean;
    invstd[c] = s.invstd;
    var[c] = s.unbiased;
  }
  const NAMChannel<acc_t> ch = nam_channel(mean[c], invstd[c], gamma[c], beta[c], abs_sum);
  coefs[c * 2] = ch.a;
  coefs[c * 2 + 1] = ch.b;
}

// Per (n, c): S1 = sum g, S2 = sum g (x - mean), g = dy x s (1 - s).
template <bool kCL, typename scalar_t, typename acc_t>
__global__ void nam_grad_sums_kernel(const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ dy,
                                     const acc_t* __restrict__ mean,
                                     const acc_t* __restrict__ coefs, int64_t C, int64_t HW,
                                     acc_t* __restrict__ s1, acc_t* __restrict__ s2) {
  using Block = PlaneBlock<kCL>;
  AK_SHARED(acc_t, s_1, [kPlaneThreads]);
  AK_SHARED(acc_t, s_2, [kPlaneThreads]);
  const Block pb(C, HW);
  acc_t t1 = 0, t2 = 0;
  if (pb.valid) {
    const NAMChannel<acc_t> ch{mean[pb.c], coefs[pb.c * 2], coefs[pb.c * 2 + 1]};
    for (int64_t p = pb.row; p < HW; p += Block::kRows) {
      const int64_t i = pb.offset + p * pb.step;
      const acc_t v = static_cast<acc_t>(x[i]), s = ch.gate(v);
      const acc_t g = static_cast<acc_t>(dy[i]) * v * s * (acc_t(1) - s);
      t1 += g;
      t2 += g * (v - ch.mean);
    }
  }
  s_1[threadIdx.x] = t1;
  s_2[threadIdx.x] = t2;
  for (int half = Block::kRows / 2; half > 0; half /= 2) {
    __syncthreads();
    if (pb.row < half) {
      const int other = threadIdx.x + half * Block::kLanesC;
      t1 += s_1[other];
      t2 += s_2[other];
      s_1[threadIdx.x] = t1;
      s_2[threadIdx.x] = t2;
    }
  }
  if (pb.row == 0 && pb.valid) {
    s1[pb.b * C + pb.c] = t1;
    s2[pb.b * C + pb.c] = t2;
  }
}

// Per channel: S1, S2 over the samples in order -> dgamma, dbeta and
// (k2, k3) into coefs[C * 2 + c * 2 ...].
template <typename acc_t>
__global__ void nam_grad_fold_kernel(const acc_t* __restrict__ s1, const acc_t* __restrict__ s2,
                                     const acc_t* __restrict__ mean,
                                     const acc_t* __restrict__ invstd,
                                     const acc_t* __restrict__ gamma, int64_t N, int64_t C,
                                     int64_t HW, bool batch, acc_t* __restrict__ coefs,
                                     acc_t* __restrict__ dgamma, acc_t* __restrict__ dbeta) {
  const acc_t abs_sum = block_abs_sum(gamma, C);
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const NAMChannel<acc_t> ch{mean[c], coefs[c * 2], coefs[c * 2 + 1]};
  const NAMGradCoefs<acc_t> k(s1, s2, N, C, c, HW, ch, invstd[c], gamma[c], abs_sum, batch);
  dgamma[c] = k.dgamma;
  dbeta[c] = k.dbeta;
  coefs[C * 2 + c * 2] = k.k2;
  coefs[C * 2 + c * 2 + 1] = k.k3;
}

// y = x * s; with kGrad (out = dx): dx = dy * s + a g - k2 (x - mean) - k3.
template <bool kGrad, bool kCL, typename scalar_t, typename acc_t>
__global__ void nam_apply_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                 const acc_t* __restrict__ mean, const acc_t* __restrict__ coefs,
                                 int64_t N, int64_t C, int64_t HW, scalar_t* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = kCL ? i % C : (i / HW) % C;
    const NAMChannel<acc_t> ch{mean[c], coefs[c * 2], coefs[c * 2 + 1]};
    const acc_t v = static_cast<acc_t>(x[i]), s = ch.gate(v);
    if (kGrad) {
      const acc_t d = static_cast<acc_t>(dy[i]), g = d * v * s * (acc_t(1) - s);
      out[i] = static_cast<scalar_t>(d * s + ch.a * g - coefs[C * 2 + c * 2] * (v - ch.mean) -
                                     coefs[C * 2 + c * 2 + 1]);
    } else {
      out[i] = static_cast<scalar_t>(v * s);
    }
  }
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_apply(const at::Tensor& x, const scalar_t* dy, const acc_t* mean, const acc_t* coefs,
                  at::Tensor& out, cudaStream_t stream) {
  const int64_t N = x.numel(), C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = grid_stride_blocks(N, kNAMApplyThreads);
  if (is_channels_last(x))
    AK_LAUNCH(grid, kNAMApplyThreads, 0, stream, nam_apply_kernel<kGrad, true, scalar_t, acc_t>)(
        x.data_ptr<scalar_t>(), dy, mean, coefs, N, C, HW, out.data_ptr<scalar_t>());
  else
    AK_LAUNCH(grid, kNAMApplyThreads, 0, stream, nam_apply_kernel<kGrad, false, scalar_t, acc_t>)(
        x.data_ptr<scalar_t>(), dy, mean, coefs, N, C, HW, out.data_ptr<scalar_t>());
  AK_LAUNCH_CHECK();
}

// The fold: (a, b) per channel into coefs, after the batch statistics (m, m2 given).
template <typename acc_t>
void launch_fold(const acc_t* m, const acc_t* m2, const at::Tensor& gamma,
                 const at::Tensor& beta, int64_t N, int64_t C, int64_t HW, double eps,
                 acc_t* mean, acc_t* invstd, acc_t* var, acc_t* coefs, cudaStream_t stream) {
  const unsigned int grid = ceil_div(C, kNAMChannelThreads);
  if (m != nullptr)
    AK_LAUNCH(grid, kNAMChannelThreads, 0, stream, nam_fold_kernel<true, acc_t>)(
        m, m2, gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(), N, C, HW, eps, mean, invstd, var,
        coefs);
  else
    AK_LAUNCH(grid, kNAMChannelThreads, 0, stream, nam_fold_kernel<false, acc_t>)(
        m, m2, gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(), N, C, HW, eps, mean, invstd, var,
        coefs);
  AK_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nam_forward_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    double eps) {
  AK_DEVICE_GUARD(x);
  check_nam_params(x, weight, bias);
  check_running(x, running_mean, running_var);
  const bool batch = !running_mean.has_value();
  NAMForwardOutputs out = nam_forward_outputs(x, batch);
  if (!batch) {
    out.mean.copy_(*running_mean);
    out.invstd.copy_(running_var->to(out.invstd.scalar_type()).add(eps).rsqrt());
  }
  if (x.numel() == 0) return {out.y, out.mean, out.invstd, out.var};
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const at::Tensor gamma = nam_acc(x, weight), beta = nam_acc(x, bias);
  at::Tensor coefs = at::empty({2, C, 2}, out.mean.options());
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "nam_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* mean = out.mean.data_ptr<acc_t>();
    acc_t* invstd = out.invstd.data_ptr<acc_t>();
    at::Tensor m, m2;
    if (batch) {
      m = at::empty({B, C}, out.mean.options());
      m2 = at::empty({B, C}, out.mean.options());
      launch_plane_stats<scalar_t, acc_t>(
          x, NAMStore<acc_t>{m.data_ptr<acc_t>(), m2.data_ptr<acc_t>()}, stream);
    }
    launch_fold<acc_t>(batch ? m.data_ptr<acc_t>() : nullptr,
                       batch ? m2.data_ptr<acc_t>() : nullptr, gamma, beta, B, C, HW, eps, mean,
                       invstd, batch ? out.var.data_ptr<acc_t>() : nullptr,
                       coefs.data_ptr<acc_t>(), stream);
    launch_apply<false, scalar_t, acc_t>(x, nullptr, mean, coefs.data_ptr<acc_t>(), out.y, stream);
  });
  return {out.y, out.mean, out.invstd, out.var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nam_backward_cuda(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& invstd, bool batch) {
  AK_DEVICE_GUARD(x);
  check_nam_backward_args(dy, x, weight, bias, mean, invstd);
  at::Tensor dx = empty_output_like(x);
  const at::Tensor gamma = nam_acc(x, weight), beta = nam_acc(x, bias);
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor dgamma = at::zeros({C}, gamma.options()), dbeta = at::zeros({C}, gamma.options());
  if (x.numel() != 0) {
    at::Tensor coefs = at::empty({2, C, 2}, gamma.options());
    at::Tensor s1 = at::empty({B, C}, gamma.options()), s2 = at::empty({B, C}, gamma.options());
    const cudaStream_t stream = AK_CURRENT_STREAM();
    AK_DISPATCH(x, "nam_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* dyp = dy.data_ptr<scalar_t>();
      acc_t* mp = const_cast<acc_t*>(mean.data_ptr<acc_t>());
      acc_t* ip = const_cast<acc_t*>(invstd.data_ptr<acc_t>());
      acc_t* kp = coefs.data_ptr<acc_t>();
      launch_fold<acc_t>(nullptr, nullptr, gamma, beta, B, C, HW, 0.0, mp, ip, nullptr, kp,
                         stream);  // reads mean and invstd, writes (a, b) alone
      if (is_channels_last(x))
        AK_LAUNCH(plane_grid<true>(B, C), kPlaneThreads, 0, stream, nam_grad_sums_kernel<true, scalar_t, acc_t>)(
            xp, dyp, mp, kp, C, HW, s1.data_ptr<acc_t>(), s2.data_ptr<acc_t>());
      else
        AK_LAUNCH(plane_grid<false>(B, C), kPlaneThreads, 0, stream, nam_grad_sums_kernel<false, scalar_t, acc_t>)(
            xp, dyp, mp, kp, C, HW, s1.data_ptr<acc_t>(), s2.data_ptr<acc_t>());
      AK_LAUNCH_CHECK();
      AK_LAUNCH(ceil_div(C, kNAMChannelThreads), kNAMChannelThreads, 0, stream, nam_grad_fold_kernel<acc_t>)(
          s1.data_ptr<acc_t>(), s2.data_ptr<acc_t>(), mp, ip, gamma.data_ptr<acc_t>(), B, C, HW,
          batch, kp, dgamma.data_ptr<acc_t>(), dbeta.data_ptr<acc_t>());
      AK_LAUNCH_CHECK();
      launch_apply<true, scalar_t, acc_t>(x, dyp, mp, kp, dx, stream);
    });
  }
  return {dx, dgamma.to(weight.scalar_type()), dbeta.to(bias.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_NAM_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
