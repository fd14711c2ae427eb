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

// The streaming loops are compiled for AVX-512, AVX2 and baseline x86-64 and
// the loader picks the best the CPU has (GCC/Clang function multiversioning).
// The arithmetic is the same on every clone: fixed-order lanes, no FMA
// contraction (-ffp-contract=off), so the choice never changes a result.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ATTNKERNELS_NO_CLONES)
#define ATTNKERNELS_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ATTNKERNELS_CPU_CLONES
#endif
// Helpers called from a cloned function must be inlined into it to get its ISA.
#define ATTNKERNELS_INLINE inline __attribute__((always_inline))

namespace attnkernels {
namespace {

constexpr int kLanes = 16;  // independent partial sums, so the compiler vectorises

// kTile dot products sharing the row a: out[t] = sum_i a[i] * b[t * ldb + i],
// with independent partial sums (vectorisable) in a fixed order that does not
// depend on kTile, so a batched gate network gives the per-sample numbers.
template <int kTile, typename acc_t>
ATTNKERNELS_INLINE void dot_tile(const acc_t* a, const acc_t* b, int64_t ldb, int64_t n, acc_t* out) {
  acc_t lane[kTile][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int t = 0; t < kTile; ++t)
      for (int l = 0; l < kLanes; ++l) lane[t][l] += a[i + l] * b[t * ldb + i + l];
  for (int t = 0; t < kTile; ++t) {
    acc_t s = 0;
    for (int l = 0; l < kLanes; ++l) s += lane[t][l];
    for (int64_t j = i; j < n; ++j) s += a[j] * b[t * ldb + j];
    out[t] = s;
  }
}

// out[b, o] = bias[o] + W[o, :] . in[b, :] for samples [0, nb) and outputs
// [o0, o1). Each weight row is read once per tile of samples.
template <typename acc_t>
ATTNKERNELS_CPU_CLONES void linear_rows(const acc_t* W, const acc_t* bias, const acc_t* in, int64_t nb, int64_t in_dim,
                 int64_t out_dim, int64_t o0, int64_t o1, acc_t* out) {
  constexpr int kTile = 4;
  acc_t d[kTile];
  for (int64_t o = o0; o < o1; ++o) {
    const acc_t* row = W + o * in_dim;
    const acc_t b0 = bias ? bias[o] : acc_t(0);
    int64_t b = 0;
    for (; b + kTile <= nb; b += kTile) {
      dot_tile<kTile>(row, in + b * in_dim, in_dim, in_dim, d);
      for (int t = 0; t < kTile; ++t) out[(b + t) * out_dim + o] = b0 + d[t];
    }
    for (; b < nb; ++b) {
      dot_tile<1>(row, in + b * in_dim, in_dim, in_dim, d);
      out[b * out_dim + o] = b0 + d[0];
    }
  }
}

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
  int64_t sample() const { return C * HW; }
  // The contiguous rows of one sample (channels for NCHW, positions for
  // channels_last): the unit the apply passes split between threads.
  int64_t rows() const { return channels_last() ? HW : C; }
};

// The elementwise passes are "hooks" run inside the reductions' loops: when a
// thread owns several samples, one loop reduces sample b + 1 while it writes
// sample b, so loads and stores overlap. A hook sees the same blocks as the
// reduction, whose order (and so its result) does not depend on the hook.
//   row(c)          NCHW: a functor for channel c, with block(i) for elements
//                   [i, i + kLanes) and one(i) for element i of that channel;
//   position(p)     channels_last: every channel of position p.
struct NoHook {
  struct Row {
    void block(int64_t) const {}
    void one(int64_t) const {}
  };
  Row row(int64_t) const { return {}; }
  void position(int64_t) const {}
};

// y = x * g[c].
template <typename scalar_t, typename acc_t>
struct ApplyGate {
  const scalar_t* x;
  const acc_t* g;
  scalar_t* y;
  const Layout* L;

  struct Row {
    const scalar_t* __restrict__ x;
    scalar_t* __restrict__ y;
    acc_t g;
    void block(int64_t i) const {
      for (int l = 0; l < kLanes; ++l) one(i + l);
    }
    void one(int64_t i) const { y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * g); }
  };
  Row row(int64_t c) const { return {x + c * L->HW, y + c * L->HW, g[c]}; }
  void position(int64_t p) const { row_cl(x + p * L->C, g, y + p * L->C, L->C); }
  static void row_cl(const scalar_t* __restrict__ xr, const acc_t* __restrict__ g,
                     scalar_t* __restrict__ yr, int64_t C) {
    for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<scalar_t>(static_cast<acc_t>(xr[c]) * g[c]);
  }
};

// dx = dy * g[c] + dmean[c] (+ dmax[c] where x equals its max, with kMax).
template <bool kMax, typename scalar_t, typename acc_t>
struct ApplyGrad {
  const scalar_t *dy, *x;
  const acc_t *g, *dmean, *mx, *dmax;
  scalar_t* dx;
  const Layout* L;

  struct Row {
    const scalar_t* __restrict__ dy;
    const scalar_t* __restrict__ x;
    scalar_t* __restrict__ dx;
    acc_t g, dmean, mx, dmax;
    void block(int64_t i) const {
      for (int l = 0; l < kLanes; ++l) one(i + l);
    }
    void one(int64_t i) const {
      acc_t v = static_cast<acc_t>(dy[i]) * g + dmean;
      if (kMax) v += static_cast<acc_t>(x[i]) == mx ? dmax : acc_t(0);
      dx[i] = static_cast<scalar_t>(v);
    }
  };
  Row row(int64_t c) const {
    const int64_t o = c * L->HW;
    return {dy + o, x + o, dx + o, g[c], dmean[c], kMax ? mx[c] : acc_t(0), kMax ? dmax[c] : acc_t(0)};
  }
  void position(int64_t p) const {
    const int64_t o = p * L->C;
    row_cl(dy + o, x + o, g, dmean, mx, dmax, dx + o, L->C);
  }
  static void row_cl(const scalar_t* __restrict__ dyr, const scalar_t* __restrict__ xr,
                     const acc_t* __restrict__ g, const acc_t* __restrict__ dmean,
                     const acc_t* __restrict__ mx, const acc_t* __restrict__ dmax,
                     scalar_t* __restrict__ dxr, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t v = static_cast<acc_t>(dyr[c]) * g[c] + dmean[c];
      if (kMax) v += static_cast<acc_t>(xr[c]) == mx[c] ? dmax[c] : acc_t(0);
      dxr[c] = static_cast<scalar_t>(v);
    }
  }
};

// Runs a hook alone over rows [r0, r1) of a sample (Layout::rows order).
template <typename Hook>
ATTNKERNELS_CPU_CLONES void run_hook(const Hook& hook, const Layout& L, int64_t r0, int64_t r1) {
  if (L.channels_last()) {
    for (int64_t p = r0; p < r1; ++p) hook.position(p);
    return;
  }
  for (int64_t c = r0; c < r1; ++c) {
    const auto row = hook.row(c);
    int64_t i = 0;
    for (; i + kLanes <= L.HW; i += kLanes) row.block(i);
    for (; i < L.HW; ++i) row.one(i);
  }
}

// Sum (and max, when kMax) of channels [c0, c1) of one sample, with a hook.
template <bool kMax, typename scalar_t, typename acc_t, typename Hook>
ATTNKERNELS_CPU_CLONES void pool_channels(const scalar_t* xs, const Layout& L, int64_t c0, int64_t c1, acc_t* sum,
                   acc_t* mx, const Hook& hook) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      const auto row = hook.row(c);
      acc_t lane[kLanes] = {};
      acc_t lmax[kLanes];
      for (int l = 0; l < kLanes; ++l) lmax[l] = kNegInf;
      int64_t i = 0;
      for (; i + kLanes <= L.HW; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const acc_t v = static_cast<acc_t>(p[i + l]);
          lane[l] += v;
          if (kMax) lmax[l] = max_nan(lmax[l], v);
        }
        row.block(i);
      }
      acc_t s = 0, m = kNegInf;
      for (int l = 0; l < kLanes; ++l) {
        s += lane[l];
        if (kMax) m = max_nan(m, lmax[l]);
      }
      for (; i < L.HW; ++i) {
        const acc_t v = static_cast<acc_t>(p[i]);
        s += v;
        if (kMax) m = max_nan(m, v);
        row.one(i);
      }
      sum[c] = s;
      if (kMax) mx[c] = m;
    }
  } else {
    for (int64_t c = c0; c < c1; ++c) {
      sum[c] = 0;
      if (kMax) mx[c] = kNegInf;
    }
    for (int64_t p = 0; p < L.HW; ++p) {
      const scalar_t* row = xs + p * L.C;
      for (int64_t c = c0; c < c1; ++c) {
        const acc_t v = static_cast<acc_t>(row[c]);
        sum[c] += v;
        if (kMax) mx[c] = max_nan(mx[c], v);
      }
      hook.position(p);
    }
  }
}

// Backward statistics of channels [c0, c1), with a hook: dg[c] = sum(dy * x),
// and the number of positions where x equals its max (amax spreads its
// gradient evenly between them).
template <bool kMax, typename scalar_t, typename acc_t, typename Hook>
ATTNKERNELS_CPU_CLONES void reduce_grad_channels(const scalar_t* dys, const scalar_t* xs, const Layout& L, int64_t c0,
                          int64_t c1, const acc_t* mx, acc_t* dg, acc_t* count, const Hook& hook) {
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      const scalar_t* q = dys + c * L.HW;
      const auto row = hook.row(c);
      acc_t lane[kLanes] = {};
      acc_t lcount[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= L.HW; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const acc_t v = static_cast<acc_t>(p[i + l]);
          lane[l] += static_cast<acc_t>(q[i + l]) * v;
          if (kMax) lcount[l] += v == mx[c] ? acc_t(1) : acc_t(0);
        }
        row.block(i);
      }
      acc_t s = 0, n = 0;
      for (int l = 0; l < kLanes; ++l) {
        s += lane[l];
        if (kMax) n += lcount[l];
      }
      for (; i < L.HW; ++i) {
        const acc_t v = static_cast<acc_t>(p[i]);
        s += static_cast<acc_t>(q[i]) * v;
        if (kMax) n += v == mx[c] ? acc_t(1) : acc_t(0);
        row.one(i);
      }
      dg[c] = s;
      if (kMax) count[c] = n;
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
        if (kMax) count[c] += v == mx[c] ? acc_t(1) : acc_t(0);
      }
      hook.position(p);
    }
  }
}

// Samples [b0, b1) on one thread, software-pipelined: reduce(b0); then for
// each b, finish(b) (the gate network) and apply(b) fused into reduce(b + 1).
// reduce(b, hook) and finish(b) -> hook are the caller's.
template <typename Reduce, typename Finish>
void pipeline_samples(int64_t b0, int64_t b1, const Layout& L, const Reduce& reduce,
                      const Finish& finish) {
  if (b0 >= b1) return;
  reduce(b0, NoHook{});
  for (int64_t b = b0; b < b1; ++b) {
    const auto hook = finish(b);
    if (b + 1 < b1) reduce(b + 1, hook);
    else run_hook(hook, L, 0, L.rows());
  }
}

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

  auto pool_range = [&](int64_t b, int64_t c0, int64_t c1, const auto& hook) {
    const scalar_t* xs = xp + b * L.sample();
    if (mp) pool_channels<true>(xs, L, c0, c1, sp + b * C, mp + b * C, hook);
    else pool_channels<false>(xs, L, c0, c1, sp + b * C, (acc_t*)nullptr, hook);
    for (int64_t c = c0; c < c1; ++c) {
      acc_t v = sp[b * C + c] * inv_hw;
      if (mp) v = acc_t(0.5) * v + acc_t(0.5) * mp[b * C + c];
      sp[b * C + c] = v;
    }
  };
  // The gate network of sample b; returns the hook that applies its gates.
  auto gate_sample = [&](int64_t b, acc_t* scratch) {
    acc_t* h = scratch;
    acc_t* a = h + R;
    acc_t* g = a + R;
    net.forward(sp + b * C, h, a, g);
    for (int64_t c = 0; c < C; ++c) g[c] = gate_forward(g[c], static_cast<int>(gate));
    return ApplyGate<scalar_t, acc_t>{xp + b * L.sample(), g, yp + b * L.sample(), &L};
  };
  const int64_t scratch_size = 2 * R + C;

  // A gate network that costs more than a pass over its sample (wide C and R,
  // small H*W: ResNet's last stage) runs batched between two parallel passes,
  // so each weight row is read once per tile of samples, not once per sample.
  if (B > 1 && B >= at::get_num_threads() && net.macs() >= L.sample()) {
    std::vector<acc_t> buf(2 * B * R + B * C);
    acc_t* h = buf.data();
    acc_t* a = h + B * R;
    acc_t* g = a + B * R;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) pool_range(b, 0, C, NoHook{});
    });
    if (w.two_layer()) {
      at::parallel_for(0, R, 1, [&](int64_t r0, int64_t r1) { net.layer1(sp, B, r0, r1, h, a); });
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { net.layer2(a, B, c0, c1, g); });
    } else {
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) { net.layer1(sp, B, c0, c1, g, nullptr); });
    }
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc_t* gb = g + b * C;
        for (int64_t c = 0; c < C; ++c) gb[c] = gate_forward(gb[c], static_cast<int>(gate));
        const ApplyGate<scalar_t, acc_t> hook{xp + b * L.sample(), gb, yp + b * L.sample(), &L};
        run_hook(hook, L, 0, L.rows());
      }
    });
    return;
  }

  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> scratch(scratch_size);
      pipeline_samples(
          b0, b1, L, [&](int64_t b, const auto& hook) { pool_range(b, 0, C, hook); },
          [&](int64_t b) { return gate_sample(b, scratch.data()); });
    });
    return;
  }
  // Fewer samples than threads: split each sample's passes between threads.
  std::vector<acc_t> scratch(scratch_size);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) { pool_range(b, c0, c1, NoHook{}); });
    const auto hook = gate_sample(b, scratch.data());
    at::parallel_for(0, L.rows(), 1, [&](int64_t r0, int64_t r1) { run_hook(hook, L, r0, r1); });
  }
}

template <bool kMax, typename scalar_t>
void se_backward_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& pooled,
                        const at::Tensor& xmax, const SEWeights& w, int64_t act, int64_t gate,
                        at::Tensor& dx, at::Tensor& dz, at::Tensor& dh) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C, R = w.reduced;
  const auto net = make_gate_net<acc_t>(w, C, act, gate);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  const acc_t* sp = pooled.data_ptr<acc_t>();
  const acc_t* mp = kMax ? xmax.data_ptr<acc_t>() : nullptr;
  acc_t* dzp = dz.data_ptr<acc_t>();
  acc_t* dhp = w.two_layer() ? dh.data_ptr<acc_t>() : nullptr;
  const acc_t mean_scale = (kMax ? acc_t(0.5) : acc_t(1)) / static_cast<acc_t>(L.HW);

  // Per-sample scratch: h[R] a[R] z[C] g[C] dg[C] count[C] ds[C] dh[R].
  const int64_t scratch_size = 3 * R + 5 * C;
  struct View {
    acc_t *h, *a, *z, *g, *dg, *count, *ds, *dh;
  };
  auto view = [&](acc_t* p) {
    return View{p, p + R, p + 2 * R, p + 2 * R + C, p + 2 * R + 2 * C, p + 2 * R + 3 * C,
                p + 2 * R + 4 * C, p + 2 * R + 5 * C};
  };
  auto reduce_range = [&](int64_t b, const View& v, int64_t c0, int64_t c1, const auto& hook) {
    const int64_t off = b * L.sample();
    reduce_grad_channels<kMax>(dyp + off, xp + off, L, c0, c1, kMax ? mp + b * C : nullptr, v.dg,
                               v.count, hook);
  };
  // Gate backward of sample b (its statistics in v); returns the hook that writes dx.
  auto gate_sample = [&](int64_t b, const View& v) {
    net.forward(sp + b * C, v.h, v.a, v.z);
    for (int64_t c = 0; c < C; ++c) v.g[c] = gate_forward(v.z[c], static_cast<int>(gate));
    net.backward(v.h, v.z, v.dg, dzp + b * C, v.dh, v.ds);
    if (dhp) std::copy(v.dh, v.dh + R, dhp + b * R);
    for (int64_t c = 0; c < C; ++c) {
      if (kMax) v.count[c] = acc_t(0.5) * v.ds[c] / v.count[c];  // d max, shared by the ties
      v.ds[c] *= mean_scale;                                      // d mean
    }
    const int64_t off = b * L.sample();
    return ApplyGrad<kMax, scalar_t, acc_t>{dyp + off, xp + off, v.g, v.ds,
                                            kMax ? mp + b * C : nullptr, v.count, dxp + off, &L};
  };

  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      // Two scratch sets: sample b's gates stay live while b + 1 is reduced.
      std::vector<acc_t> scratch(2 * scratch_size);
      const View views[2] = {view(scratch.data()), view(scratch.data() + scratch_size)};
      pipeline_samples(
          b0, b1, L, [&](int64_t b, const auto& hook) { reduce_range(b, views[b & 1], 0, C, hook); },
          [&](int64_t b) { return gate_sample(b, views[b & 1]); });
    });
    return;
  }
  // Fewer samples than threads: split each sample's passes between threads.
  std::vector<acc_t> scratch(scratch_size);
  const View v = view(scratch.data());
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain,
                     [&](int64_t c0, int64_t c1) { reduce_range(b, v, c0, c1, NoHook{}); });
    const auto hook = gate_sample(b, v);
    at::parallel_for(0, L.rows(), 1, [&](int64_t r0, int64_t r1) { run_hook(hook, L, r0, r1); });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> se_forward_cpu(
    const at::Tensor& x, const at::Tensor& w1, const c10::optional<at::Tensor>& b1,
    const c10::optional<at::Tensor>& w2, const c10::optional<at::Tensor>& b2, int64_t pool,
    int64_t act, int64_t gate) {
  const SEWeights w = se_prepare(x, w1, b1, w2, b2, pool, act, gate);
  SEForwardOutputs out = se_forward_outputs(x, pool);
  if (x.numel() == 0) return {out.y, out.pooled, out.xmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_forward_cpu", [&] {
    se_forward_kernel<scalar_t>(x, w, pool, act, gate, out.y, out.pooled, out.xmax);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "se_backward_cpu", [&] {
    if (pool == kAvgMax)
      se_backward_kernel<true, scalar_t>(dy, x, pooled, xmax, w, act, gate, out.dx, out.dz, out.dh);
    else
      se_backward_kernel<false, scalar_t>(dy, x, pooled, xmax, w, act, gate, out.dx, out.dz, out.dh);
  });
  return {out.dx, out.dz, out.dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) {
  m.impl("se_forward", &se_forward_cpu);
  m.impl("se_backward", &se_backward_cpu);
}

}  // namespace attnkernels
