// SimAM on the CPU (semantics in csrc/schemas/simam_schema.cpp).
//
// Forward: a statistics pass (per (n, c): mean and the sum of squared
// deviations, exact per chunk of positions, two reads of the chunk while it is
// in cache, chunks merged in order) and an apply pass. Backward: a reduction
// pass (A and B per (n, c)) and an apply pass. Each statistic is formed by
// one task in a fixed order: results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/dispatch.h"
#include "../common/simam.h"
#include "tasks.h"

namespace attnkernels {
namespace {

constexpr int64_t kPlaneChunk = 512;  // NCHW: positions per chunk of one plane
constexpr int64_t kPixelChunk = 64;   // channels_last: positions per chunk of a channel block

// The per-(n, c) reduction of one pass over x (and dy): for each chunk of
// positions, f.chunk(values) gives what the chunk adds; f.finish(b, c)
// stores. Forward: Stats; backward: GradSums.
template <typename scalar_t>
struct Stats {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  int64_t HW;
  double e_lambda;
  acc_t *mean, *denom;

  // Exact statistics of n values v(i), then merged into s.
  template <typename V>
  static void add_chunk(MeanM2<acc_t>& s, int64_t n, const V& v) {
    const acc_t m = lane_sum<acc_t>(n, v) / static_cast<acc_t>(n);
    const acc_t m2 = lane_sum<acc_t>(n, [&](int64_t i) {
      const acc_t d = v(i) - m;
      return d * d;
    });
    s.merge(static_cast<acc_t>(n), m, m2);
  }
  void store(int64_t nc, const MeanM2<acc_t>& s) const {
    mean[nc] = s.mean;
    denom[nc] = simam_denom(s.m2, HW, e_lambda);
  }
  void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const scalar_t* p = x + (b * C + c) * HW;
    MeanM2<acc_t> s;
    for (int64_t i0 = 0; i0 < HW; i0 += kPlaneChunk) {
      const int64_t n = std::min(kPlaneChunk, HW - i0);
      const scalar_t* q = p + i0;
      pf.span_ahead(q, n);
      add_chunk(s, n, [&](int64_t i) { return static_cast<acc_t>(q[i]); });
    }
    store(b * C + c, s);
  }
  void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0;
    MeanM2<acc_t> s[kBlockC];
    acc_t m[kBlockC], m2[kBlockC];
    const scalar_t* base = x + b * C * HW + c0;
    for (int64_t p0 = 0; p0 < HW; p0 += kPixelChunk) {
      const int64_t n = std::min(kPixelChunk, HW - p0);
      std::fill(m, m + nc, acc_t(0));
      std::fill(m2, m2 + nc, acc_t(0));
      for (int64_t p = p0; p < p0 + n; ++p)
        for (int64_t c = 0; c < nc; ++c) m[c] += static_cast<acc_t>(base[p * C + c]);
      for (int64_t c = 0; c < nc; ++c) m[c] /= static_cast<acc_t>(n);
      for (int64_t p = p0; p < p0 + n; ++p)
        for (int64_t c = 0; c < nc; ++c) {
          const acc_t d = static_cast<acc_t>(base[p * C + c]) - m[c];
          m2[c] += d * d;
        }
      for (int64_t c = 0; c < nc; ++c) s[c].merge(static_cast<acc_t>(n), m[c], m2[c]);
    }
    for (int64_t c = 0; c < nc; ++c) store(b * C + c0 + c, s[c]);
  }
};

// Backward sums per (n, c): A = sum t (x - mean), B = sum t d, with
// t = dy * x * s (1 - s).
template <typename scalar_t>
struct GradSums {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *x, *dy;
  int64_t HW;
  const acc_t *mean, *denom;
  acc_t *A, *B;

  static void term(acc_t v, acc_t g, acc_t mu, acc_t den, acc_t& a, acc_t& b) {
    const acc_t dev = v - mu, s = simam_gate(dev, den), t = g * v * s * (acc_t(1) - s);
    a += t * dev;
    b += t * (dev * dev);
  }
  void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const int64_t nc = b * C + c, off = nc * HW;
    const acc_t mu = mean[nc], den = denom[nc];
    acc_t sa[kLanes] = {}, sb[kLanes] = {};
    int64_t i = 0;
    pf.span_ahead(x + off, HW);
    pf.span_ahead(dy + off, HW);
    for (; i + kLanes <= HW; i += kLanes)
      for (int l = 0; l < kLanes; ++l)
        term(static_cast<acc_t>(x[off + i + l]), static_cast<acc_t>(dy[off + i + l]), mu, den,
             sa[l], sb[l]);
    acc_t ta = 0, tb = 0;
    for (int l = 0; l < kLanes; ++l) {
      ta += sa[l];
      tb += sb[l];
    }
    for (; i < HW; ++i)
      term(static_cast<acc_t>(x[off + i]), static_cast<acc_t>(dy[off + i]), mu, den, ta, tb);
    A[nc] = ta;
    B[nc] = tb;
  }
  void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0, row = b * C + c0;
    acc_t sa[kBlockC] = {}, sb[kBlockC] = {};
    const int64_t base = b * C * HW + c0;
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < nc; ++c)
        term(static_cast<acc_t>(x[base + p * C + c]), static_cast<acc_t>(dy[base + p * C + c]),
             mean[row + c], denom[row + c], sa[c], sb[c]);
    for (int64_t c = 0; c < nc; ++c) {
      A[row + c] = sa[c];
      B[row + c] = sb[c];
    }
  }
};

// y = x * s; with kGrad (in = dy, out = dx): dx = dy * s + (x - mean)(k1 t - k2) - k3.
// Per-(n, c) values are (N, C): a row of a channels_last position reads them in order.
template <bool kGrad, typename scalar_t>
struct ApplyRows {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g;
  const scalar_t *x, *dy;
  scalar_t* out;
  const acc_t *mean, *denom;
  const SimAMGradCoefs<acc_t>* coefs;  // kGrad: (N, C)

  acc_t value(int64_t i, int64_t nc) const {
    const acc_t v = static_cast<acc_t>(x[i]), dev = v - mean[nc];
    const acc_t s = simam_gate(dev, denom[nc]);
    if (!kGrad) return v * s;
    const acc_t gy = static_cast<acc_t>(dy[i]), t = gy * v * s * (acc_t(1) - s);
    const SimAMGradCoefs<acc_t>& k = coefs[nc];
    return gy * s + dev * (k.k1 * t - k.k2) - k.k3;
  }
  void row_nchw(int64_t b, int64_t c, int64_t h) const {
    const int64_t nc = b * g.C + c, off = (nc * g.H + h) * g.W;
    g.pf.span_ahead(x + off, g.W);
    if (kGrad) g.pf.span_ahead(dy + off, g.W);
    for (int64_t w = 0; w < g.W; ++w) out[off + w] = static_cast<scalar_t>(value(off + w, nc));
  }
  void row_nhwc(int64_t b, int64_t h, int64_t w) const {
    const int64_t off = b * g.sample() + (h * g.W + w) * g.C;
    g.pf.span_ahead(x + off, g.C);
    if (kGrad) g.pf.span_ahead(dy + off, g.C);
    for (int64_t c = 0; c < g.C; ++c) out[off + c] = static_cast<scalar_t>(value(off + c, b * g.C + c));
  }
};

template <typename Pass>
void reduce(const Geometry& g, const Pass& pass) {
  for_tasks(
      g, [&](int64_t b, int64_t c) { pass.plane(b, c, g.C, g.pf); },
      [&](int64_t b, int64_t c0, int64_t c1) { pass.block(b, c0, c1, g.C); });
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
    reduce(g, Stats<scalar_t>{xp, g.H * g.W, e_lambda, mean, denom});
    for_elements(g, ApplyRows<false, scalar_t>{g, xp, nullptr, out.y.data_ptr<scalar_t>(), mean,
                                               denom, nullptr});
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
    std::vector<acc_t> A(g.B * g.C), B(g.B * g.C);
    reduce(g, GradSums<scalar_t>{xp, dyp, HW, mp, dp, A.data(), B.data()});
    std::vector<SimAMGradCoefs<acc_t>> coefs;
    coefs.reserve(g.B * g.C);
    for (int64_t nc = 0; nc < g.B * g.C; ++nc) coefs.emplace_back(A[nc], B[nc], dp[nc], HW);
    for_elements(g, ApplyRows<true, scalar_t>{g, xp, dyp, dx.data_ptr<scalar_t>(), mp, dp,
                                              coefs.data()});
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_SIMAM_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
