// Squeeze-and-Excitation on the CPU: the gate network (an MLP on the pooled
// channels) and the ops; the passes over x are csrc/cpu/channel_gate.h's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../common/dispatch.h"
#include "../common/se.h"
#include "channel_gate.h"

namespace attnkernels {
namespace {

// Per-sample gate network in the accumulate type acc_t.
template <typename acc_t>
struct GateNet {
  const acc_t *w1, *b1, *w2, *b2;
  int64_t C, R;
  int act, gate;

  // Multiply-adds per sample: large ones make the batched forward pay.
  int64_t macs() const { return w2 ? 2 * C * R : C * C; }

  // The first layer for samples [0, nb), rows [r0, r1): h (pre-activation) and
  // a (activation), both (nb, R). A one-layer net writes z (nb, C) instead.
  void layer1(const acc_t* s, int64_t nb, int64_t r0, int64_t r1, acc_t* h, acc_t* a) const {
    const int64_t out_dim = w2 ? R : C;
    linear_rows(w1, b1, s, nb, C, out_dim, r0, r1, h);
    if (!w2) return;
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t r = r0; r < r1; ++r) a[b * R + r] = activation_forward(h[b * R + r], act);
  }
  // The second layer, channels [c0, c1): a (nb, R) -> z (nb, C).
  void layer2(const acc_t* a, int64_t nb, int64_t c0, int64_t c1, acc_t* z) const {
    linear_rows(w2, b2, a, nb, R, C, c0, c1, z);
  }

  // s[C] -> h[R] (pre-activation), a[R], z[C] (gate pre-activation).
  void forward(const acc_t* s, acc_t* h, acc_t* a, acc_t* z) const {
    if (!w2) return layer1(s, 1, 0, C, z, nullptr);
    layer1(s, 1, 0, R, h, a);
    layer2(a, 1, 0, C, z);
  }

  // dz[C] = dg * gate'(z); dh[R] (two-layer only); ds[C] = d loss / d s.
  void backward(const acc_t* h, const acc_t* z, const acc_t* dg, acc_t* dz, acc_t* dh,
                acc_t* ds) const {
    for (int64_t c = 0; c < C; ++c) dz[c] = dg[c] * gate_grad(z[c], gate);
    const acc_t* wlast = w2 ? w2 : w1;  // the layer whose output is z
    const int64_t nin = w2 ? R : C;
    acc_t* din = w2 ? dh : ds;
    for (int64_t k = 0; k < nin; ++k) din[k] = acc_t(0);
    for (int64_t c = 0; c < C; ++c) {
      const acc_t* row = wlast + c * nin;
      const acc_t d = dz[c];
      for (int64_t k = 0; k < nin; ++k) din[k] += d * row[k];
    }
    if (!w2) return;
    for (int64_t r = 0; r < R; ++r) dh[r] *= activation_grad(h[r], act);
    for (int64_t c = 0; c < C; ++c) ds[c] = acc_t(0);
    for (int64_t r = 0; r < R; ++r) {
      const acc_t* row = w1 + r * C;
      const acc_t d = dh[r];
      for (int64_t c = 0; c < C; ++c) ds[c] += d * row[c];
    }
  }
};

template <typename acc_t>
GateNet<acc_t> make_gate_net(const SEWeights& w, int64_t C, int64_t act, int64_t gate) {
  return GateNet<acc_t>{w.w1.data_ptr<acc_t>(), data_or_null<acc_t>(w.b1),
                        data_or_null<acc_t>(w.w2), data_or_null<acc_t>(w.b2),
                        C, w.reduced, static_cast<int>(act), static_cast<int>(gate)};
}

// A gate network that costs more than a pass over its sample (wide C and R,
// small H*W: ResNet's last stage) runs batched between two parallel passes,
// so each weight row is read once per tile of samples, not once per sample.
template <bool kMax, typename scalar_t, typename acc_t>
void se_forward_batched(const at::Tensor& x, const GateNet<acc_t>& net, acc_t* pooled,
                        acc_t* xmax, at::Tensor& y) {
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C, R = net.R;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const Prefetch pf(x.nbytes());  // the apply below reads x again, after every sample's pool
  std::vector<acc_t> buf(2 * B * R + B * C);
  acc_t* h = buf.data();
  acc_t* a = h + B * R;
  acc_t* g = a + B * R;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) pool_sample<kMax>(xp, L, b, 0, C, pooled, xmax, NoHook{}, pf);
  });
  if (net.w2) {
    at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) { net.layer1(pooled, B, r0, r1, h, a); });
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { net.layer2(a, B, c0, c1, g); });
  } else {
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { net.layer1(pooled, B, c0, c1, g, nullptr); });
  }
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      acc_t* gb = g + b * C;
      for (int64_t c = 0; c < C; ++c) gb[c] = gate_forward(gb[c], net.gate);
      const ApplyGate<scalar_t, acc_t> hook{xp + b * L.sample(), gb, yp + b * L.sample(), &L, pf};
      run_hook(hook, L, 0, L.rows());
    }
  });
}

template <bool kMax, typename scalar_t>
void se_forward_kernel(const at::Tensor& x, const SEWeights& w, int64_t act, int64_t gate,
                       at::Tensor& y, at::Tensor& pooled, at::Tensor& xmax) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C, R = w.reduced;
  const auto net = make_gate_net<acc_t>(w, C, act, gate);
  acc_t* sp = pooled.data_ptr<acc_t>();
  acc_t* mp = kMax ? xmax.data_ptr<acc_t>() : nullptr;
  if (B > 1 && B >= at::get_num_threads() && net.macs() >= L.sample()) {
    se_forward_batched<kMax, scalar_t>(x, net, sp, mp, y);
    return;
  }
  // scratch: h[R] a[R] g[C]
  auto gate_of = [&](int64_t b, acc_t* scratch) -> const acc_t* {
    acc_t* h = scratch;
    acc_t* a = h + R;
    acc_t* g = a + R;
    net.forward(sp + b * C, h, a, g);
    for (int64_t c = 0; c < C; ++c) g[c] = gate_forward(g[c], net.gate);
    return g;
  };
  channel_gate_forward<kMax, scalar_t>(x, sp, mp, y, 2 * R + C, gate_of);
}

template <bool kMax, typename scalar_t>
void se_backward_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled,
                        const at::Tensor& xmax, const SEWeights& w, int64_t act, int64_t gate,
                        at::Tensor& dx, at::Tensor& dz, at::Tensor& dh) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1), R = w.reduced, HW = x.size(2) * x.size(3);
  const auto net = make_gate_net<acc_t>(w, C, act, gate);
  const acc_t* sp = pooled.data_ptr<acc_t>();
  const acc_t* mp = kMax ? xmax.data_ptr<acc_t>() : nullptr;
  acc_t* dzp = dz.data_ptr<acc_t>();
  acc_t* dhp = w.two_layer() ? dh.data_ptr<acc_t>() : nullptr;
  const acc_t mean_scale = (kMax ? acc_t(0.5) : acc_t(1)) / static_cast<acc_t>(HW);
  // scratch: h[R] a[R] z[C] g[C] ds[C] dh[R]
  auto gate_backward = [&](int64_t b, const acc_t* dg, acc_t* count,
                           acc_t* scratch) -> GateGrads<acc_t> {
    acc_t *h = scratch, *a = h + R, *z = a + R, *g = z + C, *ds = g + C, *dhb = ds + C;
    net.forward(sp + b * C, h, a, z);
    for (int64_t c = 0; c < C; ++c) g[c] = gate_forward(z[c], net.gate);
    net.backward(h, z, dg, dzp + b * C, dhb, ds);
    if (dhp) std::copy(dhb, dhb + R, dhp + b * R);
    for (int64_t c = 0; c < C; ++c) {
      if (kMax) count[c] = acc_t(0.5) * ds[c] / count[c];  // d max, shared by the ties
      ds[c] *= mean_scale;                                  // d mean
    }
    return {g, ds, kMax ? count : nullptr};
  };
  channel_gate_backward<kMax, scalar_t>(dy, x, mp, dx, 3 * R + 3 * C, gate_backward);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_forward_cpu(
    const at::Tensor& x, const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  SEForwardOutputs out = se_forward_outputs(x, pool);
  if (x.numel() == 0) return {out.y, out.pooled, out.xmax};
  AK_DISPATCH(x, "se_forward_cpu", [&] {
    if (pool == kAvgMax)
      se_forward_kernel<true, scalar_t>(x, w, act, gate, out.y, out.pooled, out.xmax);
    else
      se_forward_kernel<false, scalar_t>(x, w, act, gate, out.y, out.pooled, out.xmax);
  });
  return {out.y, out.pooled, out.xmax};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& xmax,
    const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  check_se_backward_args(dy, x, pooled, xmax, pool);
  SEBackwardOutputs out = se_backward_outputs(x, w);
  if (x.numel() == 0) return {out.dx, out.dz, out.dh};
  AK_DISPATCH(x, "se_backward_cpu", [&] {
    if (pool == kAvgMax)
      se_backward_kernel<true, scalar_t>(dy, x, pooled, xmax, w, act, gate, out.dx, out.dz, out.dh);
    else
      se_backward_kernel<false, scalar_t>(dy, x, pooled, xmax, w, act, gate, out.dx, out.dz, out.dh);
  });
  return {out.dx, out.dz, out.dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_SE_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
