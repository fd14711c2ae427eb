// attnkernels::triplet_forward, the native (CPU, CUDA) composite forward of
// Triplet Attention: the passes (attnkernels::triplet_pool, triplet_apply)
// with the three gate networks between them, as the Triton composite
// triplet_forward_triton runs them in Python (attnkernels/triplet/triton.py, with
// the gate networks of attnkernels/triplet/op.py:
// branch_inputs, branch_convs, branch_gates, gates_of; the outputs are
// described there). Fake tensors and autograd are registered from Python.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "gate_networks.h"

namespace attnkernels::composite {
namespace {

using at::Tensor;
using Opt = std::optional<Tensor>;

// config (attnkernels/triplet/op.py): [bn, spatial, save]
enum Config : int64_t { kBn, kSpatial, kSave, kConfigSize };

// [a, b] (N, R, S) as (N, 2, R, S), the longer side contiguous (stack_planes).
Tensor stack_planes(const Tensor& a, const Tensor& b) {
  if (a.size(2) >= a.size(1)) return at::stack({a, b}, 1);
  return at::stack({a.transpose(1, 2), b.transpose(1, 2)}, 1).transpose(2, 3);
}

Opt part(const Opt& t, int64_t g) {
  if (!t.has_value()) return std::nullopt;
  return t->narrow(0, g, 1);
}

using Outputs = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                           Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

Outputs triplet_forward(const Tensor& x, const Tensor& conv_w, const Opt& conv_b, const Opt& bn_w,
                        const Opt& bn_b, const Opt& bn_mean, const Opt& bn_var,
                        at::IntArrayRef config, double eps) {
  using Maps = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
  static const auto pool = op<Maps(const Tensor&)>("triplet_pool");
  static const auto apply =
      op<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool)>(
          "triplet_apply");
  TORCH_CHECK(config.size() == kConfigSize, "triplet_forward: config must be [bn, spatial, save]");
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);

  auto [cmean, cmax, hmean, hmax, wmean, wmax] = pool.call(x);
  const bool spatial = config[kSpatial] != 0;
  const bool save = config[kSave] != 0;
  // branch_inputs: [max, mean] in the plane upstream convolves, (C, W) for cw,
  // (H, C) for hc, (H, W) for hw
  std::vector<Tensor> inputs = {stack_planes(hmax, hmean),
                                stack_planes(wmax, wmean).transpose(2, 3)};
  if (spatial) inputs.push_back(stack_planes(cmax, cmean));
  Tensor maps[6] = {cmean, cmax, hmean, hmax, wmean, wmax};
  if (!save) {  // the maps only serve the backward from here on
    for (Tensor& t : maps) t = empty_stats(x);
    cmax = hmean = hmax = wmean = wmax = Tensor();
  }
  const int64_t G = static_cast<int64_t>(inputs.size());
  const at::ScalarType acc = inputs[0].scalar_type();
  std::vector<Tensor> qs, s, save_means, save_invstds, means, vars;
  for (int64_t g = 0; g < G; ++g) {
    // branch_convs, branch_gates
    Tensor q = same_conv2d(inputs[g], conv_w.narrow(0, g, 1).to(acc));
    inputs[g] = Tensor();  // the stacked planes, each as soon as its conv has run
    if (conv_b.has_value()) q = q + conv_b->select(0, g).to(acc);
    auto [qn, save_mean, save_invstd, mean, var] = normalise_saving(
        q, config[kBn], part(bn_w, g), part(bn_b, g), part(bn_mean, g), part(bn_var, g), eps);
    s.push_back(at::sigmoid(qn).select(1, 0));
    qs.push_back(save ? q : empty_stats(x));
    save_means.push_back(save_mean);
    save_invstds.push_back(save_invstd);
    means.push_back(mean);
    vars.push_back(var);
  }
  // gates_of (branch order cw, hc, hw)
  Tensor s_cw = s[0].contiguous();
  Tensor s_hc = s[1].transpose(1, 2).contiguous();
  Tensor s_hw = spatial ? s[2].contiguous() : at::zeros_like(cmean);
  s.clear();  // s_hc's other orientation, before y is allocated
  Tensor batch_mean = empty_stats(x), batch_var = empty_stats(x);
  if (config[kBn] == kBnBatch) {
    batch_mean = at::cat(means);
    batch_var = at::cat(vars);
  }
  Tensor q_cw = qs[0].contiguous(), q_hc = qs[1].contiguous();
  Tensor q_hw = spatial && save ? qs[2].contiguous() : empty_stats(x);
  qs.clear();
  Tensor y = apply.call(x, s_hw, s_cw, s_hc, spatial);
  return {y,    maps[0], maps[1], maps[2], maps[3], maps[4], maps[5],
          q_cw, q_hc,    q_hw,    s_hw,    s_cw,    s_hc,    at::cat(save_means),
          at::cat(save_invstds),  batch_mean, batch_var};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { m.impl("triplet_forward", &triplet_forward); }
TORCH_LIBRARY_IMPL(attnkernels, CUDA, m) { m.impl("triplet_forward", &triplet_forward); }

}  // namespace attnkernels::composite
