// Squeeze-and-Excitation on CUDA: the gate network kernels and the ops; the
// passes over x are csrc/cuda/channel_gate.cuh's.
//
// Forward: reduce (one read of x) -> per-sample gate network -> apply (read x,
// write y): three launches. Backward: reduce sum(dy * x) -> per-sample gate
// backward -> apply (read dy, x; write dx): three launches. No atomics: every
// reduction is a fixed-order block reduction, so results are deterministic.
// Light headers only (torch/extension.h costs minutes per .cu file).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "../common/dispatch.h"
#include "../common/cuda_utils.cuh"
#include "../common/se.h"
#include "channel_gate.cuh"

namespace attnkernels {
namespace {

constexpr int kGateThreads = 256;

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
  AK_DYNAMIC_SHARED(unsigned char, smem_raw);
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
  AK_DYNAMIC_SHARED(unsigned char, smem_raw);
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
  for (int64_t k = threadIdx.x; k < nin; k += blockDim.x) {
    acc_t acc = 0;
    for (int64_t c = 0; c < C; ++c) acc += dz[c] * wl[c * nin + k];
    din[k] = acc;
  }
  // No barrier here or after the next two loops' writes: each thread reads back
  // only the din[k] / s[c] it wrote itself (the loops share their thread map).
  if (w.w2) {
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      dh[r] *= activation_grad(h[r], w.act);
      dh_out[n * R + r] = dh[r];
    }
    __syncthreads();
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {  // ds = W1^T dh, into s
      acc_t acc = 0;
      for (int64_t r = 0; r < R; ++r) acc += dh[r] * w.w1[r * C + c];
      s[c] = acc;
    }
  }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    dmean[n * C + c] = s[c] * mean_scale;
    if (dmax) dmax[n * C + c] = acc_t(0.5) * s[c] / count[n * C + c];
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_forward_cuda(
    const at::Tensor& x, const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  AK_DEVICE_GUARD(x);
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1), R = w.reduced;
  SEForwardOutputs out = se_forward_outputs(x, pool);
  at::Tensor &y = out.y, &pooled = out.pooled, &xmax = out.xmax;
  if (x.numel() == 0) return {y, pooled, xmax};
  at::Tensor g = at::empty({B, C}, x.options().dtype(acc));
  const cudaStream_t stream = AK_CURRENT_STREAM();
  const bool has_max = pool == kAvgMax;
  AK_DISPATCH(x, "se_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reduce<false, scalar_t, acc_t>(x, nullptr, nullptr, has_max, pooled.data_ptr<acc_t>(),
                                          has_max ? xmax.data_ptr<acc_t>() : nullptr, stream);
    const size_t smem = gate_smem<acc_t>(C, R, 2, 1);
    AK_LAUNCH(static_cast<unsigned int>(B), kGateThreads, smem, stream, se_gate_kernel<acc_t>)(
        pooled.data_ptr<acc_t>(), gate_weights<acc_t>(w, C, act, gate), g.data_ptr<acc_t>());
    AK_LAUNCH_CHECK();
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
  AK_DEVICE_GUARD(x);
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
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "se_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* xm = has_max ? xmax.data_ptr<acc_t>() : nullptr;
    acc_t* cnt = has_max ? count.data_ptr<acc_t>() : nullptr;
    acc_t* dmx = has_max ? dmax.data_ptr<acc_t>() : nullptr;
    launch_reduce<true, scalar_t, acc_t>(x, &dy, xm, has_max, dg.data_ptr<acc_t>(), cnt, stream);
    const size_t smem = gate_smem<acc_t>(C, R, 3, 3);
    const acc_t mean_scale = (has_max ? acc_t(0.5) : acc_t(1)) / static_cast<acc_t>(HW);
    AK_LAUNCH(static_cast<unsigned int>(B), kGateThreads, smem, stream, se_gate_backward_kernel<acc_t>)(
        pooled.data_ptr<acc_t>(), dg.data_ptr<acc_t>(), cnt, gate_weights<acc_t>(w, C, act, gate),
        mean_scale, g.data_ptr<acc_t>(), dz.data_ptr<acc_t>(),
        w.two_layer() ? dh.data_ptr<acc_t>() : nullptr, dmean.data_ptr<acc_t>(), dmx);
    AK_LAUNCH_CHECK();
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

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_SE_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
