// NAM's channel attention on the CPU (semantics in csrc/schemas/nam_schema.cpp).
//
// Forward with batch statistics: a statistics pass (per (n, c): mean and sum
// of squared deviations, as SimAM's) merged per channel, then an apply pass;
// with running statistics, the apply pass alone. Backward: a reduction pass
// (per (n, c): S1 and S2) merged per channel, then an apply pass. Each
// statistic is formed by one task in a fixed order, the samples merged in
// order: results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/dispatch.h"
#include "../common/nam.h"
#include "fast_sigmoid.h"
#include "isa.h"
#include "plane_stats.h"
#include "tasks.h"

namespace attnkernels {
namespace {

template <typename acc_t>
struct MeanM2Store {
  acc_t *mean, *m2;
  void operator()(int64_t nc, const MeanM2<acc_t>& s) const {
    mean[nc] = s.mean;
    m2[nc] = s.m2;
  }
};

// The per-channel values the passes read, one array each (a channels_last
// row reads them in order).
template <typename acc_t>
struct ChannelValues {
  const acc_t *mean, *a, *b, *k2, *k3;
};

template <typename acc_t>
ATTNKERNELS_INLINE acc_t gate(acc_t v, acc_t mu, acc_t a, acc_t b) {
  return fast_sigmoid((v - mu) * a + b);
}

// Backward sums per (n, c): S1 = sum g, S2 = sum g (x - mean), g = dy x s (1 - s).
template <typename scalar_t>
struct GradSums {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *x, *dy;
  int64_t HW;
  ChannelValues<acc_t> cv;
  acc_t *s1, *s2;

  ATTNKERNELS_INLINE static void term(acc_t v, acc_t d, acc_t mu, acc_t a, acc_t b, acc_t& t1,
                                      acc_t& t2) {
    const acc_t s = gate(v, mu, a, b), g = d * v * s * (acc_t(1) - s);
    t1 += g;
    t2 += g * (v - mu);
  }
  ATTNKERNELS_INLINE void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const int64_t nc = b * C + c, off = nc * HW;
    const acc_t mu = cv.mean[c], a = cv.a[c], bb = cv.b[c];
    const scalar_t* __restrict__ xp = x + off;
    const scalar_t* __restrict__ gp = dy + off;
    pf.span_ahead(xp, HW);
    pf.span_ahead(gp, HW);
    acc_t l1[kLanes] = {}, l2[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes)
      for (int l = 0; l < kLanes; ++l)
        term(static_cast<acc_t>(xp[i + l]), static_cast<acc_t>(gp[i + l]), mu, a, bb, l1[l], l2[l]);
    acc_t t1 = 0, t2 = 0;
    for (int l = 0; l < kLanes; ++l) {
      t1 += l1[l];
      t2 += l2[l];
    }
    for (; i < HW; ++i)
      term(static_cast<acc_t>(xp[i]), static_cast<acc_t>(gp[i]), mu, a, bb, t1, t2);
    s1[nc] = t1;
    s2[nc] = t2;
  }
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0;
    acc_t t1[kBlockC] = {}, t2[kBlockC] = {};
    const int64_t base = b * C * HW + c0;
    for (int64_t p = 0; p < HW; ++p) {
      const scalar_t* __restrict__ xp = x + base + p * C;
      const scalar_t* __restrict__ gp = dy + base + p * C;
      for (int64_t c = 0; c < nc; ++c)
        term(static_cast<acc_t>(xp[c]), static_cast<acc_t>(gp[c]), cv.mean[c0 + c], cv.a[c0 + c],
             cv.b[c0 + c], t1[c], t2[c]);
    }
    std::copy(t1, t1 + nc, s1 + b * C + c0);
    std::copy(t2, t2 + nc, s2 + b * C + c0);
  }
};

// n elements of x (and dy) from i0 into out, element j of channel c0 + j * c_step:
// y = x s, or with kGrad dx = dy s + a g - k2 (x - mean) - k3.
template <bool kGrad, typename scalar_t>
ATTNKERNELS_INLINE void apply_span(const scalar_t* x, const scalar_t* dy, scalar_t* out,
                                   const ChannelValues<at::opmath_type<scalar_t>>& cv,
                                   const Prefetch& pf, int64_t i0, int64_t n, int64_t c0,
                                   int64_t c_step) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* __restrict__ xp = x + i0;
  const scalar_t* __restrict__ gp = kGrad ? dy + i0 : nullptr;
  scalar_t* __restrict__ op = out + i0;
  pf.span_ahead(xp, n);
  if (kGrad) pf.span_ahead(gp, n);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t c = c0 + j * c_step;
    const acc_t v = static_cast<acc_t>(xp[j]), mu = cv.mean[c], a = cv.a[c];
    const acc_t s = gate(v, mu, a, cv.b[c]);
    if constexpr (kGrad) {
      const acc_t d = static_cast<acc_t>(gp[j]), gz = d * v * s * (acc_t(1) - s);
      op[j] = static_cast<scalar_t>(d * s + a * gz - cv.k2[c] * (v - mu) - cv.k3[c]);
    } else {
      op[j] = static_cast<scalar_t>(v * s);
    }
  }
}

template <bool kGrad, typename scalar_t>
void apply(const Geometry& g, const scalar_t* x, const scalar_t* dy, scalar_t* out,
           const ChannelValues<at::opmath_type<scalar_t>>& cv) {
  const int64_t HW = g.H * g.W, C = g.C;
  if (!g.cl) {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, HW));
    at::parallel_for(0, g.B * C, grain, [&](int64_t t0, int64_t t1) {
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        for (int64_t nc = t0; nc < t1; ++nc)
          apply_span<kGrad>(x, dy, out, cv, g.pf, nc * HW, HW, nc % C, 0);
      });
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C));
  at::parallel_for(0, g.B * HW, grain, [&](int64_t t0, int64_t t1) {
    with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
      for (int64_t t = t0; t < t1; ++t) apply_span<kGrad>(x, dy, out, cv, g.pf, t * C, C, 0, 1);
    });
  });
}

// The folded per-channel values (mean, a, b) of the apply.
template <typename acc_t>
struct Folded {
  std::vector<acc_t> mean, a, b;
  acc_t abs_sum;
  Folded(const acc_t* mu, const acc_t* invstd, const acc_t* gamma, const acc_t* beta, int64_t C)
      : mean(mu, mu + C), a(C), b(C), abs_sum(nam_abs_sum(gamma, C)) {
    for (int64_t c = 0; c < C; ++c) {
      const NAMChannel<acc_t> ch = nam_channel(mu[c], invstd[c], gamma[c], beta[c], abs_sum);
      a[c] = ch.a;
      b[c] = ch.b;
    }
  }
  NAMChannel<acc_t> channel(int64_t c) const { return {mean[c], a[c], b[c]}; }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nam_forward_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    double eps) {
  check_nam_params(x, weight, bias);
  check_running(x, running_mean, running_var);
  const bool batch = !running_mean.has_value();
  NAMForwardOutputs out = nam_forward_outputs(x, batch);
  if (!batch) {
    out.mean.copy_(*running_mean);
    out.invstd.copy_(running_var->to(out.invstd.scalar_type()).add(eps).rsqrt());
  }
  if (x.numel() == 0) return {out.y, out.mean, out.invstd, out.var};
  const Geometry g(x);
  const at::Tensor gamma = nam_acc(x, weight), beta = nam_acc(x, bias);
  AK_DISPATCH(x, "nam_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t HW = g.H * g.W, C = g.C;
    acc_t* mean = out.mean.data_ptr<acc_t>();
    acc_t* invstd = out.invstd.data_ptr<acc_t>();
    if (batch) {
      std::vector<acc_t> m(g.B * C), m2(g.B * C);
      run_plane_pass(g, PlaneStats<scalar_t, MeanM2Store<acc_t>>{xp, HW, {m.data(), m2.data()}});
      acc_t* var = out.var.data_ptr<acc_t>();
      for (int64_t c = 0; c < C; ++c) {
        const NAMBatchStats<acc_t> s(m.data(), m2.data(), g.B, C, c, HW, eps);
        mean[c] = s.mean;
        invstd[c] = s.invstd;
        var[c] = s.unbiased;
      }
    }
    const Folded<acc_t> f(mean, invstd, gamma.data_ptr<acc_t>(), beta.data_ptr<acc_t>(), C);
    apply<false>(g, xp, static_cast<const scalar_t*>(nullptr), out.y.data_ptr<scalar_t>(),
                 ChannelValues<acc_t>{f.mean.data(), f.a.data(), f.b.data(), nullptr, nullptr});
  });
  return {out.y, out.mean, out.invstd, out.var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nam_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& invstd, bool batch) {
  check_nam_backward_args(dy, x, weight, bias, mean, invstd);
  at::Tensor dx = empty_output_like(x);
  const at::Tensor gamma = nam_acc(x, weight), beta = nam_acc(x, bias);
  at::Tensor dgamma = at::zeros({x.size(1)}, gamma.options());
  at::Tensor dbeta = at::zeros({x.size(1)}, gamma.options());
  if (x.numel() != 0) {
    const Geometry g(x);
    AK_DISPATCH(x, "nam_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* dyp = dy.data_ptr<scalar_t>();
      const int64_t HW = g.H * g.W, C = g.C;
      const acc_t* is = invstd.data_ptr<acc_t>();
      const acc_t* gm = gamma.data_ptr<acc_t>();
      const Folded<acc_t> f(mean.data_ptr<acc_t>(), is, gm, beta.data_ptr<acc_t>(), C);
      ChannelValues<acc_t> cv{f.mean.data(), f.a.data(), f.b.data(), nullptr, nullptr};
      std::vector<acc_t> s1(g.B * C), s2(g.B * C), k2(C), k3(C);
      run_plane_pass(g, GradSums<scalar_t>{xp, dyp, HW, cv, s1.data(), s2.data()});
      acc_t* dg = dgamma.data_ptr<acc_t>();
      acc_t* db = dbeta.data_ptr<acc_t>();
      for (int64_t c = 0; c < C; ++c) {
        const NAMGradCoefs<acc_t> k(s1.data(), s2.data(), g.B, C, c, HW, f.channel(c), is[c],
                                    gm[c], f.abs_sum, batch);
        dg[c] = k.dgamma;
        db[c] = k.dbeta;
        k2[c] = k.k2;
        k3[c] = k.k3;
      }
      cv.k2 = k2.data();
      cv.k3 = k3.data();
      apply<true>(g, xp, dyp, dx.data_ptr<scalar_t>(), cv);
    });
  }
  return {dx, dgamma.to(weight.scalar_type()), dbeta.to(bias.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_NAM_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
