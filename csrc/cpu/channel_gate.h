// Channel-gate passes on the CPU, shared by every family whose output is
// y = x * g[b, c] with g computed per sample from per-(b, c) statistics of x
// (Squeeze-and-Excitation, ECA).
//
// Forward, per sample: pool x over H*W, run the family's gate, write x * g.
// Backward, per sample: reduce sum(dy * x) (and the argmax counts), run the
// gate's backward, write dx. When a thread owns several samples, the reduction
// of sample b + 1 runs in the same loop as the writes of sample b, and each
// sample's slab is re-read while it is still in cache. Each (b, c) statistic
// is reduced by one thread in a fixed order: results do not depend on the
// thread count. Internal to csrc/cpu/ (everything here has internal linkage).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/gate_math.h"
#include "simd.h"

namespace attnkernels {
namespace {

constexpr int kLanes = 16;  // independent partial sums, so the compiler vectorises

// kTile dot products sharing the row a: out[t] = sum_i a[i] * b[t * ldb + i],
// with independent partial sums (vectorisable) in a fixed order that does not
// depend on kTile, so a batched gate network gives the per-sample numbers.
template <int kTile, typename acc_t>
inline void dot_tile(const acc_t* a, const acc_t* b, int64_t ldb, int64_t n, acc_t* out) {
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
void linear_rows(const acc_t* W, const acc_t* bias, const acc_t* in, int64_t nb, int64_t in_dim,
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
  // Off where the sample's x was just read by its pool (there it only cost
  // time: 2x at batch 1 on the AMD EPYC, nothing gained at 16x256x56x56).
  Prefetch pf = Prefetch(0);

  struct Row {
    const scalar_t* __restrict__ x;
    scalar_t* __restrict__ y;
    acc_t g;
    const Prefetch& pf;
    // The compiler does not take __restrict__ on members, so a per-element
    // loop stays scalar (it cannot rule out y aliasing x): float takes four
    // explicit vectors, other types load every lane before storing any.
    void block(int64_t i) const {
      pf.ahead(x + i);
      if constexpr (std::is_same_v<scalar_t, float>) {
        const f4 gv = splat4(g);
        f4 v[4];
        for (int k = 0; k < 4; ++k) v[k] = load4(x + i + 4 * k) * gv;
        for (int k = 0; k < 4; ++k) store4(y + i + 4 * k, v[k]);
        return;
      }
      acc_t v[kLanes];
      for (int l = 0; l < kLanes; ++l) v[l] = static_cast<acc_t>(x[i + l]);
      for (int l = 0; l < kLanes; ++l) y[i + l] = static_cast<scalar_t>(v[l] * g);
    }
    void one(int64_t i) const { y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * g); }
  };
  Row row(int64_t c) const { return {x + c * L->HW, y + c * L->HW, g[c], pf}; }
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
    // Explicit vectors and no prefetch, as ApplyGate's (the reduction just read dy and x).
    void block(int64_t i) const {
      if constexpr (std::is_same_v<scalar_t, float>) {
        const f4 gv = splat4(g), dm = splat4(dmean);
        f4 v[4];
        for (int k = 0; k < 4; ++k) {
          v[k] = load4(dy + i + 4 * k) * gv + dm;
          if (kMax) v[k] += load4(x + i + 4 * k) == splat4(mx) ? splat4(dmax) : splat4(0.f);
        }
        for (int k = 0; k < 4; ++k) store4(dx + i + 4 * k, v[k]);
        return;
      }
      acc_t v[kLanes];
      for (int l = 0; l < kLanes; ++l) v[l] = static_cast<acc_t>(dy[i + l]) * g + dmean;
      if (kMax)
        for (int l = 0; l < kLanes; ++l)
          v[l] += static_cast<acc_t>(x[i + l]) == mx ? dmax : acc_t(0);
      for (int l = 0; l < kLanes; ++l) dx[i + l] = static_cast<scalar_t>(v[l]);
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
void run_hook(const Hook& hook, const Layout& L, int64_t r0, int64_t r1) {
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
void pool_channels(const scalar_t* xs, const Layout& L, int64_t c0, int64_t c1, acc_t* sum,
                   acc_t* mx, const Hook& hook, const Prefetch& pf) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      const auto row = hook.row(c);
      acc_t lane[kLanes] = {};
      acc_t lmax[kLanes];
      for (int l = 0; l < kLanes; ++l) lmax[l] = kNegInf;
      int64_t i = 0;
      if constexpr (std::is_same_v<scalar_t, float>) {
        // The same lanes in four vectors: bitwise the scalar loop's result.
        // The max is the cheap one (max_fast4); where a NaN reached the sums
        // (any NaN element does), the blocks' max runs again with max_nan4.
        f4 a[4] = {}, m[4];
        for (auto& v : m) v = splat4(kNegInf);
        for (; i + kLanes <= L.HW; i += kLanes) {
          pf.ahead(p + i);
          for (int k = 0; k < 4; ++k) {
            const f4 v = load4(p + i + 4 * k);
            a[k] += v;
            if (kMax) m[k] = max_fast4(m[k], v);
          }
          row.block(i);
        }
        if (kMax && any_nan(reinterpret_cast<const float*>(a), kLanes)) {
          for (auto& v : m) v = splat4(kNegInf);
          for (int64_t j = 0; j < i; j += kLanes)
            for (int k = 0; k < 4; ++k) m[k] = max_nan4(m[k], load4(p + j + 4 * k));
        }
        for (int k = 0; k < 4; ++k) {
          store4(lane + 4 * k, a[k]);
          store4(lmax + 4 * k, m[k]);
        }
      }
      for (; i + kLanes <= L.HW; i += kLanes) {
        pf.ahead(p + i);
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
    const int64_t ahead = rows_ahead<scalar_t>(c1 - c0) * L.C;
    for (int64_t p = 0; p < L.HW; ++p) {
      const scalar_t* row = xs + p * L.C;
      pf.span(row + ahead + c0, c1 - c0);
      int64_t c = c0;
      if constexpr (std::is_same_v<scalar_t, float>) {  // the same sums, four channels at a time
        for (; c + 4 <= c1; c += 4) {
          const f4 v = load4(row + c);
          store4(sum + c, load4(sum + c) + v);
          if (kMax) store4(mx + c, max_nan4(load4(mx + c), v));
        }
      }
      for (; c < c1; ++c) {
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
void reduce_grad_channels(const scalar_t* dys, const scalar_t* xs, const Layout& L, int64_t c0,
                          int64_t c1, const acc_t* mx, acc_t* dg, acc_t* count, const Hook& hook,
                          const Prefetch& pf) {
  if (!L.channels_last()) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* p = xs + c * L.HW;
      const scalar_t* q = dys + c * L.HW;
      const auto row = hook.row(c);
      acc_t lane[kLanes] = {};
      acc_t lcount[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= L.HW; i += kLanes) {
        pf.ahead(p + i);
        pf.ahead(q + i);
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
    const int64_t ahead = rows_ahead<scalar_t>(c1 - c0) * L.C;
    for (int64_t p = 0; p < L.HW; ++p) {
      const scalar_t* xr = xs + p * L.C;
      const scalar_t* dr = dys + p * L.C;
      pf.span(xr + ahead + c0, c1 - c0);
      pf.span(dr + ahead + c0, c1 - c0);
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

// Pools sample b's channels [c0, c1) into pooled (mean, or 0.5 * mean + 0.5 *
// max with kMax; the max also into xmax), running hook in the same loop.
template <bool kMax, typename scalar_t, typename acc_t, typename Hook>
void pool_sample(const scalar_t* x, const Layout& L, int64_t b, int64_t c0, int64_t c1,
                 acc_t* pooled, acc_t* xmax, const Hook& hook, const Prefetch& pf) {
  const int64_t C = L.C;
  acc_t* sp = pooled + b * C;
  acc_t* mp = kMax ? xmax + b * C : nullptr;
  pool_channels<kMax>(x + b * L.sample(), L, c0, c1, sp, mp, hook, pf);
  const acc_t inv_hw = acc_t(1) / static_cast<acc_t>(L.HW);
  for (int64_t c = c0; c < c1; ++c) {
    acc_t v = sp[c] * inv_hw;
    if (kMax) v = acc_t(0.5) * v + acc_t(0.5) * mp[c];
    sp[c] = v;
  }
}

// Forward driver: y = x * g[b, :], where gate(b, scratch) returns sample b's
// C gates (computed from pooled[b, :], written before the call) in scratch.
template <bool kMax, typename scalar_t, typename acc_t, typename Gate>
void channel_gate_forward(const at::Tensor& x, acc_t* pooled, acc_t* xmax, at::Tensor& y,
                          int64_t scratch_size, const Gate& gate) {
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const Prefetch pf(x.nbytes());
  auto apply_hook = [&](int64_t b, const acc_t* g) {
    return ApplyGate<scalar_t, acc_t>{xp + b * L.sample(), g, yp + b * L.sample(), &L};
  };
  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> scratch(scratch_size);
      pipeline_samples(
          b0, b1, L,
          [&](int64_t b, const auto& hook) {
            pool_sample<kMax>(xp, L, b, 0, C, pooled, xmax, hook, pf);
          },
          [&](int64_t b) { return apply_hook(b, gate(b, scratch.data())); });
    });
    return;
  }
  // Fewer samples than threads: split each sample's passes between threads.
  std::vector<acc_t> scratch(scratch_size);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) {
      pool_sample<kMax>(xp, L, b, c0, c1, pooled, xmax, NoHook{}, pf);
    });
    const auto hook = apply_hook(b, gate(b, scratch.data()));
    at::parallel_for(0, L.rows(), 1, [&](int64_t r0, int64_t r1) { run_hook(hook, L, r0, r1); });
  }
}

// What a family's gate backward hands the dx pass, per channel: dx = dy * g +
// dmean (+ dmax where x equals its max).
template <typename acc_t>
struct GateGrads {
  const acc_t *g, *dmean, *dmax;
};

// Backward driver. gate_backward(b, dg, count, scratch) gets sample b's
// sum(dy * x) per channel (and, with kMax, the number of maxima, which it may
// overwrite) and returns its GateGrads (pointers into scratch or count).
template <bool kMax, typename scalar_t, typename acc_t, typename GateBackward>
void channel_gate_backward(const at::Tensor& dy, const at::Tensor& x, const acc_t* xmax,
                           at::Tensor& dx, int64_t scratch_size,
                           const GateBackward& gate_backward) {
  const Layout L(x);
  const int64_t B = x.size(0), C = L.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  const Prefetch pf(x.nbytes());
  // One work set: dg[C], count[C], then the family's scratch.
  const int64_t set_size = 2 * C + scratch_size;
  auto reduce = [&](int64_t b, acc_t* set, int64_t c0, int64_t c1, const auto& hook) {
    const int64_t off = b * L.sample();
    reduce_grad_channels<kMax>(dyp + off, xp + off, L, c0, c1, kMax ? xmax + b * C : nullptr, set,
                               set + C, hook, pf);
  };
  auto finish = [&](int64_t b, acc_t* set) {
    const GateGrads<acc_t> gg = gate_backward(b, set, set + C, set + 2 * C);
    const int64_t off = b * L.sample();
    return ApplyGrad<kMax, scalar_t, acc_t>{dyp + off, xp + off, gg.g, gg.dmean,
                                            kMax ? xmax + b * C : nullptr, gg.dmax, dxp + off, &L};
  };
  if (B >= at::get_num_threads()) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      // Two work sets: sample b's gradients stay live while b + 1 is reduced.
      std::vector<acc_t> sets(2 * set_size);
      auto set = [&](int64_t b) { return sets.data() + (b & 1) * set_size; };
      pipeline_samples(
          b0, b1, L, [&](int64_t b, const auto& hook) { reduce(b, set(b), 0, C, hook); },
          [&](int64_t b) { return finish(b, set(b)); });
    });
    return;
  }
  // Fewer samples than threads: split each sample's passes between threads.
  std::vector<acc_t> set(set_size);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L.HW));
  for (int64_t b = 0; b < B; ++b) {
    at::parallel_for(0, C, grain,
                     [&](int64_t c0, int64_t c1) { reduce(b, set.data(), c0, c1, NoHook{}); });
    const auto hook = finish(b, set.data());
    at::parallel_for(0, L.rows(), 1, [&](int64_t r0, int64_t r1) { run_hook(hook, L, r0, r1); });
  }
}

}  // namespace
}  // namespace attnkernels
