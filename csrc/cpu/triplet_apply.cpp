// Triplet Attention on the CPU, the apply passes: y and dx (semantics in
// csrc/schemas/triplet_schema.cpp; the reductions are in triplet_reduce.cpp). They go a row at a
// time (for_elements).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../common/dispatch.h"
#include "../common/triplet.h"
#include "simd.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// ---------------------------------------------------------------- apply passes

// Operands of a row loop: one value per lane (Lanes), one for the whole row
// (Splat), or the lane's own index (Iota); at(i) reads lane i, at4(i) lanes
// i..i+3.
template <typename T>
struct Lanes {
  const T* __restrict__ p;
  T at(int64_t i) const { return p[i]; }
  auto at4(int64_t i) const { return load4(p + i); }
};
template <typename T>
struct Splat {
  T v;
  T at(int64_t) const { return v; }
  auto at4(int64_t) const { return splat4(v); }
};
struct Iota {
  int32_t at(int64_t i) const { return static_cast<int32_t>(i); }
  i4 at4(int64_t i) const { return iota4(static_cast<int32_t>(i)); }
};

// One branch's share of dx: gmean + gmax where the element is the tie
// (tie == index), as operands of a row.
template <class Mean, class Tie, class Index, class Max>
struct BranchGrad {
  Mean gmean;
  Tie tie;
  Index index;
  Max gmax;
};

// One row of n elements: dst = branch_mean(src, a, b, s3); with grads (dy
// into dx) plus the c, h and w branches' BranchGrad terms, in that order.
template <typename scalar_t, class A, class B, class S3, class... Grads>
inline void apply_row(int64_t n, const scalar_t* __restrict__ src, scalar_t* __restrict__ dst,
                      bool spatial, const A& a, const B& b, const S3& s3,
                      const Grads&... grads) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t i = 0;
  if constexpr (sizeof...(Grads) == 3 && kFloat<scalar_t>) {  // the tail's arithmetic, 4 lanes
    const auto& [gc, gh, gw] = std::tie(grads...);
    const f4 zero = splat4(0.f);
    const float third = static_cast<float>(1.0 / 3.0);
    for (; i + 4 <= n; i += 4) {
      const f4 v = load4(src + i), b4 = b.at4(i), s4 = s3.at4(i);
      f4 r = spatial ? ((v * a.at4(i) + v * b4) + v * s4) * third : (v * b4 + v * s4) * 0.5f;
      r += (gc.gmean.at4(i) + gh.gmean.at4(i)) + gw.gmean.at4(i);
      r += ((gc.tie.at4(i) == gc.index.at4(i)) ? gc.gmax.at4(i) : zero) +
           ((gh.tie.at4(i) == gh.index.at4(i)) ? gh.gmax.at4(i) : zero) +
           ((gw.tie.at4(i) == gw.index.at4(i)) ? gw.gmax.at4(i) : zero);
      store4(dst + i, r);
    }
  }
  for (; i < n; ++i) {
    acc_t r = branch_mean(static_cast<acc_t>(src[i]), a.at(i), b.at(i), s3.at(i), spatial);
    if constexpr (sizeof...(Grads) == 3) {
      const auto& [gc, gh, gw] = std::tie(grads...);
      r += (gc.gmean.at(i) + gh.gmean.at(i)) + gw.gmean.at(i);
      r += (gc.tie.at(i) == gc.index.at(i) ? gc.gmax.at(i) : acc_t(0)) +
           (gh.tie.at(i) == gh.index.at(i) ? gh.gmax.at(i) : acc_t(0)) +
           (gw.tie.at(i) == gw.index.at(i) ? gw.gmax.at(i) : acc_t(0));
    }
    dst[i] = static_cast<scalar_t>(r);
  }
}

// y = branch_mean(x, s_hw, s_cw, s_hc); with kGrad (in = dy, out = dx), plus
// per axis gmean + gmax where the element is the tie. Per-(c, .) maps are read
// per position for channels_last (by_position).
template <bool kGrad, typename scalar_t>
struct ApplyRows {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g;
  const scalar_t* in;
  scalar_t* out;
  bool spatial;
  const acc_t *s_hw, *s_cw, *s_hc;
  const int32_t *ctie, *htie, *wtie;
  const acc_t *cgmean, *cgmax, *hgmean, *hgmax, *wgmean, *wgmax;

  // A row along w: s_hw, ctie, cgmean, cgmax per lane; s_hc and the w branch's one value.
  void row_nchw(int64_t b, int64_t c, int64_t h) const {
    const int64_t W = g.W, off = ((b * g.C + c) * g.H + h) * W;
    const int64_t pix = (b * g.H + h) * W, cw = (b * g.C + c) * W, ch = (b * g.C + c) * g.H + h;
    g.pf.span_ahead(in + off, W);
    const Lanes<acc_t> a{s_hw + pix}, bb{s_cw + cw};
    const Splat<acc_t> s3{s_hc[ch]};
    if constexpr (!kGrad) {
      apply_row(W, in + off, out + off, spatial, a, bb, s3);
    } else {
      apply_row(W, in + off, out + off, spatial, a, bb, s3,
                BranchGrad{Lanes<acc_t>{cgmean + pix}, Lanes<int32_t>{ctie + pix},
                           Splat<int32_t>{static_cast<int32_t>(c)}, Lanes<acc_t>{cgmax + pix}},
                BranchGrad{Lanes<acc_t>{hgmean + cw}, Lanes<int32_t>{htie + cw},
                           Splat<int32_t>{static_cast<int32_t>(h)}, Lanes<acc_t>{hgmax + cw}},
                BranchGrad{Splat<acc_t>{wgmean[ch]}, Splat<int32_t>{wtie[ch]}, Iota{},
                           Splat<acc_t>{wgmax[ch]}});
    }
  }

  // A row along c: s_cw, hgmean, hgmax, htie are (N, W, C); s_hc, wgmean,
  // wgmax, wtie (N, H, C); s_hw and the c branch's one value.
  void row_nhwc(int64_t b, int64_t h, int64_t w) const {
    const int64_t C = g.C, off = b * g.sample() + (h * g.W + w) * C;
    const int64_t pix = (b * g.H + h) * g.W + w, wc = (b * g.W + w) * C, hc = (b * g.H + h) * C;
    g.pf.span_ahead(in + off, C);
    const Splat<acc_t> a{s_hw[pix]};
    const Lanes<acc_t> bb{s_cw + wc}, s3{s_hc + hc};
    if constexpr (!kGrad) {
      apply_row(C, in + off, out + off, spatial, a, bb, s3);
    } else {
      apply_row(C, in + off, out + off, spatial, a, bb, s3,
                BranchGrad{Splat<acc_t>{cgmean[pix]}, Splat<int32_t>{ctie[pix]}, Iota{},
                           Splat<acc_t>{cgmax[pix]}},
                BranchGrad{Lanes<acc_t>{hgmean + wc}, Lanes<int32_t>{htie + wc},
                           Splat<int32_t>{static_cast<int32_t>(h)}, Lanes<acc_t>{hgmax + wc}},
                BranchGrad{Lanes<acc_t>{wgmean + hc}, Lanes<int32_t>{wtie + hc},
                           Splat<int32_t>{static_cast<int32_t>(w)}, Lanes<acc_t>{wgmax + hc}});
    }
  }
};

// ---------------------------------------------------------------- ops

at::Tensor triplet_apply_cpu(const at::Tensor& x, const at::Tensor& s_hw, const at::Tensor& s_cw,
                             const at::Tensor& s_hc, bool spatial) {
  check_triplet_gates(x, s_hw, s_cw, s_hc);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const Geometry g(x);
  const at::Tensor cw = g.cl ? by_position(s_cw) : s_cw, hc = g.cl ? by_position(s_hc) : s_hc;
  AK_DISPATCH(x, "triplet_apply_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ApplyRows<false, scalar_t> rows{
        g, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), spatial,
        s_hw.data_ptr<acc_t>(), cw.data_ptr<acc_t>(), hc.data_ptr<acc_t>()};
    for_elements(g, rows);
  });
  return y;
}

at::Tensor triplet_backward_apply_cpu(const at::Tensor& dy, const at::Tensor& s_hw,
                                      const at::Tensor& s_cw, const at::Tensor& s_hc, bool spatial,
                                      const at::Tensor& ctie, const at::Tensor& cgmean,
                                      const at::Tensor& cgmax, const at::Tensor& htie,
                                      const at::Tensor& hgmean, const at::Tensor& hgmax,
                                      const at::Tensor& wtie, const at::Tensor& wgmean,
                                      const at::Tensor& wgmax) {
  check_triplet_backward_apply_args(
      dy, s_hw, s_cw, s_hc, {{ctie, cgmean, cgmax}, {htie, hgmean, hgmax}, {wtie, wgmean, wgmax}});
  at::Tensor dx = empty_output_like(dy);
  if (dy.numel() == 0) return dx;
  const Geometry g(dy);
  auto pos = [&](const at::Tensor& t) { return g.cl ? by_position(t) : t; };
  const at::Tensor cw = pos(s_cw), hc = pos(s_hc), ht = pos(htie), hgm = pos(hgmean),
                   hgx = pos(hgmax), wt = pos(wtie), wgm = pos(wgmean), wgx = pos(wgmax);
  AK_DISPATCH(dy, "triplet_backward_apply_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ApplyRows<true, scalar_t> rows{g,
                                         dy.data_ptr<scalar_t>(),
                                         dx.data_ptr<scalar_t>(),
                                         spatial,
                                         s_hw.data_ptr<acc_t>(),
                                         cw.data_ptr<acc_t>(),
                                         hc.data_ptr<acc_t>(),
                                         ctie.data_ptr<int32_t>(),
                                         ht.data_ptr<int32_t>(),
                                         wt.data_ptr<int32_t>(),
                                         cgmean.data_ptr<acc_t>(),
                                         cgmax.data_ptr<acc_t>(),
                                         hgm.data_ptr<acc_t>(),
                                         hgx.data_ptr<acc_t>(),
                                         wgm.data_ptr<acc_t>(),
                                         wgx.data_ptr<acc_t>()};
    for_elements(g, rows);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_TRIPLET_APPLY_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
