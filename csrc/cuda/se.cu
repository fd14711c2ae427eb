// Squeeze-and-Excitation on CUDA.
//
// Forward: reduce (one read of x) -> per-sample gate network -> apply (read x,
// write y): three launches. Backward: reduce sum(dy * x) -> per-sample gate
// backward -> apply (read dy, x; write dx): three launches. No atomics: every
// reduction is a fixed-order block reduction, so results are deterministic.
// Light headers only (torch/extension.h costs minutes per .cu file).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../common/cuda_utils.cuh"
#include "../common/se.h"

namespace attnkernels {
namespace {

constexpr int kReduceThreads = 256;
constexpr int kGateThreads = 256;
constexpr int kApplyThreads = 256;
constexpr int kTileC = 32;  // channels_last reduce: channels per block (one per lane)

// Forward (kGrad = false): out0 = mean (0.5*mean + 0.5*max with kMax), out1 = max.
// Backward (kGrad = true): out0 = sum(dy * x), out1 = count of x == xmax.
template <bool kGrad, bool kMax, typename acc_t>
__device__ __forceinline__ void write_stats(int64_t nc, acc_t sum, acc_t aux, int64_t HW,
                                           acc_t* out0, acc_t* out1) {
  if (kGrad) {
    out0[nc] = sum;
    if (kMax) out1[nc] = aux;
  } else {
    acc_t mean = sum / static_cast<acc_t>(HW);
    if (kMax) {
      out1[nc] = aux;
      mean = acc_t(0.5) * mean + acc_t(0.5) * aux;
    }
    out0[nc] = mean;
  }
}

// NCHW: one block per (n, c) plane.
template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
__global__ void se_reduce_nchw_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                      const acc_t* __restrict__ xmax, int64_t HW,
                                      acc_t* __restrict__ out0, acc_t* __restrict__ out1) {
  __shared__ acc_t scratch[kReduceThreads / kWarp];
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
  if (threadIdx.x == 0) write_stats<kGrad, kMax>(nc, sum, aux, HW, out0, out1);
}

// channels_last: a block covers kTileC channels of one sample; lane = channel,
// warp = a slice of positions; the warps' partials are combined in shared memory
// in a fixed order.
template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
__global__ void se_reduce_nhwc_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                                      const acc_t* __restrict__ xmax, int64_t C, int64_t HW,
                                      acc_t* __restrict__ out0, acc_t* __restrict__ out1) {
  constexpr int kRows = kReduceThreads / kTileC;
  __shared__ acc_t ssum[kRows][kTileC];
  __shared__ acc_t saux[kRows][kTileC];
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
    write_stats<kGrad, kMax>(n * C + c, sum, aux, HW, out0, out1);
  }
}

// The gate network's weights, in the accumulate type.
template <typename acc_t>
struct GateWeights {
  const acc_t *w1, *b1, *w2, *b2;
  int64_t C, R;
  int act, gate;
};

// h = W1 s + b1 (rows R of w1) into h[]; one warp per row, lanes over C.
template <typename acc_t>
__device__ void gate_dense(const acc_t* __restrict__ w, const acc_t* __restrict__ bias,
                           const acc_t* in, int64_t rows, int64_t cols, acc_t* out) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nwarps = blockDim.x / kWarp;
  for (int64_t r = warp; r < rows; r += nwarps) {
    acc_t acc = 0;
    for (int64_t k = lane; k < cols; k += kWarp) acc += w[r * cols + k] * in[k];
    acc = warp_sum(acc);
    if (lane == 0) out[r] = acc + (bias ? bias[r] : acc_t(0));
  }
}

// One block per sample: z = W2 act(W1 s + b1) + b2 (or W1 s + b1), g = gate(z).
// Shared memory: s[C], a[R], z[C].
template <typename acc_t>
__global__ void se_gate_kernel(const acc_t* __restrict__ pooled, GateWeights<acc_t> w,
                               acc_t* __restrict__ g) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* a = s + w.C;
  acc_t* z = a + w.R;
  const int64_t n = blockIdx.x;
  for (int64_t c = threadIdx.x; c < w.C; c += blockDim.x) s[c] = pooled[n * w.C + c];
  __syncthreads();
  if (w.w2) {
    gate_dense(w.w1, w.b1, s, w.R, w.C, a);
    __syncthreads();
    for (int64_t r = threadIdx.x; r < w.R; r += blockDim.x) a[r] = activation_forward(a[r], w.act);
    __syncthreads();
    gate_dense(w.w2, w.b2, a, w.C, w.R, z);
  } else {
    gate_dense(w.w1, w.b1, s, w.C, w.C, z);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < w.C; c += blockDim.x) g[n * w.C + c] = gate_forward(z[c], w.gate);
}

// One block per sample: recompute the gate network, then dz = dg * gate'(z),
// dh = (W2^T dz) * act'(h), ds = W1^T dh (or W1^T dz), and the per-(n, c)
// gradients the apply pass spreads over H*W. Shared: s[C], h[R], a[R], z[C], dz[C], dh[R].
template <typename acc_t>
__global__ void se_gate_backward_kernel(const acc_t* __restrict__ pooled,
                                        const acc_t* __restrict__ dg,
                                        const acc_t* __restrict__ count, GateWeights<acc_t> w,
                                        acc_t mean_scale, acc_t* __restrict__ g,
                                        acc_t* __restrict__ dz_out, acc_t* __restrict__ dh_out,
                                        acc_t* __restrict__ dmean, acc_t* __restrict__ dmax) {
  extern __shared__ unsigned char smem_raw[];
  const int64_t C = w.C, R = w.R, n = blockIdx.x;
  acc_t* s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* h = s + C;
  acc_t* a = h + R;
  acc_t* z = a + R;
  acc_t* dz = z + C;
  acc_t* dh = dz + C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s[c] = pooled[n * C + c];
  __syncthreads();
  if (w.w2) {
    gate_dense(w.w1, w.b1, s, R, C, h);
    __syncthreads();
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) a[r] = activation_forward(h[r], w.act);
    __syncthreads();
    gate_dense(w.w2, w.b2, a, C, R, z);
  } else {
    gate_dense(w.w1, w.b1, s, C, C, z);
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    g[n * C + c] = gate_forward(z[c], w.gate);
    dz[c] = dg[n * C + c] * gate_grad(z[c], w.gate);
    dz_out[n * C + c] = dz[c];
  }
  __syncthreads();
  const acc_t* wl = w.w2 ? w.w2 : w.w1;  // the layer that produced z: (C, nin)
  const int64_t nin = w.w2 ? R : C;
  acc_t* din = w.w2 ? dh : s;  // s is no longer needed once z is known
  __syncthreads();
  for (int64_t k = threadIdx.x; k < nin; k += blockDim.x) {
    acc_t acc = 0;
    for (int64_t c = 0; c < C; ++c) acc += dz[c] * wl[c * nin + k];
    din[k] = acc;
  }
  __syncthreads();
  if (w.w2) {
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      dh[r] *= activation_grad(h[r], w.act);
      dh_out[n * R + r] = dh[r];
    }
    __syncthreads();
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      acc_t acc = 0;
      for (int64_t r = 0; r < R; ++r) acc += dh[r] * w.w1[r * C + c];
      s[c] = acc;
    }
    __syncthreads();
  }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    dmean[n * C + c] = s[c] * mean_scale;
    if (dmax) dmax[n * C + c] = acc_t(0.5) * s[c] / count[n * C + c];
  }
}

// Forward: out = x * g[n, c]. Backward (kGrad): out = dy * g + dmean + (x == xmax) * dmax.
template <bool kGrad, bool kMax, bool kChannelsLast, typename scalar_t, typename acc_t>
__global__ void se_apply_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
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

template <typename acc_t>
GateWeights<acc_t> gate_weights(const SEWeights& w, int64_t C, int64_t act, int64_t gate) {
  return {w.w1.data_ptr<acc_t>(), data_or_null<acc_t>(w.b1), data_or_null<acc_t>(w.w2),
          data_or_null<acc_t>(w.b2), C, w.reduced, static_cast<int>(act), static_cast<int>(gate)};
}

template <typename acc_t>
size_t gate_smem(int64_t C, int64_t R, int64_t nC, int64_t nR) {
  const size_t bytes = sizeof(acc_t) * (nC * C + nR * R);
  TORCH_CHECK(bytes <= 48 * 1024, "attnkernels SE on CUDA: the gate network of C=", C,
              ", reduced=", R, " needs ", bytes, " bytes of shared memory per sample (limit 49152)");
  return bytes;
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_reduce(const at::Tensor& x, const at::Tensor* dy, const acc_t* xmax, bool has_max,
                   acc_t* out0, acc_t* out1, cudaStream_t stream) {
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy ? dy->data_ptr<scalar_t>() : nullptr;
  if (is_channels_last(x)) {
    const dim3 grid(ceil_div(C, kTileC), static_cast<unsigned int>(B));
    if (has_max)
      se_reduce_nhwc_kernel<kGrad, true, scalar_t, acc_t><<<grid, kReduceThreads, 0, stream>>>(
          xp, dyp, xmax, C, HW, out0, out1);
    else
      se_reduce_nhwc_kernel<kGrad, false, scalar_t, acc_t><<<grid, kReduceThreads, 0, stream>>>(
          xp, dyp, xmax, C, HW, out0, out1);
  } else {
    const unsigned int grid = static_cast<unsigned int>(B * C);
    if (has_max)
      se_reduce_nchw_kernel<kGrad, true, scalar_t, acc_t><<<grid, kReduceThreads, 0, stream>>>(
          xp, dyp, xmax, HW, out0, out1);
    else
      se_reduce_nchw_kernel<kGrad, false, scalar_t, acc_t><<<grid, kReduceThreads, 0, stream>>>(
          xp, dyp, xmax, HW, out0, out1);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kGrad, bool kMax, typename scalar_t, typename acc_t>
void launch_apply(const at::Tensor& x, const scalar_t* dy, const acc_t* g, const acc_t* dmean,
                  const acc_t* xmax, const acc_t* dmax, at::Tensor& out, cudaStream_t stream) {
  const int64_t N = x.numel(), C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = std::min<int64_t>(ceil_div(N, kApplyThreads), 65535LL * 32);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  if (is_channels_last(x))
    se_apply_kernel<kGrad, kMax, true, scalar_t, acc_t><<<grid, kApplyThreads, 0, stream>>>(
        xp, dy, g, dmean, xmax, dmax, N, C, HW, op);
  else
    se_apply_kernel<kGrad, kMax, false, scalar_t, acc_t><<<grid, kApplyThreads, 0, stream>>>(
        xp, dy, g, dmean, xmax, dmax, N, C, HW, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_forward_cuda(
    const at::Tensor& x, const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const c10::cuda::CUDAGuard guard(x.device());
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1), R = w.reduced;
  SEForwardOutputs out = se_forward_outputs(x, pool);
  at::Tensor &y = out.y, &pooled = out.pooled, &xmax = out.xmax;
  if (x.numel() == 0) return {y, pooled, xmax};
  at::Tensor g = at::empty({B, C}, x.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool has_max = pool == kAvgMax;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reduce<false, scalar_t, acc_t>(x, nullptr, nullptr, has_max, pooled.data_ptr<acc_t>(),
                                          has_max ? xmax.data_ptr<acc_t>() : nullptr, stream);
    const size_t smem = gate_smem<acc_t>(C, R, 2, 1);
    se_gate_kernel<acc_t><<<static_cast<unsigned int>(B), kGateThreads, smem, stream>>>(
        pooled.data_ptr<acc_t>(), gate_weights<acc_t>(w, C, act, gate), g.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_apply<false, false, scalar_t, acc_t>(x, nullptr, g.data_ptr<acc_t>(), nullptr, nullptr,
                                                nullptr, y, stream);
  });
  return {y, pooled, xmax};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_backward_cuda(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& xmax,
    const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const c10::cuda::CUDAGuard guard(x.device());
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  check_se_backward_args(dy, x, pooled, xmax, pool);
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1), R = w.reduced, HW = x.size(2) * x.size(3);
  SEBackwardOutputs out = se_backward_outputs(x, w);
  at::Tensor &dx = out.dx, &dz = out.dz, &dh = out.dh;
  if (x.numel() == 0) return {dx, dz, dh};
  const bool has_max = pool == kAvgMax;
  auto stats = [&] { return at::empty({B, C}, x.options().dtype(acc)); };
  at::Tensor dg = stats(), g = stats(), dmean = stats();
  at::Tensor count = has_max ? stats() : at::Tensor(), dmax = has_max ? stats() : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* xm = has_max ? xmax.data_ptr<acc_t>() : nullptr;
    acc_t* cnt = has_max ? count.data_ptr<acc_t>() : nullptr;
    acc_t* dmx = has_max ? dmax.data_ptr<acc_t>() : nullptr;
    launch_reduce<true, scalar_t, acc_t>(x, &dy, xm, has_max, dg.data_ptr<acc_t>(), cnt, stream);
    const size_t smem = gate_smem<acc_t>(C, R, 3, 3);
    const acc_t mean_scale = (has_max ? acc_t(0.5) : acc_t(1)) / static_cast<acc_t>(HW);
    se_gate_backward_kernel<acc_t><<<static_cast<unsigned int>(B), kGateThreads, smem, stream>>>(
        pooled.data_ptr<acc_t>(), dg.data_ptr<acc_t>(), cnt, gate_weights<acc_t>(w, C, act, gate),
        mean_scale, g.data_ptr<acc_t>(), dz.data_ptr<acc_t>(),
        w.two_layer() ? dh.data_ptr<acc_t>() : nullptr, dmean.data_ptr<acc_t>(), dmx);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (has_max)
      launch_apply<true, true, scalar_t, acc_t>(x, dy.data_ptr<scalar_t>(), g.data_ptr<acc_t>(),
                                                dmean.data_ptr<acc_t>(), xm, dmx, dx, stream);
    else
      launch_apply<true, false, scalar_t, acc_t>(x, dy.data_ptr<scalar_t>(), g.data_ptr<acc_t>(),
                                                 dmean.data_ptr<acc_t>(), nullptr, nullptr, dx,
                                                 stream);
  });
  return {dx, dz, dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CUDA, m) {
  m.impl("se_forward", &se_forward_cuda);
  m.impl("se_backward", &se_backward_cuda);
}

}  // namespace attnkernels
