// attnkernels::cbam_forward, the native (CPU, CUDA) composite forward of CBAM:
// the passes (attnkernels::cbam_channel_pool, cbam_spatial_pool, cbam_apply)
// with the two gate networks between them, as the Triton composite
// cbam_forward_triton runs them in Python (attnkernels/cbam/triton.py, with
// the gate networks of attnkernels/cbam/op.py:
// channel_gate, spatial_gate; the outputs are described there). Fake tensors
// and autograd are registered from Python.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "gate_networks.h"

namespace attnkernels::composite {
namespace {

using at::Tensor;
using Opt = std::optional<Tensor>;

// config (attnkernels/cbam/op.py Config): [channel_pool, act, channel_gate, spatial_input,
// spatial_gate, bn, first_max]
enum Config : int64_t { kChannelPool, kAct, kChannelGate, kSpatialInput, kSpatialGate, kBn, kFirstMax };
enum : int64_t { kAvgMax = 0, kMix = 1, kAvg = 2, kNoChannel = 4 };   // channel_pool
enum : int64_t { kMeanMax = 0, kMaxMean = 1, kNoSpatial = 3 };       // spatial_input

using Outputs = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                           Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// (ca, h, z): attnkernels/cbam/op.py channel_gate.
std::tuple<Tensor, Tensor, Tensor> channel_gate(const Tensor& cmean, const Tensor& cmax,
                                                const Tensor& w1, const Opt& b1, const Opt& w2,
                                                const Opt& b2, at::IntArrayRef config) {
  const at::ScalarType acc = cmean.scalar_type();
  const int64_t pool = config[kChannelPool];
  const Tensor rows = pool == kAvgMax ? at::cat({cmean, cmax})
                      : pool == kMix  ? cmean * 0.5 + cmax * 0.5
                      : pool == kAvg  ? cmean
                                      : cmax;
  const Tensor h = gate_linear(rows, w1.to(acc), to(b1, acc));
  Tensor z = w2.has_value()
                 ? gate_linear(activation(h, config[kAct]), w2->to(acc), to(b2, acc))
                 : h;
  if (pool == kAvgMax) {
    const int64_t n = cmean.size(0);
    z = z.narrow(0, 0, n) + z.narrow(0, n, n);
  }
  return {gate(z, config[kChannelGate]), h, z};
}

Tensor spatial_input(const Tensor& smean, const Tensor& smax, int64_t mode) {
  if (mode == kMeanMax) return at::stack({smean, smax}, 1);
  if (mode == kMaxMean) return at::stack({smax, smean}, 1);
  return (smean * 0.5 + smax * 0.5).unsqueeze(1);
}

Outputs cbam_forward(const Tensor& x, const Tensor& w1, const Opt& b1, const Opt& w2,
                     const Opt& b2, const Opt& conv_w, const Opt& conv_b, const Opt& bn_w,
                     const Opt& bn_b, const Opt& bn_mean, const Opt& bn_var,
                     at::IntArrayRef config, double eps) {
  static const auto channel_pool =
      op<std::tuple<Tensor, Tensor>(const Tensor&)>("cbam_channel_pool");
  static const auto spatial_pool =
      op<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&)>("cbam_spatial_pool");
  static const auto apply =
      op<Tensor(const Tensor&, const Tensor&, const Tensor&)>("cbam_apply");
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);

  const auto pixel = x.options().dtype(stats_dtype(x));
  Tensor cmean, cmax, ca, h, z;
  if (config[kChannelPool] == kNoChannel) {
    // no channel gate (attnkernels/cbam/op.py without_channel_gate): ca = 1, the rest zeros
    // or empty; distinct tensors, as outputs may not alias
    const auto channel = [&] { return at::zeros({x.size(0), x.size(1)}, pixel); };
    cmean = channel(), cmax = channel(), h = empty_stats(x), z = channel();
    ca = at::ones({x.size(0), x.size(1)}, pixel);
  } else {
    std::tie(cmean, cmax) = channel_pool.call(x);
    std::tie(ca, h, z) = channel_gate(cmean, cmax, w1, b1, w2, b2, config);
    if (!w2.has_value()) h = empty_stats(x);  // h is z, and the backward does not need it
  }
  if (config[kSpatialInput] == kNoSpatial) {
    Tensor smean = at::zeros({x.size(0), x.size(2), x.size(3)}, pixel);
    Tensor smax = at::zeros({x.size(0), x.size(2), x.size(3)}, pixel);
    Tensor sa = at::ones_like(smean);
    auto e = [&] { return empty_stats(x); };  // distinct tensors: outputs may not alias
    return {apply.call(x, ca, sa), e(), e(), cmean, cmax, h, z, ca, smean, smax, sa, e(), e(),
            e(), e()};
  }
  auto [smean, smax] = spatial_pool.call(x, ca);
  // attnkernels/cbam/op.py spatial_gate
  const at::ScalarType acc = smean.scalar_type();
  Tensor q = same_conv2d(spatial_input(smean, smax, config[kSpatialInput]), conv_w->to(acc));
  if (conv_b.has_value()) q = q + conv_b->to(acc);
  auto [qn, save_mean, save_invstd, mean, var] =
      normalise_saving(q, config[kBn], bn_w, bn_b, bn_mean, bn_var, eps);
  Tensor sa = gate(qn, config[kSpatialGate]).select(1, 0).contiguous();
  if (config[kBn] == kBnNone) q = empty_stats(x);  // q is qn, and the backward does not need it
  return {apply.call(x, ca, sa), mean, var, cmean, cmax, h, z, ca, smean, smax, sa, q, qn,
          save_mean, save_invstd};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { m.impl("cbam_forward", &cbam_forward); }
TORCH_LIBRARY_IMPL(attnkernels, CUDA, m) { m.impl("cbam_forward", &cbam_forward); }

}  // namespace attnkernels::composite
