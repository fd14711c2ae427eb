// EMA on the CPU (semantics in csrc/schemas/ema_schema.cpp).
//
// One task per group (b, G): a group's x_g and x2_g are g * H * W values
// (8 x 56 x 56 floats: 100 KB), so after the first read of each the task's
// later sweeps find them in cache. Forward: the strip means, the 1x1 conv and
// gates, the statistics of z (two sweeps: mean, then the centred sum of
// squares), the mean of x2, then per pixel the weight and y = x * s: x and
// x2 read from memory once each, y written once. Backward: dw = s (1 - s)
// sum_c dy x per pixel, the per-channel sums of dw * x2 and dw * xhat, the
// strip sums of dz * x * gate, then dx and dx2 written once each. The
// parameter gradients are per-group partials summed in group order, so no
// result depends on the thread count. Sums accumulate in double, in lanes
// (tasks.h lane_sum: the loops vectorise; AVX2 where the CPU has it, the same
// bits as the baseline build); the map's sigmoid is fast_sigmoid's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../common/dispatch.h"
#include "../common/ema.h"
#include "../common/gate_math.h"
#include "../common/outputs.h"
#include "fast_sigmoid.h"
#include "isa.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// Where a group's elements lie in a dense (NCHW or channels_last) tensor: a
// channel's stride and a position's (row i, column j at (i * W + j) * p).
struct Place {
  int64_t c, p;
  explicit Place(const at::Tensor& t)
      : c(t.stride(1)), p(t.size(3) > 1 ? t.stride(3) : t.stride(2)) {}
};

struct Shape {
  int64_t B, G, g, H, W;
  Shape(const at::Tensor& x, int64_t groups)
      : B(x.size(0)), G(groups), g(x.size(1) / groups), H(x.size(2)), W(x.size(3)) {}
  int64_t HW() const { return H * W; }
  int64_t T() const { return H + W; }
};

// One group's strip means: st[k, i] over W, st[k, H + j] over H.
template <typename scalar_t, typename acc_t>
ATTNKERNELS_INLINE void strip_means(const scalar_t* xg, int64_t xc, int64_t xp, int64_t g,
                                    int64_t H, int64_t W, acc_t* st, double* colsum) {
  const int64_t T = H + W;
  for (int64_t k = 0; k < g; ++k) {
    const scalar_t* xk = xg + k * xc;
    std::fill(colsum, colsum + W, 0.0);
    for (int64_t i = 0; i < H; ++i) {
      const scalar_t* row = xk + i * W * xp;
      const double r = lane_sum<double>(W, [&](int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        const double v = static_cast<double>(row[j * xp]);
        colsum[j] += v;
        return v;
      });
      st[k * T + i] = static_cast<acc_t>(r / static_cast<double>(W));
    }
    for (int64_t j = 0; j < W; ++j)
      st[k * T + H + j] = static_cast<acc_t>(colsum[j] / static_cast<double>(H));
  }
}

// sum over the plane of term(i, j), rows in order, each in lanes (double).
template <typename Term>
ATTNKERNELS_INLINE double plane_sum(int64_t H, int64_t W, const Term& term) {
  double t = 0;
  for (int64_t i = 0; i < H; ++i)
    t += lane_sum<double>(W, [&](int64_t j) ATTNKERNELS_INLINE_LAMBDA { return term(i, j); });
  return t;
}

template <typename scalar_t>
struct Forward {
  using acc_t = at::opmath_type<scalar_t>;
  Shape s;
  const scalar_t* x;
  const scalar_t* x2;
  scalar_t* y;
  Place px, px2;
  int64_t x_bstride, x2_nstride;
  const acc_t *w1, *b1, *gw, *gb;
  double eps;
  acc_t *strips, *gates, *stats, *smap;

  // kUnit: x and x2 NCHW (a position's stride 1, known to the compiler)
  template <bool kUnit>
  ATTNKERNELS_INLINE void group(int64_t n, double* buf) const {
    const int64_t g = s.g, H = s.H, W = s.W, T = s.T(), HW = s.HW();
    const int64_t xp = kUnit ? 1 : px.p, x2p = kUnit ? 1 : px2.p;
    const int64_t xoff = (n / s.G) * x_bstride + (n % s.G) * g * px.c;
    const scalar_t* xg = x + xoff;
    const scalar_t* x2g = x2 + n * x2_nstride;
    scalar_t* yg = y + xoff;
    acc_t* st = strips + n * g * T;
    acc_t* ga = gates + n * g * T;
    acc_t* mu = stats + n * 4 * g;
    acc_t *rstd = mu + g, *x11 = mu + 2 * g, *x21 = mu + 3 * g;
    acc_t* sp = smap + n * HW;
    double* wsum = buf;         // HW
    double* colsum = buf + HW;  // W
    strip_means(xg, px.c, xp, g, H, W, st, colsum);
    // the 1x1 conv over the strips and the gates
    for (int64_t k = 0; k < g; ++k)
      for (int64_t t = 0; t < T; ++t) {
        double a = b1 ? static_cast<double>(b1[k]) : 0.0;
        for (int64_t m = 0; m < g; ++m)
          a += static_cast<double>(w1[k * g + m]) * static_cast<double>(st[m * T + t]);
        ga[k * T + t] = sigmoid(static_cast<acc_t>(a));
      }
    // per channel: mean and centred variance of z = x * gh * gw; mean of x2
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t* xk = xg + k * px.c;
      const scalar_t* x2k = x2g + k * px2.c;
      const acc_t* gh = ga + k * T;
      const acc_t* gwv = gh + H;
      const auto z = [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        return static_cast<acc_t>(xk[(i * W + j) * xp]) * gh[i] * gwv[j];
      };
      const double mean = plane_sum(H, W, [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        return static_cast<double>(z(i, j));
      }) / static_cast<double>(HW);
      const double ss = plane_sum(H, W, [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        const double d = static_cast<double>(z(i, j)) - mean;
        return d * d;
      });
      const double sum2 = plane_sum(H, W, [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        return static_cast<double>(x2k[(i * W + j) * x2p]);
      });
      mu[k] = static_cast<acc_t>(mean);
      rstd[k] = static_cast<acc_t>(1.0 / std::sqrt(ss / static_cast<double>(HW) + eps));
      x21[k] = static_cast<acc_t>(sum2 / static_cast<double>(HW));  // until its softmax
    }
    softmax_over(gb, g, 1, x11, 1);  // the mean of x1 over H*W is gn_b exactly
    softmax_over(x21, g, 1, x21, 1);
    // per pixel: w = sum_k x11 x2 + x21 x1, s = sigmoid(w), y = x * s
    std::fill(wsum, wsum + HW, 0.0);
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t* xk = xg + k * px.c;
      const scalar_t* x2k = x2g + k * px2.c;
      const acc_t* gh = ga + k * T;
      const acc_t* gwv = gh + H;
      const acc_t a1 = x11[k], a2 = x21[k] * gw[k] * rstd[k], b2 = x21[k] * gb[k], m = mu[k];
      for (int64_t i = 0; i < H; ++i) {
        double* wr = wsum + i * W;
        const acc_t ghi = gh[i];
        for (int64_t j = 0; j < W; ++j) {
          const int64_t p = i * W + j;
          const acc_t z = static_cast<acc_t>(xk[p * xp]) * ghi * gwv[j];
          wr[j] += static_cast<double>(a1 * static_cast<acc_t>(x2k[p * x2p]) + a2 * (z - m) + b2);
        }
      }
    }
    for (int64_t p = 0; p < HW; ++p) sp[p] = fast_sigmoid(static_cast<acc_t>(wsum[p]));
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t* xk = xg + k * px.c;
      scalar_t* yk = yg + k * px.c;
      for (int64_t p = 0; p < HW; ++p)
        yk[p * xp] = static_cast<scalar_t>(static_cast<acc_t>(xk[p * xp]) * sp[p]);
    }
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ema_forward_cpu(
    const at::Tensor& x, const at::Tensor& x2, const at::Tensor& w1,
    const c10::optional<at::Tensor>& b1, const c10::optional<at::Tensor>& gn_w,
    const c10::optional<at::Tensor>& gn_b, int64_t groups, double eps) {
  check_ema_inputs(x, x2, groups);
  const Shape s(x, groups);
  const EmaSmallParams prms = ema_small_params(x, w1, b1, gn_w, gn_b, s.g);
  const at::Tensor &w = prms.w1, &bias = prms.b1, &gw = prms.gn_w, &gb = prms.gn_b;
  const int64_t N = s.B * s.G;
  at::Tensor y = empty_output_like(x);
  const std::vector<at::Tensor> saved = ema_empty_saved(x, groups);
  const at::Tensor &strips = saved[0], &gates = saved[1], &stats = saved[2], &smap = saved[3];
  if (x.numel() == 0) return {y, strips, gates, stats, smap};
  AK_DISPATCH(x, "ema_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Forward<scalar_t> f{s, x.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(),
                              y.data_ptr<scalar_t>(), Place(x), Place(x2), x.stride(0),
                              x2.stride(0), w.data_ptr<acc_t>(),
                              data_or_null<acc_t>(bias), gw.data_ptr<acc_t>(),
                              gb.data_ptr<acc_t>(), eps, strips.data_ptr<acc_t>(),
                              gates.data_ptr<acc_t>(), stats.data_ptr<acc_t>(),
                              smap.data_ptr<acc_t>()};
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<double> buf(s.HW() + s.W);
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        if (f.px.p == 1 && f.px2.p == 1)
          for (int64_t n = n0; n < n1; ++n) f.template group<true>(n, buf.data());
        else
          for (int64_t n = n0; n < n1; ++n) f.template group<false>(n, buf.data());
      });
    });
  });
  return {y, strips, gates, stats, smap};
}

template <typename scalar_t>
struct Backward {
  using acc_t = at::opmath_type<scalar_t>;
  Shape s;
  const scalar_t *dy, *x, *x2;
  scalar_t *dx, *dx2;
  Place px, px2;
  int64_t x_bstride, x2_nstride;
  const acc_t *w1, *gw, *gb, *strips, *gates, *stats, *smap;
  // per group: dw1 (g * g), db1, dgn_w, dgn_b (g each)
  double* partials;

  int64_t partial_size() const { return s.g * s.g + 3 * s.g; }
  int64_t scratch_size() const { return s.HW() + 6 * s.g + 2 * s.g * s.T(); }

  template <bool kUnit>
  ATTNKERNELS_INLINE void group(int64_t n, double* buf) const {
    const int64_t g = s.g, H = s.H, W = s.W, T = s.T(), HW = s.HW();
    const int64_t xp = kUnit ? 1 : px.p, x2p = kUnit ? 1 : px2.p;
    const int64_t xoff = (n / s.G) * x_bstride + (n % s.G) * g * px.c;
    const scalar_t *xg = x + xoff, *dyg = dy + xoff, *x2g = x2 + n * x2_nstride;
    scalar_t *dxg = dx + xoff, *dx2g = dx2 + n * x2_nstride;
    const acc_t* st = strips + n * g * T;
    const acc_t* ga = gates + n * g * T;
    const acc_t *mu = stats + n * 4 * g, *rstd = mu + g, *x11 = mu + 2 * g, *x21 = mu + 3 * g;
    const acc_t* sp = smap + n * HW;
    double* part = partials + n * partial_size();
    double *pw1 = part, *pb1 = part + g * g, *pgw = pb1 + g, *pgb = pgw + g;
    std::fill(buf, buf + scratch_size(), 0.0);
    double* dw = buf;  // HW
    double *S1 = dw + HW, *Sxh = S1 + g, *dm1 = Sxh + g, *dm2 = dm1 + g, *a11 = dm2 + g;
    double* a21 = a11 + g;
    double* da = a21 + g;  // (g, T): the gates' pre-activation gradients
    double* dst = da + g * T;  // (g, T): the strips' gradients
    // dw[p] = s (1 - s) sum_k dy x
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t *xk = xg + k * px.c, *dyk = dyg + k * px.c;
      for (int64_t p = 0; p < HW; ++p)
        dw[p] += static_cast<double>(dyk[p * xp]) * static_cast<double>(xk[p * xp]);
    }
    for (int64_t p = 0; p < HW; ++p) {
      const double sv = static_cast<double>(sp[p]);
      dw[p] *= sv * (1.0 - sv);
    }
    const double D = lane_sum<double>(HW, [&](int64_t p) ATTNKERNELS_INLINE_LAMBDA { return dw[p]; });
    const double inv = 1.0 / static_cast<double>(HW);
    // per channel: S1 = sum dw x2, Sxh = sum dw xhat
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t *xk = xg + k * px.c, *x2k = x2g + k * px2.c;
      const acc_t* gh = ga + k * T;
      const acc_t* gwv = gh + H;
      const double m = mu[k], r = rstd[k];
      S1[k] = plane_sum(H, W, [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        return dw[i * W + j] * static_cast<double>(x2k[(i * W + j) * x2p]);
      });
      Sxh[k] = plane_sum(H, W, [&](int64_t i, int64_t j) ATTNKERNELS_INLINE_LAMBDA {
        const acc_t z = static_cast<acc_t>(xk[(i * W + j) * xp]) * gh[i] * gwv[j];
        return dw[i * W + j] * (static_cast<double>(z) - m) * r;
      });
    }
    // the softmaxes' backward: x11 = softmax(mean x1 = gn_b), x21 = softmax(mean x2);
    // dx21 = sum dw x1 = gn_w Sxh + gn_b D (in dm2 until then)
    for (int64_t k = 0; k < g; ++k) {
      a11[k] = x11[k];
      a21[k] = x21[k];
      dm2[k] = static_cast<double>(gw[k]) * Sxh[k] + static_cast<double>(gb[k]) * D;
    }
    softmax_over_backward(a11, S1, g, 1, dm1, 1);
    softmax_over_backward(a21, dm2, g, 1, dm2, 1);
    for (int64_t k = 0; k < g; ++k) {
      pgw[k] = a21[k] * Sxh[k];
      pgb[k] = a21[k] * D + dm1[k];
    }
    // dz = rstd gn_w x21 (dw - D / HW - xhat Sxh / HW); the strip sums of dz * x * gate; dx2
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t* xk = xg + k * px.c;
      scalar_t* dx2k = dx2g + k * px2.c;
      const acc_t* gh = ga + k * T;
      const acc_t* gwv = gh + H;
      const double m = mu[k], r = rstd[k], cz = r * static_cast<double>(gw[k]) * a21[k];
      const double c0 = D * inv, c1 = Sxh[k] * inv, c2 = dm2[k] * inv, a1 = a11[k];
      double* dah = da + k * T;
      double* daw = dah + H;
      for (int64_t i = 0; i < H; ++i) {
        const double ghi = static_cast<double>(gh[i]);
        dah[i] = lane_sum<double>(W, [&](int64_t j) ATTNKERNELS_INLINE_LAMBDA {
          const int64_t p = i * W + j;
          const acc_t xa = static_cast<acc_t>(xk[p * xp]);
          const double xv = static_cast<double>(xa);
          const double xhat = (static_cast<double>(xa * gh[i] * gwv[j]) - m) * r;
          const double dzx = cz * (dw[p] - c0 - xhat * c1) * xv;
          daw[j] += dzx * ghi;
          dx2k[p * x2p] = static_cast<scalar_t>(a1 * dw[p] + c2);
          return dzx * static_cast<double>(gwv[j]);
        });
      }
      for (int64_t t = 0; t < T; ++t) {
        const double gt = static_cast<double>(gh[t]);
        dah[t] *= gt * (1.0 - gt);
      }
    }
    // the 1x1 conv's backward: dw1, db1 (partials) and the strips' gradient
    for (int64_t k = 0; k < g; ++k)
      for (int64_t t = 0; t < T; ++t) {
        const double d = da[k * T + t];
        pb1[k] += d;
        for (int64_t m = 0; m < g; ++m) {
          pw1[k * g + m] += d * static_cast<double>(st[m * T + t]);
          dst[m * T + t] += static_cast<double>(w1[k * g + m]) * d;
        }
      }
    // dx = dy s + dz gh gw + dstrip_h / W + dstrip_w / H
    for (int64_t k = 0; k < g; ++k) {
      const scalar_t *xk = xg + k * px.c, *dyk = dyg + k * px.c;
      scalar_t* dxk = dxg + k * px.c;
      const acc_t* gh = ga + k * T;
      const acc_t* gwv = gh + H;
      const double m = mu[k], r = rstd[k], cz = r * static_cast<double>(gw[k]) * a21[k];
      const double c0 = D * inv, c1 = Sxh[k] * inv;
      const double* dsw = dst + k * T + H;
      for (int64_t i = 0; i < H; ++i) {
        const double ph = dst[k * T + i] / static_cast<double>(W), ghi = gh[i];
        for (int64_t j = 0; j < W; ++j) {
          const int64_t p = i * W + j;
          const acc_t xa = static_cast<acc_t>(xk[p * xp]);
          const double xhat = (static_cast<double>(xa * gh[i] * gwv[j]) - m) * r;
          const double dz = cz * (dw[p] - c0 - xhat * c1);
          dxk[p * xp] = static_cast<scalar_t>(
              static_cast<double>(dyk[p * xp]) * static_cast<double>(sp[p]) +
              dz * ghi * static_cast<double>(gwv[j]) + ph + dsw[j] / static_cast<double>(H));
        }
      }
    }
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ema_backward_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& x2,
                 const at::Tensor& w1, const c10::optional<at::Tensor>& gn_w,
                 const c10::optional<at::Tensor>& gn_b, const at::Tensor& strips,
                 const at::Tensor& gates, const at::Tensor& stats, const at::Tensor& smap,
                 int64_t groups) {
  check_ema_backward(dy, x, x2, groups, {strips, gates, stats, smap});
  const Shape s(x, groups);
  const int64_t N = s.B * s.G;
  const EmaSmallParams prms = ema_small_params(x, w1, c10::nullopt, gn_w, gn_b, s.g);
  const at::Tensor &w = prms.w1, &gw = prms.gn_w, &gb = prms.gn_b;
  const auto acc = x.options().dtype(accumulate_type(x));
  at::Tensor dx = empty_output_like(x);
  at::Tensor dx2 = at::empty_like(x2);
  at::Tensor dw1 = at::zeros({s.g, s.g}, acc), db1 = at::zeros({s.g}, acc);
  at::Tensor dgw = at::zeros({s.g}, acc), dgb = at::zeros({s.g}, acc);
  if (x.numel() == 0) return {dx, dx2, dw1.view(w1.sizes()), db1, dgw, dgb};
  AK_DISPATCH(x, "ema_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Backward<scalar_t> f{s, dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                         x2.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                         dx2.data_ptr<scalar_t>(), Place(x), Place(x2), x.stride(0),
                         x2.stride(0), w.data_ptr<acc_t>(), gw.data_ptr<acc_t>(),
                         gb.data_ptr<acc_t>(), strips.data_ptr<acc_t>(), gates.data_ptr<acc_t>(),
                         stats.data_ptr<acc_t>(), smap.data_ptr<acc_t>(), nullptr};
    std::vector<double> partials(N * f.partial_size(), 0.0);
    f.partials = partials.data();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<double> buf(f.scratch_size());
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        if (f.px.p == 1 && f.px2.p == 1)
          for (int64_t n = n0; n < n1; ++n) f.template group<true>(n, buf.data());
        else
          for (int64_t n = n0; n < n1; ++n) f.template group<false>(n, buf.data());
      });
    });
    // the groups' partials, summed in group order
    const int64_t g = s.g, P = f.partial_size();
    std::vector<double> total(P, 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t q = 0; q < P; ++q) total[q] += partials[n * P + q];
    acc_t* o[4] = {dw1.data_ptr<acc_t>(), db1.data_ptr<acc_t>(), dgw.data_ptr<acc_t>(),
                   dgb.data_ptr<acc_t>()};
    for (int64_t q = 0; q < g * g; ++q) o[0][q] = static_cast<acc_t>(total[q]);
    for (int64_t k = 0; k < g; ++k)
      for (int v = 1; v < 4; ++v) o[v][k] = static_cast<acc_t>(total[g * g + (v - 1) * g + k]);
  });
  return {dx, dx2, dw1.view(w1.sizes()), db1, dgw, dgb};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_EMA_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
