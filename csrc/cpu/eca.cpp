// Efficient Channel Attention on the CPU: the gate (a 1-D conv over the pooled
// channels) and the ops; the passes over x are csrc/cpu/channel_gate.h's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/dispatch.h"
#include "../common/eca.h"
#include "channel_gate.h"

namespace attnkernels {
namespace {

template <typename scalar_t>
void eca_forward_kernel(const at::Tensor& x, const ECAWeights& w, bool circular, int64_t gate,
                        at::Tensor& y, at::Tensor& pooled) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1);
  const acc_t* wp = w.w.data_ptr<acc_t>();
  const acc_t* bp = w.b.defined() ? w.b.data_ptr<acc_t>() : nullptr;
  acc_t* sp = pooled.data_ptr<acc_t>();
  auto gate_of = [&](int64_t b, acc_t* g) -> const acc_t* {
    const acc_t* s = sp + b * C;
    for (int64_t c = 0; c < C; ++c)
      g[c] = gate_forward(eca_conv(s, wp, bp, w.k, c, C, circular), static_cast<int>(gate));
    return g;
  };
  channel_gate_forward<false, scalar_t>(x, sp, static_cast<acc_t*>(nullptr), y, C, gate_of);
}

template <typename scalar_t>
void eca_backward_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled,
                         const ECAWeights& w, bool circular, int64_t gate, at::Tensor& dx,
                         at::Tensor& dz) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  const acc_t* wp = w.w.data_ptr<acc_t>();
  const acc_t* bp = w.b.defined() ? w.b.data_ptr<acc_t>() : nullptr;
  const acc_t* sp = pooled.data_ptr<acc_t>();
  acc_t* dzp = dz.data_ptr<acc_t>();
  const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(HW);
  // scratch: g[C] dmean[C]
  auto gate_backward = [&](int64_t b, const acc_t* dg, acc_t*, acc_t* scratch) -> GateGrads<acc_t> {
    const acc_t* s = sp + b * C;
    acc_t* g = scratch;
    acc_t* dmean = g + C;
    acc_t* dzb = dzp + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const acc_t z = eca_conv(s, wp, bp, w.k, c, C, circular);
      g[c] = gate_forward(z, static_cast<int>(gate));
      dzb[c] = dg[c] * gate_grad(z, static_cast<int>(gate));
    }
    for (int64_t i = 0; i < C; ++i) dmean[i] = eca_conv_transpose(dzb, wp, w.k, i, C, circular) * inv_hw;
    return {g, dmean, nullptr};
  };
  channel_gate_backward<false, scalar_t>(dy, x, static_cast<const acc_t*>(nullptr), dx, 2 * C,
                                         gate_backward);
}

std::tuple<at::Tensor, at::Tensor> eca_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const c10::optional<at::Tensor>& bias,
                                                   bool circular, int64_t gate) {
  const ECAWeights w = eca_prepare(x, weight, bias, gate);
  ECAForwardOutputs out = eca_forward_outputs(x);
  if (x.numel() == 0) return {out.y, out.pooled};
  AK_DISPATCH(x, "eca_forward_cpu", [&] {
    eca_forward_kernel<scalar_t>(x, w, circular, gate, out.y, out.pooled);
  });
  return {out.y, out.pooled};
}

std::tuple<at::Tensor, at::Tensor> eca_backward_cpu(const at::Tensor& dy, const at::Tensor& x,
                                                    const at::Tensor& pooled,
                                                    const at::Tensor& weight,
                                                    const c10::optional<at::Tensor>& bias,
                                                    bool circular, int64_t gate) {
  const ECAWeights w = eca_prepare(x, weight, bias, gate);
  check_eca_backward_args(dy, x, pooled);
  ECABackwardOutputs out = eca_backward_outputs(x);
  if (x.numel() == 0) return {out.dx, out.dz};
  AK_DISPATCH(x, "eca_backward_cpu", [&] {
    eca_backward_kernel<scalar_t>(dy, x, pooled, w, circular, gate, out.dx, out.dz);
  });
  return {out.dx, out.dz};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_ECA_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
