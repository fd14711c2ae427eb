// Efficient Channel Attention on CUDA: the gate kernels (a k-tap conv over the
// pooled channels) and the ops; the passes over x are
// csrc/cuda/channel_gate.cuh's.
//
// Forward: reduce -> gate -> apply: three launches. Backward: reduce sum(dy * x)
// -> gate backward (one block per sample: dz, then the conv's transpose) ->
// apply: three launches. No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/dispatch.h"
#include "../common/cuda_utils.cuh"
#include "../common/eca.h"
#include "channel_gate.cuh"

namespace attnkernels {
namespace {

constexpr int kEcaGateThreads = 256;

// g[b, c] = gate(z[b, c]); one thread per (b, c).
template <typename acc_t>
__global__ void eca_gate_kernel(const acc_t* __restrict__ pooled, const acc_t* __restrict__ w,
                                const acc_t* __restrict__ bias, int64_t B, int64_t C, int64_t k,
                                bool circular, int gate, acc_t* __restrict__ g) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / C, c = i % C;
    g[i] = gate_forward(eca_conv(pooled + b * C, w, bias, k, c, C, circular), gate);
  }
}

// One block per sample: g and dz = dg * gate'(z) for every channel, then
// dmean[i] = (sum_j w[j] * dz[i - j + pad]) / HW, reading back dz (global
// writes of the block are visible after __syncthreads).
template <typename acc_t>
__global__ void eca_gate_backward_kernel(const acc_t* __restrict__ pooled,
                                         const acc_t* __restrict__ dg,
                                         const acc_t* __restrict__ w,
                                         const acc_t* __restrict__ bias, int64_t C, int64_t k,
                                         bool circular, int gate, acc_t inv_hw,
                                         acc_t* __restrict__ g, acc_t* __restrict__ dz,
                                         acc_t* __restrict__ dmean) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const acc_t z = eca_conv(pooled + row, w, bias, k, c, C, circular);
    g[row + c] = gate_forward(z, gate);
    dz[row + c] = dg[row + c] * gate_grad(z, gate);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
    dmean[row + i] = eca_conv_transpose(dz + row, w, k, i, C, circular) * inv_hw;
}

std::tuple<at::Tensor, at::Tensor> eca_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                    const c10::optional<at::Tensor>& bias,
                                                    bool circular, int64_t gate) {
  AK_DEVICE_GUARD(x);
  const ECAWeights w = eca_prepare(x, weight, bias, gate);
  ECAForwardOutputs out = eca_forward_outputs(x);
  at::Tensor &y = out.y, &pooled = out.pooled;
  if (x.numel() == 0) return {y, pooled};
  const int64_t B = x.size(0), C = x.size(1);
  at::Tensor g = at::empty({B, C}, pooled.options());
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "eca_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reduce<false, scalar_t, acc_t>(x, nullptr, nullptr, false, pooled.data_ptr<acc_t>(),
                                          nullptr, stream);
    const unsigned int grid = grid_stride_blocks(B * C, kEcaGateThreads);
    AK_LAUNCH(grid, kEcaGateThreads, 0, stream, eca_gate_kernel<acc_t>)(
        pooled.data_ptr<acc_t>(), w.w.data_ptr<acc_t>(), data_or_null<acc_t>(w.b), B, C, w.k,
        circular, static_cast<int>(gate), g.data_ptr<acc_t>());
    AK_LAUNCH_CHECK();
    launch_apply<false, false, scalar_t, acc_t>(x, nullptr, g.data_ptr<acc_t>(), nullptr, nullptr,
                                                nullptr, y, stream);
  });
  return {y, pooled};
}

std::tuple<at::Tensor, at::Tensor> eca_backward_cuda(const at::Tensor& dy, const at::Tensor& x,
                                                     const at::Tensor& pooled,
                                                     const at::Tensor& weight,
                                                     const c10::optional<at::Tensor>& bias,
                                                     bool circular, int64_t gate) {
  AK_DEVICE_GUARD(x);
  const ECAWeights w = eca_prepare(x, weight, bias, gate);
  check_eca_backward_args(dy, x, pooled);
  ECABackwardOutputs out = eca_backward_outputs(x);
  at::Tensor &dx = out.dx, &dz = out.dz;
  if (x.numel() == 0) return {dx, dz};
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  auto stats = [&] { return at::empty({B, C}, pooled.options()); };
  at::Tensor dg = stats(), g = stats(), dmean = stats();
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "eca_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reduce<true, scalar_t, acc_t>(x, &dy, nullptr, false, dg.data_ptr<acc_t>(), nullptr,
                                         stream);
    AK_LAUNCH(static_cast<unsigned int>(B), kEcaGateThreads, 0, stream, eca_gate_backward_kernel<acc_t>)(
        pooled.data_ptr<acc_t>(), dg.data_ptr<acc_t>(), w.w.data_ptr<acc_t>(),
        data_or_null<acc_t>(w.b), C, w.k, circular, static_cast<int>(gate),
        acc_t(1) / static_cast<acc_t>(HW), g.data_ptr<acc_t>(), dz.data_ptr<acc_t>(),
        dmean.data_ptr<acc_t>());
    AK_LAUNCH_CHECK();
    launch_apply<true, false, scalar_t, acc_t>(x, dy.data_ptr<scalar_t>(), g.data_ptr<acc_t>(),
                                               dmean.data_ptr<acc_t>(), nullptr, nullptr, dx,
                                               stream);
  });
  return {dx, dz};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_ECA_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
