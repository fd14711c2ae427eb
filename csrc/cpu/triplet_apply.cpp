// Triplet Attention on the CPU, the apply passes: y and dx (semantics in
// csrc/ops.cpp; the reductions are in triplet_reduce.cpp). They go a row at a
// time (for_elements).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/dispatch.h"
#include "../common/triplet.h"
#include "simd.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// ---------------------------------------------------------------- apply passes

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

  void row_nchw(int64_t b, int64_t c, int64_t h) const {
    const int64_t W = g.W, off = ((b * g.C + c) * g.H + h) * W;
    const int64_t pix = (b * g.H + h) * W, cw = (b * g.C + c) * W, ch = (b * g.C + c) * g.H + h;
    const scalar_t* __restrict__ src = in + off;
    scalar_t* __restrict__ dst = out + off;
    const acc_t* __restrict__ a = s_hw + pix;
    const acc_t* __restrict__ bb = s_cw + cw;
    const acc_t s3 = s_hc[ch];
    g.pf.span_ahead(src, W);
    if (!kGrad) {
      for (int64_t w = 0; w < W; ++w)
        dst[w] = static_cast<scalar_t>(
            branch_mean(static_cast<acc_t>(src[w]), a[w], bb[w], s3, spatial));
      return;
    }
    const int32_t* __restrict__ ct = ctie + pix;
    const int32_t* __restrict__ ht = htie + cw;
    const acc_t* __restrict__ cgm = cgmean + pix;
    const acc_t* __restrict__ cgx = cgmax + pix;
    const acc_t* __restrict__ hgm = hgmean + cw;
    const acc_t* __restrict__ hgx = hgmax + cw;
    const acc_t wg = wgmean[ch], wx = wgmax[ch];
    const int32_t wt = wtie[ch], c32 = static_cast<int32_t>(c), h32 = static_cast<int32_t>(h);
    int64_t w = 0;
    if constexpr (kFloat<scalar_t>) {  // the same arithmetic as below, four lanes at a time
      const f4 zero = splat4(0.f);
      const float third = static_cast<float>(1.0 / 3.0);
      for (; w + 4 <= W; w += 4) {
        const f4 v = load4(src + w);
        f4 r = spatial ? ((v * load4(a + w) + v * load4(bb + w)) + v * s3) * third
                       : (v * load4(bb + w) + v * s3) * 0.5f;
        r += (load4(cgm + w) + load4(hgm + w)) + wg;
        r += ((load4(ct + w) == c32) ? load4(cgx + w) : zero) +
             ((load4(ht + w) == h32) ? load4(hgx + w) : zero) +
             ((iota4(static_cast<int32_t>(w)) == wt) ? splat4(wx) : zero);
        store4(dst + w, r);
      }
    }
    for (; w < W; ++w) {
      acc_t r = branch_mean(static_cast<acc_t>(src[w]), a[w], bb[w], s3, spatial);
      r += (cgm[w] + hgm[w]) + wg;
      r += (ct[w] == c32 ? cgx[w] : acc_t(0)) + (ht[w] == h32 ? hgx[w] : acc_t(0)) +
           (w == wt ? wx : acc_t(0));
      dst[w] = static_cast<scalar_t>(r);
    }
  }

  // s_cw, hgmean, hgmax, htie are (N, W, C); s_hc, wgmean, wgmax, wtie (N, H, C).
  void row_nhwc(int64_t b, int64_t h, int64_t w) const {
    const int64_t C = g.C, off = b * g.sample() + (h * g.W + w) * C;
    const int64_t pix = (b * g.H + h) * g.W + w, wc = (b * g.W + w) * C, hc = (b * g.H + h) * C;
    const scalar_t* __restrict__ src = in + off;
    scalar_t* __restrict__ dst = out + off;
    const acc_t a = s_hw[pix];
    const acc_t* __restrict__ bb = s_cw + wc;
    const acc_t* __restrict__ s3 = s_hc + hc;
    g.pf.span_ahead(src, C);
    if (!kGrad) {
      for (int64_t c = 0; c < C; ++c)
        dst[c] = static_cast<scalar_t>(
            branch_mean(static_cast<acc_t>(src[c]), a, bb[c], s3[c], spatial));
      return;
    }
    const int32_t* __restrict__ ht = htie + wc;
    const int32_t* __restrict__ wt = wtie + hc;
    const acc_t* __restrict__ hgm = hgmean + wc;
    const acc_t* __restrict__ hgx = hgmax + wc;
    const acc_t* __restrict__ wgm = wgmean + hc;
    const acc_t* __restrict__ wgx = wgmax + hc;
    const acc_t cg = cgmean[pix], cx = cgmax[pix];
    const int32_t ct = ctie[pix], h32 = static_cast<int32_t>(h), w32 = static_cast<int32_t>(w);
    int64_t c = 0;
    if constexpr (kFloat<scalar_t>) {  // the same arithmetic as below, four lanes at a time
      const f4 zero = splat4(0.f);
      const float third = static_cast<float>(1.0 / 3.0);
      for (; c + 4 <= C; c += 4) {
        const f4 v = load4(src + c), b4 = load4(bb + c), h4 = load4(s3 + c);
        f4 r = spatial ? ((v * a + v * b4) + v * h4) * third : (v * b4 + v * h4) * 0.5f;
        r += (cg + load4(hgm + c)) + load4(wgm + c);
        r += ((iota4(static_cast<int32_t>(c)) == ct) ? splat4(cx) : zero) +
             ((load4(ht + c) == h32) ? load4(hgx + c) : zero) +
             ((load4(wt + c) == w32) ? load4(wgx + c) : zero);
        store4(dst + c, r);
      }
    }
    for (; c < C; ++c) {
      acc_t r = branch_mean(static_cast<acc_t>(src[c]), a, bb[c], s3[c], spatial);
      r += (cg + hgm[c]) + wgm[c];
      r += (c == ct ? cx : acc_t(0)) + (ht[c] == h32 ? hgx[c] : acc_t(0)) +
           (wt[c] == w32 ? wgx[c] : acc_t(0));
      dst[c] = static_cast<scalar_t>(r);
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
