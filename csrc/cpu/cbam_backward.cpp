// CBAM on the CPU, the backward passes (semantics in csrc/schemas/cbam_schema.cpp; the forward
// passes are in cbam_forward.cpp).
//
// Work is split into tasks of (sample, block of kBlockC channels). A per-(n, c)
// reduction over H*W is done whole by one task; a per-(n, h, w) reduction over
// C is formed per block and the blocks are combined in order. Neither depends
// on the thread count. channels_last float sums over C run four lanes wide
// (then in lane order), NCHW ones in channel order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <limits>
#include <type_traits>

#include "../common/dispatch.h"
#include "../common/cbam.h"
#include "simd.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// ---------------------------------------------------------------- backward

// Where a max's gradient goes. kFirst: to the first maximal element, whose
// index is kept (-1 until found); else to every maximal element, counted.
template <bool kFirst>
inline int32_t tie_update(int32_t tie, bool hit, int64_t index) {
  if (kFirst) return (tie < 0 && hit) ? static_cast<int32_t>(index) : tie;
  return tie + (hit ? 1 : 0);
}

template <bool kFirst>
inline int32_t tie_combine(int32_t a, int32_t b) {
  if (kFirst) return a >= 0 ? a : b;
  return a + b;
}

template <bool kFirst, typename scalar_t>
void backward_reduce_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca,
                            const at::Tensor& sa, const at::Tensor& cmax, const at::Tensor& smax,
                            at::Tensor& dca, at::Tensor& dsa, at::Tensor& ctie, at::Tensor& stie) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const Blocks blocks(L, x.size(0));
  const int64_t C = L.C, HW = L.HW;
  const int32_t tie0 = kFirst ? -1 : 0;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  const acc_t* gp = ca.data_ptr<acc_t>();
  const acc_t* sap = sa.data_ptr<acc_t>();
  const acc_t* cmp = cmax.data_ptr<acc_t>();
  const acc_t* smp = smax.data_ptr<acc_t>();
  acc_t* dcap = dca.data_ptr<acc_t>();
  int32_t* ctp = ctie.data_ptr<int32_t>();
  const at::Tensor pdsa_t = blocks.partials(x, dsa.scalar_type());
  const at::Tensor ptie_t = blocks.partials(x, at::kInt);
  acc_t* pdsa = ptr<acc_t>(pdsa_t);
  int32_t* ptie = ptr<int32_t>(ptie_t);
  blocks.for_each([&](int64_t b, int64_t k, int64_t c0, int64_t c1) {
    const int64_t off = b * L.sample();
    const acc_t* g = gp + b * C;
    const acc_t* __restrict__ s = sap + b * HW;
    const acc_t* __restrict__ sm = smp + b * HW;
    acc_t* __restrict__ pd = pdsa + (b * blocks.n + k) * HW;
    int32_t* __restrict__ pt = ptie + (b * blocks.n + k) * HW;
    if (!L.channels_last()) {
      std::fill(pd, pd + HW, acc_t(0));
      std::fill(pt, pt + HW, tie0);
      for (int64_t c = c0; c < c1; ++c) {
        const scalar_t* __restrict__ xr = xp + off + c * HW;
        const scalar_t* __restrict__ dr = dyp + off + c * HW;
        const acc_t gc = g[c], cm = cmp[b * C + c];
        acc_t lane[kLanes] = {};
        int32_t ct = tie0;
        int64_t p = 0;
        if constexpr (kFloat<scalar_t>) {
          // The scalar loop below, four lanes at a time (same lanes, same order).
          f4 acc[4] = {};
          i4 ctv = splat4(kFirst ? INT_MAX : 0);
          const i4 cv = splat4(static_cast<int32_t>(c));
          i4 pos = iota4(0);  // the index of each lane, for the first maximal element
          for (; p + kLanes <= HW; p += kLanes) {
            pf.ahead(xr + p);
            pf.ahead(dr + p);
            for (int k = 0; k < 4; ++k, pos += 4) {
              const int64_t i = p + 4 * k;
              const f4 xv = load4(xr + i), t = load4(dr + i) * xv;
              acc[k] += t * load4(s + i);
              store4(pd + i, load4(pd + i) + t * gc);
              const i4 s_hit = xv * gc == load4(sm + i), c_hit = xv == cm;
              i4 st = load4(pt + i);
              if (kFirst) {
                st = (s_hit & (st < 0)) ? cv : st;
                ctv = least4(ctv, c_hit, pos);
              } else {
                st -= s_hit;
                ctv -= c_hit;
              }
              store4(pt + i, st);
            }
          }
          for (int k = 0; k < 4; ++k) store4(lane + 4 * k, acc[k]);
          ct = kFirst ? least_index(ctv) : ctv[0] + ctv[1] + ctv[2] + ctv[3];
        }
        for (; p + kLanes <= HW; p += kLanes) {
          pf.ahead(xr + p);
          pf.ahead(dr + p);
          for (int l = 0; l < kLanes; ++l) {
            const acc_t xv = static_cast<acc_t>(xr[p + l]);
            const acc_t t = static_cast<acc_t>(dr[p + l]) * xv;
            lane[l] += t * s[p + l];
            pd[p + l] += t * gc;
            pt[p + l] = tie_update<kFirst>(pt[p + l], xv * gc == sm[p + l], c);
          }
          for (int l = 0; l < kLanes; ++l)
            ct = tie_update<kFirst>(ct, static_cast<acc_t>(xr[p + l]) == cm, p + l);
        }
        acc_t sum = 0;
        for (int l = 0; l < kLanes; ++l) sum += lane[l];
        for (; p < HW; ++p) {
          const acc_t xv = static_cast<acc_t>(xr[p]);
          const acc_t t = static_cast<acc_t>(dr[p]) * xv;
          sum += t * s[p];
          pd[p] += t * gc;
          pt[p] = tie_update<kFirst>(pt[p], xv * gc == sm[p], c);
          ct = tie_update<kFirst>(ct, xv == cm, p);
        }
        dcap[b * C + c] = sum;
        ctp[b * C + c] = ct;
      }
    } else {
      acc_t dacc[kBlockC] = {};
      int32_t cties[kBlockC];
      std::fill(cties, cties + kBlockC, tie0);
      const acc_t* cm = cmp + b * C;
      const int64_t ahead = rows_ahead<scalar_t>(c1 - c0) * C;
      for (int64_t p = 0; p < HW; ++p) {
        const scalar_t* __restrict__ xr = xp + off + p * C;
        const scalar_t* __restrict__ dr = dyp + off + p * C;
        pf.span(xr + ahead + c0, c1 - c0);
        pf.span(dr + ahead + c0, c1 - c0);
        acc_t a = 0;
        int32_t st = tie0;
        int64_t c = c0;
        if constexpr (kFloat<scalar_t>) {
          // The loop below four channels at a time: each channel's dacc and
          // tie as there; the pixel's sum in four lanes (then in lane order),
          // its tie over the lanes.
          const f4 s4 = splat4(s[p]), sm4 = splat4(sm[p]);
          const i4 pv = splat4(static_cast<int32_t>(p));
          f4 a4 = splat4(0.f);
          i4 st4 = splat4(kFirst ? INT_MAX : 0), chan = iota4(static_cast<int32_t>(c0));
          for (; c + 4 <= c1; c += 4, chan += 4) {
            const f4 xv = load4(xr + c), t = load4(dr + c) * xv, gc = load4(g + c);
            acc_t* __restrict__ d = dacc + (c - c0);
            int32_t* __restrict__ ct = cties + (c - c0);
            store4(d, load4(d) + t * s4);
            a4 += t * gc;
            const i4 s_hit = xv * gc == sm4, c_hit = xv == load4(cm + c), ctv = load4(ct);
            if (kFirst) {
              st4 = least4(st4, s_hit, chan);
              store4(ct, (c_hit & (ctv < 0)) ? pv : ctv);
            } else {
              st4 -= s_hit;
              store4(ct, ctv - c_hit);
            }
          }
          a = hsum4(a4);
          st = kFirst ? least_index(st4) : st4[0] + st4[1] + st4[2] + st4[3];
        }
        for (; c < c1; ++c) {
          const acc_t xv = static_cast<acc_t>(xr[c]);
          const acc_t t = static_cast<acc_t>(dr[c]) * xv;
          dacc[c - c0] += t * s[p];
          a += t * g[c];
          st = tie_update<kFirst>(st, xv * g[c] == sm[p], c);
          cties[c - c0] = tie_update<kFirst>(cties[c - c0], xv == cm[c], p);
        }
        pd[p] = a;
        pt[p] = st;
      }
      for (int64_t c = c0; c < c1; ++c) {
        dcap[b * C + c] = dacc[c - c0];
        ctp[b * C + c] = cties[c - c0];
      }
    }
  });
  acc_t* dsap = dsa.data_ptr<acc_t>();
  int32_t* stp = stie.data_ptr<int32_t>();
  for_pixels(blocks.B, HW, [&](int64_t b, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      acc_t a = 0;
      int32_t t = tie0;
      for (int64_t k = 0; k < blocks.n; ++k) {
        a += pdsa[(b * blocks.n + k) * HW + p];
        t = tie_combine<kFirst>(t, ptie[(b * blocks.n + k) * HW + p]);
      }
      dsap[b * HW + p] = a;
      stp[b * HW + p] = t;
    }
  });
}

// Is element (c, p), of value u = x * ca, where the spatial max of pixel p is routed?
template <bool kFirst, typename acc_t>
inline bool routed(acc_t u, acc_t max, int32_t tie, int64_t index) {
  return kFirst ? tie == index : u == max;
}

template <bool kFirst, typename scalar_t>
void spatial_pool_backward_kernel(const at::Tensor& x, const at::Tensor& ca,
                                  const at::Tensor& smax, const at::Tensor& stie,
                                  const at::Tensor& sgmean, const at::Tensor& sgmax,
                                  at::Tensor& dca) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const int64_t C = L.C, HW = L.HW;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const acc_t* gp = ca.data_ptr<acc_t>();
  const acc_t* smp = smax.data_ptr<acc_t>();
  const int32_t* stp = stie.data_ptr<int32_t>();
  const acc_t* gmp = sgmean.data_ptr<acc_t>();
  const acc_t* gxp = sgmax.data_ptr<acc_t>();
  acc_t* dcap = dca.data_ptr<acc_t>();
  Blocks(L, x.size(0)).for_each([&](int64_t b, int64_t, int64_t c0, int64_t c1) {
    const int64_t off = b * L.sample(), q = b * HW;
    const acc_t* __restrict__ sm = smp + q;
    const int32_t* __restrict__ st = stp + q;
    const acc_t* __restrict__ gm = gmp + q;
    const acc_t* __restrict__ gx = gxp + q;
    if (!L.channels_last()) {
      for (int64_t c = c0; c < c1; ++c) {
        const scalar_t* __restrict__ xr = xp + off + c * HW;
        const acc_t gc = gp[b * C + c];
        acc_t lane[kLanes] = {};
        int64_t p = 0;
        auto term = [&](int64_t i) {
          const acc_t xv = static_cast<acc_t>(xr[i]);
          return xv * (gm[i] + (routed<kFirst>(xv * gc, sm[i], st[i], c) ? gx[i] : acc_t(0)));
        };
        if constexpr (kFloat<scalar_t>) {
          // term() four lanes at a time (same lanes, same order).
          f4 acc[4] = {};
          const i4 cv = splat4(static_cast<int32_t>(c));
          for (; p + kLanes <= HW; p += kLanes) {
            pf.ahead(xr + p);
            for (int k = 0; k < 4; ++k) {
              const int64_t i = p + 4 * k;
              const f4 xv = load4(xr + i);
              const i4 hit = kFirst ? load4(st + i) == cv : xv * gc == load4(sm + i);
              acc[k] += xv * (load4(gm + i) + (hit ? load4(gx + i) : splat4(0.f)));
            }
          }
          for (int k = 0; k < 4; ++k) store4(lane + 4 * k, acc[k]);
        }
        for (; p + kLanes <= HW; p += kLanes) {
          pf.ahead(xr + p);
          for (int l = 0; l < kLanes; ++l) lane[l] += term(p + l);
        }
        acc_t sum = 0;
        for (int l = 0; l < kLanes; ++l) sum += lane[l];
        for (; p < HW; ++p) sum += term(p);
        dcap[b * C + c] = sum;
      }
    } else {
      acc_t dacc[kBlockC] = {};
      const acc_t* g = gp + b * C;
      const int64_t ahead = rows_ahead<scalar_t>(c1 - c0) * C;
      for (int64_t p = 0; p < HW; ++p) {
        const scalar_t* __restrict__ xr = xp + off + p * C;
        pf.span(xr + ahead + c0, c1 - c0);
        int64_t c = c0;
        if constexpr (kFloat<scalar_t>) {
          // The loop below four channels at a time (same sums, same order).
          const f4 gm4 = splat4(gm[p]), gx4 = splat4(gx[p]), sm4 = splat4(sm[p]);
          const i4 st4 = splat4(st[p]);
          i4 chan = iota4(static_cast<int32_t>(c0));
          for (; c + 4 <= c1; c += 4, chan += 4) {
            const f4 xv = load4(xr + c);
            const i4 hit = kFirst ? chan == st4 : xv * load4(g + c) == sm4;
            acc_t* __restrict__ d = dacc + (c - c0);
            store4(d, load4(d) + xv * (gm4 + (hit ? gx4 : splat4(0.f))));
          }
        }
        for (; c < c1; ++c) {
          const acc_t xv = static_cast<acc_t>(xr[c]);
          dacc[c - c0] += xv * (gm[p] + (routed<kFirst>(xv * g[c], sm[p], st[p], c) ? gx[p] : acc_t(0)));
        }
      }
      for (int64_t c = c0; c < c1; ++c) dcap[b * C + c] = dacc[c - c0];
    }
  });
}

template <bool kFirst, typename scalar_t>
void backward_apply_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca,
                           const at::Tensor& sa, const at::Tensor& cmax, const at::Tensor& ctie,
                           const at::Tensor& cgmean, const at::Tensor& cgmax,
                           const at::Tensor& smax, const at::Tensor& stie,
                           const at::Tensor& sgmean, const at::Tensor& sgmax, at::Tensor& dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const int64_t C = L.C, HW = L.HW;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  const acc_t *gp = ca.data_ptr<acc_t>(), *sap = sa.data_ptr<acc_t>();
  const acc_t *cmp = cmax.data_ptr<acc_t>(), *cgm = cgmean.data_ptr<acc_t>(),
              *cgx = cgmax.data_ptr<acc_t>();
  const acc_t *smp = smax.data_ptr<acc_t>(), *sgm = sgmean.data_ptr<acc_t>(),
              *sgx = sgmax.data_ptr<acc_t>();
  const int32_t *ctp = ctie.data_ptr<int32_t>(), *stp = stie.data_ptr<int32_t>();
  // One element: c, p its indices, n and q the (n, c) and (n, p) offsets.
  auto grad = [&](acc_t dyv, acc_t xv, int64_t c, int64_t p, int64_t n, int64_t q) {
    const acc_t gc = gp[n];
    const bool s_hit = routed<kFirst>(xv * gc, smp[q], stp[q], c);
    const bool c_hit = routed<kFirst>(xv, cmp[n], ctp[n], p);
    return gc * (dyv * sap[q] + sgm[q] + (s_hit ? sgx[q] : acc_t(0))) + cgm[n] +
           (c_hit ? cgx[n] : acc_t(0));
  };
  for_rows(L, x.size(0), [&](int64_t b, int64_t r) {
    const int64_t off = b * L.sample();
    if (!L.channels_last()) {
      const scalar_t* __restrict__ xr = xp + off + r * HW;
      const scalar_t* __restrict__ dr = dyp + off + r * HW;
      scalar_t* __restrict__ out = dxp + off + r * HW;
      int64_t p = 0;
      if constexpr (kFloat<scalar_t>) {
        // grad(), four elements at a time.
        const int64_t n = b * C + r, q = b * HW;
        const f4 g = splat4(gp[n]), cgm4 = splat4(cgm[n]), cgx4 = splat4(cgx[n]),
                 cm4 = splat4(cmp[n]);
        const i4 cv = splat4(static_cast<int32_t>(r)), ct = splat4(ctp[n]);
        i4 pos = iota4(0);
        for (; p + 4 <= HW; p += 4, pos += 4) {
          if (p % 16 == 0) {
            pf.ahead(xr + p);
            pf.ahead(dr + p);
          }
          const f4 xv = load4(xr + p), dyv = load4(dr + p);
          const i4 s_hit = kFirst ? load4(stp + q + p) == cv : xv * g == load4(smp + q + p);
          const i4 c_hit = kFirst ? pos == ct : xv == cm4;
          const f4 v = g * (dyv * load4(sap + q + p) + load4(sgm + q + p) +
                            (s_hit ? load4(sgx + q + p) : splat4(0.f))) +
                       cgm4 + (c_hit ? cgx4 : splat4(0.f));
          store4(out + p, v);
        }
      }
      for (; p < HW; ++p)
        out[p] = static_cast<scalar_t>(grad(static_cast<acc_t>(dr[p]), static_cast<acc_t>(xr[p]),
                                            r, p, b * C + r, b * HW + p));
    } else {
      const scalar_t* __restrict__ xr = xp + off + r * C;
      const scalar_t* __restrict__ dr = dyp + off + r * C;
      scalar_t* __restrict__ out = dxp + off + r * C;
      pf.span_ahead(xr, C);
      pf.span_ahead(dr, C);
      int64_t c = 0;
      if constexpr (kFloat<scalar_t>) {
        // grad(), four channels at a time.
        const int64_t q = b * HW + r, n0 = b * C;
        const f4 s = splat4(sap[q]), sgm4 = splat4(sgm[q]), sgx4 = splat4(sgx[q]),
                 sm4 = splat4(smp[q]);
        const i4 st = splat4(stp[q]), pv = splat4(static_cast<int32_t>(r));
        i4 chan = iota4(0);
        for (; c + 4 <= C; c += 4, chan += 4) {
          const f4 xv = load4(xr + c), dyv = load4(dr + c), g = load4(gp + n0 + c);
          const i4 s_hit = kFirst ? chan == st : xv * g == sm4;
          const i4 c_hit = kFirst ? load4(ctp + n0 + c) == pv : xv == load4(cmp + n0 + c);
          const f4 v = g * (dyv * s + sgm4 + (s_hit ? sgx4 : splat4(0.f))) + load4(cgm + n0 + c) +
                       (c_hit ? load4(cgx + n0 + c) : splat4(0.f));
          store4(out + c, v);
        }
      }
      for (; c < C; ++c)
        out[c] = static_cast<scalar_t>(grad(static_cast<acc_t>(dr[c]), static_cast<acc_t>(xr[c]),
                                            c, r, b * C + c, b * HW + r));
    }
  });
}

// ---------------------------------------------------------------- ops

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cbam_backward_reduce_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa,
    const at::Tensor& cmax, const at::Tensor& smax, bool first_max) {
  check_cbam_backward_reduce_args(dy, x, ca, sa, cmax, smax);
  auto [dca, dsa, ctie, stie] = cbam_backward_reduce_outputs(ca, sa);
  if (x.numel() == 0) return {dca, dsa, ctie, stie};
  AK_DISPATCH(x, "cbam_backward_reduce_cpu", [&] {
    if (first_max)
      backward_reduce_kernel<true, scalar_t>(dy, x, ca, sa, cmax, smax, dca, dsa, ctie, stie);
    else
      backward_reduce_kernel<false, scalar_t>(dy, x, ca, sa, cmax, smax, dca, dsa, ctie, stie);
  });
  return {dca, dsa, ctie, stie};
}

at::Tensor cbam_spatial_pool_backward_cpu(const at::Tensor& x, const at::Tensor& ca,
                                          const at::Tensor& smax, const at::Tensor& stie,
                                          const at::Tensor& sgmean, const at::Tensor& sgmax,
                                          bool first_max) {
  check_cbam_spatial_pool_backward_args(x, ca, smax, stie, sgmean, sgmax);
  at::Tensor dca = at::zeros_like(ca);
  if (x.numel() == 0) return dca;
  AK_DISPATCH(x, "cbam_spatial_pool_backward_cpu", [&] {
    if (first_max)
      spatial_pool_backward_kernel<true, scalar_t>(x, ca, smax, stie, sgmean, sgmax, dca);
    else
      spatial_pool_backward_kernel<false, scalar_t>(x, ca, smax, stie, sgmean, sgmax, dca);
  });
  return dca;
}

at::Tensor cbam_backward_apply_cpu(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca,
                                   const at::Tensor& sa, const at::Tensor& cmax,
                                   const at::Tensor& ctie, const at::Tensor& cgmean,
                                   const at::Tensor& cgmax, const at::Tensor& smax,
                                   const at::Tensor& stie, const at::Tensor& sgmean,
                                   const at::Tensor& sgmax, bool first_max) {
  check_cbam_backward_apply_args(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean,
                                 sgmax);
  at::Tensor dx = empty_output_like(x);
  if (x.numel() == 0) return dx;
  AK_DISPATCH(x, "cbam_backward_apply_cpu", [&] {
    if (first_max)
      backward_apply_kernel<true, scalar_t>(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie,
                                            sgmean, sgmax, dx);
    else
      backward_apply_kernel<false, scalar_t>(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie,
                                             sgmean, sgmax, dx);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_CBAM_BACKWARD_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
