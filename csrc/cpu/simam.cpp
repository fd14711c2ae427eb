// SimAM on the CPU (semantics in csrc/schemas/simam_schema.cpp).
//
// Forward: a statistics pass (per (n, c): mean and the sum of squared
// deviations, exact per chunk of positions, two reads of the chunk while it is
// in cache, chunks merged in order) and an apply pass. Backward: a reduction
// pass (A and B per (n, c)) and an apply pass. NCHW runs both passes plane by
// plane, the apply while the plane is still in cache: x (and dy) are read once
// from memory. Each statistic is formed by one task in a fixed order: results
// do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../common/dispatch.h"
#include "../common/simam.h"
#include "fast_sigmoid.h"
#include "isa.h"
#include "plane_stats.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// SimAM's statistics: mean and denom per (n, c).
template <typename acc_t>
struct SimAMStore {
  int64_t HW;
  double e_lambda;
  acc_t *mean, *denom;
  void operator()(int64_t nc, const MeanM2<acc_t>& s) const {
    mean[nc] = s.mean;
    denom[nc] = simam_denom(s.m2, HW, e_lambda);
  }
};

template <typename T>
ATTNKERNELS_INLINE T gate(T dev, T den) {
  if constexpr (std::is_same_v<T, float>) {
    return fast_sigmoid(dev * dev / den + 0.5f);
  } else {
    return simam_gate(dev, den);
  }
}

// Backward sums per (n, c): A = sum t (x - mean), B = sum t d, with
// t = dy * x * s (1 - s).
template <typename scalar_t>
struct GradSums {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *x, *dy;
  int64_t HW;
  const acc_t *mean, *denom;
  acc_t *A, *B;

  ATTNKERNELS_INLINE static void term(acc_t v, acc_t g, acc_t mu, acc_t den, acc_t& a,
                                      acc_t& b) {
    const acc_t dev = v - mu, s = gate(dev, den), t = g * v * s * (acc_t(1) - s);
    a += t * dev;
    b += t * (dev * dev);
  }
  ATTNKERNELS_INLINE void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const int64_t nc = b * C + c, off = nc * HW;
    const acc_t mu = mean[nc], den = denom[nc];
    const scalar_t* __restrict__ xp = x + off;
    const scalar_t* __restrict__ gp = dy + off;
    acc_t sa[kLanes] = {}, sb[kLanes] = {};
    int64_t i = 0;
    pf.span_ahead(xp, HW);
    pf.span_ahead(gp, HW);
    for (; i + kLanes <= HW; i += kLanes)
      for (int l = 0; l < kLanes; ++l)
        term(static_cast<acc_t>(xp[i + l]), static_cast<acc_t>(gp[i + l]), mu, den, sa[l], sb[l]);
    acc_t ta = 0, tb = 0;
    for (int l = 0; l < kLanes; ++l) {
      ta += sa[l];
      tb += sb[l];
    }
    for (; i < HW; ++i)
      term(static_cast<acc_t>(xp[i]), static_cast<acc_t>(gp[i]), mu, den, ta, tb);
    A[nc] = ta;
    B[nc] = tb;
  }
  // Channels [c0, c1) of sample b, any width (a whole sample: kWholeSamples).
  static constexpr bool kWholeSamples = true;
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0, row = b * C + c0;
    std::vector<acc_t> buf(4 * nc);
    acc_t* __restrict__ mu = buf.data();
    acc_t* __restrict__ den = mu + nc;
    acc_t* __restrict__ sa = den + nc;
    acc_t* __restrict__ sb = sa + nc;
    std::copy(mean + row, mean + row + nc, mu);
    std::copy(denom + row, denom + row + nc, den);
    const int64_t base = b * C * HW + c0;
    for (int64_t p = 0; p < HW; ++p) {
      const scalar_t* __restrict__ xp = x + base + p * C;
      const scalar_t* __restrict__ gp = dy + base + p * C;
      for (int64_t c = 0; c < nc; ++c)
        term(static_cast<acc_t>(xp[c]), static_cast<acc_t>(gp[c]), mu[c], den[c], sa[c], sb[c]);
    }
    std::copy(sa, sa + nc, A + row);
    std::copy(sb, sb + nc, B + row);
  }
};

// The per-(n, c) values the apply pass reads: mean, denom and, for the
// backward, dx = dy * s + (x - mean)(k1 t - k2) - k3 (one array each, so a
// channels_last row reads each in order).
template <typename acc_t>
struct PlaneValues {
  const acc_t *mean, *denom, *k1, *k2, *k3;
};

// One element: y = x * s; with kGrad, dx.
template <bool kGrad, typename acc_t>
ATTNKERNELS_INLINE acc_t apply_value(acc_t v, acc_t g, acc_t mu, acc_t den, acc_t k1, acc_t k2, acc_t k3) {
  const acc_t dev = v - mu, s = gate(dev, den);
  if constexpr (!kGrad) {
    return v * s;
  } else {
    const acc_t t = g * v * s * (acc_t(1) - s);
    return g * s + dev * (k1 * t - k2) - k3;
  }
}

// The apply pass over n elements of x (and dy) from i0, into out; element j
// takes the per-(n, c) values at v0 + j * v_step.
template <bool kGrad, typename scalar_t>
ATTNKERNELS_INLINE void apply_span(const scalar_t* x, const scalar_t* dy, scalar_t* out,
                                   const PlaneValues<at::opmath_type<scalar_t>>& pv,
                                   const Prefetch& pf, int64_t i0, int64_t n, int64_t v0,
                                   int64_t v_step) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* __restrict__ xp = x + i0;
  const scalar_t* __restrict__ gp = kGrad ? dy + i0 : nullptr;
  scalar_t* __restrict__ op = out + i0;
  pf.span_ahead(xp, n);
  if (kGrad) pf.span_ahead(gp, n);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t v = v0 + j * v_step;
    const acc_t gj = kGrad ? static_cast<acc_t>(gp[j]) : acc_t(0);
    op[j] = static_cast<scalar_t>(apply_value<kGrad, acc_t>(
        static_cast<acc_t>(xp[j]), gj, pv.mean[v], pv.denom[v], kGrad ? pv.k1[v] : acc_t(0),
        kGrad ? pv.k2[v] : acc_t(0), kGrad ? pv.k3[v] : acc_t(0)));
  }
}

// The reduction (pass: PlaneStats or GradSums), finish(nc) (the per-(n, c) values
// the apply reads, from the reduction's), and the apply. NCHW: plane by plane,
// the apply right after the plane's reduction, while the plane is in cache
// (x and dy read once from memory). channels_last: the reduction over
// (sample, channel block) tasks, then the apply by positions (C contiguous
// elements, their values in channel order).
template <bool kGrad, typename Pass, typename Finish, typename scalar_t>
void reduce_and_apply(const Geometry& g, const Pass& pass, const Finish& finish,
                      const scalar_t* x, const scalar_t* dy, scalar_t* out,
                      const PlaneValues<at::opmath_type<scalar_t>>& pv) {
  const int64_t HW = g.H * g.W, C = g.C;
  if (!g.cl) {
    at::parallel_for(0, g.B * C, 1, [&](int64_t t0, int64_t t1) {
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        for (int64_t nc = t0; nc < t1; ++nc) {
          pass.plane(nc / C, nc % C, C, g.pf);
          finish(nc);
          apply_span<kGrad>(x, dy, out, pv, g.pf, nc * HW, HW, nc, 0);
        }
      });
    });
    return;
  }
  if (requires { Pass::kWholeSamples; } && g.B >= at::get_num_threads()) {
    // a task per sample: each position's row read whole, in order (the sums
    // are formed as by the channel blocks, in position order: the same bits)
    at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        for (int64_t b = b0; b < b1; ++b) pass.block(b, 0, C, C);
      });
    });
  } else {
    for_tasks(
        g, [](int64_t, int64_t) {},
        [&](int64_t b, int64_t c0, int64_t c1) {
          with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA { pass.block(b, c0, c1, C); });
        });
  }
  for (int64_t nc = 0; nc < g.B * C; ++nc) finish(nc);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C));
  at::parallel_for(0, g.B * HW, grain, [&](int64_t t0, int64_t t1) {
    with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
      for (int64_t t = t0; t < t1; ++t)
        apply_span<kGrad>(x, dy, out, pv, g.pf, t * C, C, (t / HW) * C, 1);
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> simam_forward_cpu(const at::Tensor& x,
                                                                 double e_lambda) {
  SimAMForwardOutputs out = simam_forward_outputs(x);
  if (x.numel() == 0) return {out.y, out.mean, out.denom};
  const Geometry g(x);
  AK_DISPATCH(x, "simam_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    acc_t* mean = out.mean.data_ptr<acc_t>();
    acc_t* denom = out.denom.data_ptr<acc_t>();
    reduce_and_apply<false>(g,
                            PlaneStats<scalar_t, SimAMStore<acc_t>>{
                                xp, g.H * g.W, SimAMStore<acc_t>{g.H * g.W, e_lambda, mean, denom}},
                            [](int64_t) {}, xp, static_cast<const scalar_t*>(nullptr),
                            out.y.data_ptr<scalar_t>(),
                            PlaneValues<acc_t>{mean, denom, nullptr, nullptr, nullptr});
  });
  return {out.y, out.mean, out.denom};
}

at::Tensor simam_backward_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean,
                              const at::Tensor& denom) {
  check_simam_backward_args(dy, x, mean, denom);
  at::Tensor dx = empty_output_like(x);
  if (x.numel() == 0) return dx;
  const Geometry g(x);
  const int64_t HW = g.H * g.W;
  AK_DISPATCH(x, "simam_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    const acc_t* mp = mean.data_ptr<acc_t>();
    const acc_t* dp = denom.data_ptr<acc_t>();
    const int64_t n = g.B * g.C;
    std::vector<acc_t> A(n), B(n), k1(n), k2(n), k3(n);
    const auto coefs = [&](int64_t nc) {
      const SimAMGradCoefs<acc_t> k(A[nc], B[nc], dp[nc], HW);
      k1[nc] = k.k1;
      k2[nc] = k.k2;
      k3[nc] = k.k3;
    };
    reduce_and_apply<true>(g, GradSums<scalar_t>{xp, dyp, HW, mp, dp, A.data(), B.data()}, coefs,
                           xp, dyp, dx.data_ptr<scalar_t>(),
                           PlaneValues<acc_t>{mp, dp, k1.data(), k2.data(), k3.data()});
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_SIMAM_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
