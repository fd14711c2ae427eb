// attnkernels::coord_forward, the native (CPU, CUDA) composite forward of
// Coordinate Attention: the passes (attnkernels::coord_pool, coord_apply) with
// the gate network between them, as the Triton composite coord_forward_triton
// runs it in Python (attnkernels/coord/triton.py, with
// the gate networks of attnkernels/coord/op.py: coord_gates, strip_gates; the
// outputs are described there). Fake tensors and autograd are registered from
// Python.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "gate_networks.h"

namespace attnkernels::composite {
namespace {

using at::Tensor;
using Opt = std::optional<Tensor>;

// config (attnkernels/coord/op.py): [act, gate, bn, skip, save]
enum Config : int64_t { kAct, kGate, kBn, kSkip, kSave, kConfigSize };

// A 1x1 conv over strips, (N, in, T) -> (N, out, T): attnkernels/coord/op.py strip_conv.
Tensor strip_conv(const Tensor& s, const Tensor& w, const Opt& b) {
  Tensor z = gate_product(w.to(s.scalar_type()), s);
  return b.has_value() ? z.add_(b->to(s.scalar_type()).unsqueeze(1)) : z;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> coord_forward(
    const Tensor& x, const Tensor& w1, const Opt& b1, const Tensor& wh, const Opt& bh,
    const Tensor& ww, const Opt& bw, const Opt& bn_w, const Opt& bn_b, const Opt& bn_mean,
    const Opt& bn_var, at::IntArrayRef config, double eps) {
  static const auto pool = op<std::tuple<Tensor, Tensor>(const Tensor&)>("coord_pool");
  static const auto apply =
      op<Tensor(const Tensor&, const Tensor&, const Tensor&, bool)>("coord_apply");
  TORCH_CHECK(config.size() == kConfigSize,
              "coord_forward: config must be [act, gate, bn, skip, save]");
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);

  auto [mh, mw] = pool.call(x);
  const int64_t H = mh.size(2);
  Tensor z = strip_conv(at::cat({mh, mw}, 2), w1, b1);
  auto [zn, save_mean, save_invstd, mean, var] =
      normalise_saving(z, config[kBn], bn_w, bn_b, bn_mean, bn_var, eps);
  const Tensor a = activation(zn, config[kAct]);
  const Tensor ah = gate(strip_conv(a.narrow(2, 0, H), wh, bh), config[kGate]);
  const Tensor aw = gate(strip_conv(a.narrow(2, H, a.size(2) - H), ww, bw), config[kGate]);
  if (config[kBn] == kBnNone) z = empty_stats(x);  // z is zn, and the backward does not need it
  if (config[kSave] == 0) {  // no backward will run: free the strips before y is allocated
    for (Tensor* t : {&mh, &mw, &z, &zn}) *t = empty_stats(x);  // distinct: outputs may not alias
  }
  Tensor y = apply.call(x, ah.contiguous(), aw.contiguous(), config[kSkip] != 0);
  return {y, mean, var, mh, mw, z, zn, save_mean, save_invstd};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { m.impl("coord_forward", &coord_forward); }
TORCH_LIBRARY_IMPL(attnkernels, CUDA, m) { m.impl("coord_forward", &coord_forward); }

}  // namespace attnkernels::composite
