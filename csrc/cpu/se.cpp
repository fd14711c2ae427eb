// Squeeze-and-Excitation on the CPU.
//
// Forward, per sample: pool x over H*W, run the gate network, write x * g.
// Backward, per sample: reduce sum(dy * x) (and the argmax counts), run the
// gate network's backward, write dx. A sample's slab is re-read while it is
// still in cache, so x (and dy) come from memory about once per pass. Each
// (n, c) statistic is reduced by one thread in a fixed order: results do not
// depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../common/se.h"

namespace attnkernels {
namespace {

constexpr int kLanes = 16;  // independent partial sums, so the compiler vectorises

// Dot product with independent partial sums (vectorisable; fixed order).
template <typename acc_t>
inline acc_t dot(const acc_t* a, const acc_t* b, int64_t n) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += a[i + l] * b[i + l];
  acc_t s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Per-sample gate network in the accumulate type acc_t.
template <typename acc_t>
struct GateNet {
  const acc_t *w1, *b1, *w2, *b2;
  int64_t C, R;
  int act, gate;

  // s[C] -> h[R] (pre-activation), a[R], z[C] (gate pre-activation).
  void forward(const acc_t* s, acc_t* h, acc_t* a, acc_t* z) const {
    if (w2) {
      for (int64_t r = 0; r < R; ++r) {
        const acc_t acc = (b1 ? b1[r] : acc_t(0)) + dot(w1 + r * C, s, C);
        h[r] = acc;
        a[r] = activation_forward(acc, act);
      }
      for (int64_t c = 0; c < C; ++c) {
        z[c] = (b2 ? b2[c] : acc_t(0)) + dot(w2 + c * R, a, R);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        z[c] = (b1 ? b1[c] : acc_t(0)) + dot(w1 + c * C, s, C);
      }
    }
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

// Geometry of one activation tensor: element (n, c, p) with p = h * W + w is at
// n * C * HW + c * c_stride + p * p_stride.
struct Layout {
  int64_t C, HW, c_stride, p_stride;
  Layout(const at::Tensor& x) : C(x.size(1)), HW(x.size(2) * x.size(3)) {
    const bool cl = is_channels_last(x);
    c_stride = cl ? 1 : HW;
    p_stride = cl ? C : 1;
  }
  bool channels_last() const { return c_stride == 1 && C != 1; }
};

// Sum (and max, when kMax) of channels [c0, c1) of one sample.
template <bool kMax, typename scalar_t, typename acc_t>
void pool_channels(const scalar_t* xs, const Layout& L, int64_t c0, int64_t c1, acc_t* sum,
                   acc_t* mx) {
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      acc_t lane[kLanes] = {};
      acc_t lmax[kLanes];
      for (int l = 0; l < kLanes; ++l) lmax[l] = -std::numeric_limits<acc_t>::infinity();
      int64_t i = 0;
      for (; i + kLanes <= L.HW; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const acc_t v = static_cast<acc_t>(p[i + l]);
          lane[l] += v;
          if (kMax) lmax[l] = max_nan(lmax[l], v);
        }
      }
      acc_t s = 0, m = -std::numeric_limits<acc_t>::infinity();
      for (int l = 0; l < kLanes; ++l) {
        s += lane[l];
        if (kMax) m = max_nan(m, lmax[l]);
      }
      for (; i < L.HW; ++i) {
        const acc_t v = static_cast<acc_t>(p[i]);
        s += v;
        if (kMax) m = max_nan(m, v);
      }
      sum[c] = s;
      if (kMax) mx[c] = m;
    }
  } else {
    for (int64_t c = c0; c < c1; ++c) {
      sum[c] = 0;
      if (kMax) mx[c] = -std::numeric_limits<acc_t>::infinity();
    }
    for (int64_t p = 0; p < L.HW; ++p) {
      const scalar_t* row = xs + p * L.C;
      for (int64_t c = c0; c < c1; ++c) {
        const acc_t v = static_cast<acc_t>(row[c]);
        sum[c] += v;
        if (kMax) mx[c] = max_nan(mx[c], v);
      }
    }
  }
}

// Backward statistics of channels [c0, c1): dg[c] = sum(dy * x), and the
// number of positions where x equals its max (amax spreads its gradient evenly).
template <bool kMax, typename scalar_t, typename acc_t>
void reduce_grad_channels(const scalar_t* dys, const scalar_t* xs, const Layout& L, int64_t c0,
                          int64_t c1, const acc_t* mx, acc_t* dg, acc_t* count) {
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      const scalar_t* q = dys + c * L.HW;
      acc_t lane[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= L.HW; i += kLanes)
        for (int l = 0; l < kLanes; ++l)
          lane[l] += static_cast<acc_t>(q[i + l]) * static_cast<acc_t>(p[i + l]);
      acc_t s = 0;
      for (int l = 0; l < kLanes; ++l) s += lane[l];
      for (; i < L.HW; ++i) s += static_cast<acc_t>(q[i]) * static_cast<acc_t>(p[i]);
      dg[c] = s;
      if (kMax) {
        acc_t n = 0;
        for (int64_t j = 0; j < L.HW; ++j) n += static_cast<acc_t>(p[j]) == mx[c] ? 1 : 0;
        count[c] = n;
      }
    }
  } else {
    for (int64_t c = c0; c < c1; ++c) {
      dg[c] = 0;
      if (kMax) count[c] = 0;
    }
    for (int64_t p = 0; p < L.HW; ++p) {
      const scalar_t* xr = xs + p * L.C;
      const scalar_t* dr = dys + p * L.C;
      for (int64_t c = c0; c < c1; ++c) {
        const acc_t v = static_cast<acc_t>(xr[c]);
        dg[c] += static_cast<acc_t>(dr[c]) * v;
        if (kMax) count[c] += v == mx[c] ? 1 : 0;
      }
    }
  }
}

// out = x * g[c] over positions [p0, p1) of all channels (channels_last), or
// over channels [p0, p1) (NCHW): the caller's range is in the contiguous order.
template <typename scalar_t, typename acc_t>
void apply_gate(const scalar_t* xs, const acc_t* g, const Layout& L, int64_t r0, int64_t r1,
                scalar_t* ys) {
  if (!L.channels_last()) {
    for (int64_t c = r0; c < r1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      scalar_t* q = ys + c * L.HW;
      const acc_t gv = g[c];
      for (int64_t i = 0; i < L.HW; ++i) q[i] = static_cast<scalar_t>(static_cast<acc_t>(p[i]) * gv);
    }
  } else {
    for (int64_t p = r0; p < r1; ++p) {
      const scalar_t* xr = xs + p * L.C;
      scalar_t* yr = ys + p * L.C;
      for (int64_t c = 0; c < L.C; ++c) yr[c] = static_cast<scalar_t>(static_cast<acc_t>(xr[c]) * g[c]);
    }
  }
}

// dx = dy * g[c] + dmean[c] + (x == xmax[c]) * dmax[c], over the caller's range.
template <bool kMax, typename scalar_t, typename acc_t>
void apply_grad(const scalar_t* dys, const scalar_t* xs, const acc_t* g, const acc_t* dmean,
                const acc_t* mx, const acc_t* dmax, const Layout& L, int64_t r0, int64_t r1,
                scalar_t* dxs) {
  auto one = [&](int64_t i, int64_t c) {
    acc_t v = static_cast<acc_t>(dys[i]) * g[c] + dmean[c];
    if (kMax) v += static_cast<acc_t>(xs[i]) == mx[c] ? dmax[c] : acc_t(0);
    dxs[i] = static_cast<scalar_t>(v);
  };
  if (!L.channels_last()) {
    for (int64_t c = r0; c < r1; ++c)
      for (int64_t i = c * L.HW; i < (c + 1) * L.HW; ++i) one(i, c);
  } else {
    for (int64_t p = r0; p < r1; ++p)
      for (int64_t c = 0; c < L.C; ++c) one(p * L.C + c, c);
  }
}

// The contiguous rows of one sample (channels for NCHW, positions for
// channels_last): the unit the apply phases split between threads when there
// are fewer samples than threads.
int64_t rows_of(const Layout& L) { return L.channels_last() ? L.HW : L.C; }

template <typename scalar_t>
void se_forward_kernel(const at::Tensor& x, const SEWeights& w, int64_t pool, int64_t act,
                       int64_t gate, at::Tensor& y, at::Tensor& pooled, at::Tensor& xmax) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C, R = w.reduced;
  const auto net = make_gate_net<acc_t>(w, C, act, gate);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  acc_t* sp = pooled.data_ptr<acc_t>();
  acc_t* mp = pool == kAvgMax ? xmax.data_ptr<acc_t>() : nullptr;
  const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(L.HW);

  auto pool_range = [&](int64_t b, int64_t c0, int64_t c1) {
    const scalar_t* xs = xp + b * C * L.HW;
    if (mp) pool_channels<true>(xs, L, c0, c1, sp + b * C, mp + b * C);
    else pool_channels<false>(xs, L, c0, c1, sp + b * C, (acc_t*)nullptr);
    for (int64_t c = c0; c < c1; ++c) {
      acc_t v = sp[b * C + c] * inv_hw;
      if (mp) v = acc_t(0.5) * v + acc_t(0.5) * mp[b * C + c];
      sp[b * C + c] = v;
    }
  };
  auto gate_sample = [&](int64_t b, std::vector<acc_t>& scratch) {
    acc_t* h = scratch.data();
    acc_t* a = h + R;
    acc_t* g = a + R;
    net.forward(sp + b * C, h, a, g);
    for (int64_t c = 0; c < C; ++c) g[c] = gate_forward(g[c], static_cast<int>(gate));
  };
  const int64_t scratch_size = 2 * R + C;

  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> scratch(scratch_size);
      for (int64_t b = b0; b < b1; ++b) {
        pool_range(b, 0, C);
        gate_sample(b, scratch);
        apply_gate(xp + b * C * L.HW, scratch.data() + 2 * R, L, 0, rows_of(L), yp + b * C * L.HW);
      }
    });
    return;
  }
  std::vector<acc_t> scratch(scratch_size);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) { pool_range(b, c0, c1); });
    gate_sample(b, scratch);
    const acc_t* g = scratch.data() + 2 * R;
    at::parallel_for(0, rows_of(L), 1, [&](int64_t r0, int64_t r1) {
      apply_gate(xp + b * C * L.HW, g, L, r0, r1, yp + b * C * L.HW);
    });
  }
}

template <typename scalar_t>
void se_backward_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled,
                        const at::Tensor& xmax, const SEWeights& w, int64_t pool, int64_t act,
                        int64_t gate, at::Tensor& dx, at::Tensor& dz, at::Tensor& dh) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C, R = w.reduced;
  const auto net = make_gate_net<acc_t>(w, C, act, gate);
  const bool has_max = pool == kAvgMax;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  const acc_t* sp = pooled.data_ptr<acc_t>();
  const acc_t* mp = has_max ? xmax.data_ptr<acc_t>() : nullptr;
  acc_t* dzp = dz.data_ptr<acc_t>();
  acc_t* dhp = w.two_layer() ? dh.data_ptr<acc_t>() : nullptr;
  const acc_t mean_scale = (has_max ? acc_t(0.5) : acc_t(1)) / static_cast<acc_t>(L.HW);

  // scratch: h[R] a[R] z[C] g[C] dg[C] count[C] ds[C] dh[R]
  const int64_t scratch_size = 3 * R + 5 * C;
  struct View {
    acc_t *h, *a, *z, *g, *dg, *count, *ds, *dh;
  };
  auto view = [&](std::vector<acc_t>& s) {
    acc_t* p = s.data();
    return View{p, p + R, p + 2 * R, p + 2 * R + C, p + 2 * R + 2 * C, p + 2 * R + 3 * C,
                p + 2 * R + 4 * C, p + 2 * R + 5 * C};
  };
  auto reduce_range = [&](int64_t b, const View& v, int64_t c0, int64_t c1) {
    const int64_t off = b * C * L.HW;
    if (has_max) reduce_grad_channels<true>(dyp + off, xp + off, L, c0, c1, mp + b * C, v.dg, v.count);
    else reduce_grad_channels<false>(dyp + off, xp + off, L, c0, c1, mp, v.dg, v.count);
  };
  // Gate backward; leaves g in v.g, d mean in v.ds and d max in v.count.
  auto gate_sample = [&](int64_t b, const View& v) {
    net.forward(sp + b * C, v.h, v.a, v.z);
    for (int64_t c = 0; c < C; ++c) v.g[c] = gate_forward(v.z[c], static_cast<int>(gate));
    net.backward(v.h, v.z, v.dg, dzp + b * C, v.dh, v.ds);
    if (dhp) std::copy(v.dh, v.dh + R, dhp + b * R);
    for (int64_t c = 0; c < C; ++c) {
      if (has_max) v.count[c] = acc_t(0.5) * v.ds[c] / v.count[c];
      v.ds[c] *= mean_scale;
    }
  };
  auto apply_range = [&](int64_t b, const View& v, int64_t r0, int64_t r1) {
    const int64_t off = b * C * L.HW;
    if (has_max)
      apply_grad<true>(dyp + off, xp + off, v.g, v.ds, mp + b * C, v.count, L, r0, r1, dxp + off);
    else
      apply_grad<false>(dyp + off, xp + off, v.g, v.ds, mp, v.count, L, r0, r1, dxp + off);
  };

  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> scratch(scratch_size);
      const View v = view(scratch);
      for (int64_t b = b0; b < b1; ++b) {
        reduce_range(b, v, 0, C);
        gate_sample(b, v);
        apply_range(b, v, 0, rows_of(L));
      }
    });
    return;
  }
  std::vector<acc_t> scratch(scratch_size);
  const View v = view(scratch);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) { reduce_range(b, v, c0, c1); });
    gate_sample(b, v);
    at::parallel_for(0, rows_of(L), 1, [&](int64_t r0, int64_t r1) { apply_range(b, v, r0, r1); });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_forward_cpu(
    const at::Tensor& x, const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1);
  at::Tensor y = at::empty_like(x);  // keeps x's memory format
  at::Tensor pooled = at::empty({B, C}, x.options().dtype(acc));
  at::Tensor xmax = at::empty({pool == kAvgMax ? B : 0, C}, x.options().dtype(acc));
  if (x.numel() == 0) {
    // mean over an empty H*W is NaN, as in torch; nothing else to compute.
    pooled.fill_(std::numeric_limits<double>::quiet_NaN());
    xmax.fill_(std::numeric_limits<double>::quiet_NaN());
    return {y, pooled, xmax};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_forward_cpu", [&] {
    se_forward_kernel<scalar_t>(x, w, pool, act, gate, y, pooled, xmax);
  });
  return {y, pooled, xmax};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled, const at::Tensor& xmax,
    const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  check_se_backward_args(dy, x, pooled, xmax, pool);
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1);
  at::Tensor dx = at::empty_like(x);
  at::Tensor dz = at::zeros({B, C}, x.options().dtype(acc));
  at::Tensor dh = at::zeros({w.two_layer() ? B : 0, w.reduced}, x.options().dtype(acc));
  if (x.numel() == 0) return {dx, dz, dh};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_backward_cpu", [&] {
    se_backward_kernel<scalar_t>(dy, x, pooled, xmax, w, pool, act, gate, dx, dz, dh);
  });
  return {dx, dz, dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) {
  m.impl("se_forward", &se_forward_cpu);
  m.impl("se_backward", &se_backward_cpu);
}

}  // namespace attnkernels
