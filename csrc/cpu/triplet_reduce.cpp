// Triplet Attention on the CPU, the reductions: the pool and the backward's
// (semantics in csrc/schemas/triplet_schema.cpp; the apply passes are in triplet_apply.cpp).
//
// The reductions run in tasks of (sample, block of kBlockC channels), in both
// memory formats: a task owns the reductions over H and over W of its
// channels whole, and forms per-block partials of the reduction over C, which
// are combined in block order. Results do not depend on the thread count.
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

// The first index in [i, i + 4) whose lane is set in hit, else -1.
inline int32_t first_lane(i4 hit, int64_t i) {
  for (int l = 0; l < 4; ++l)
    if (hit[l]) return static_cast<int32_t>(i + l);
  return -1;
}

// ---------------------------------------------------------------- pool

// One task's reductions over H and W of channels [c0, c1) of sample b, and its
// partial sum and max over those channels per pixel (ps, pm).
template <typename scalar_t>
struct PoolTask {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  const Geometry& g;
  const scalar_t* x;
  acc_t *hmean, *hmax, *wmean, *wmax;

  // The cheap max (max_fast4) first, and again with the exact one if a NaN
  // reached the task's row sums (wmean), as any NaN in x does.
  void operator()(int64_t b, int64_t c0, int64_t c1, acc_t* ps, acc_t* pm) const {
    const auto pass = [&](auto exact) {
      constexpr bool kExact = decltype(exact)::value;
      if (g.cl)
        nhwc<kExact>(b, c0, c1, ps, pm);
      else
        nchw<kExact>(b, c0, c1, ps, pm);
    };
    cheap_then_exact_max<scalar_t>(pass, wmean + (b * g.C + c0) * g.H, (c1 - c0) * g.H);
  }

  template <bool kExact>
  void nchw(int64_t b, int64_t c0, int64_t c1, acc_t* ps, acc_t* pm) const {
    std::fill(ps, ps + g.H * g.W, acc_t(0));
    std::fill(pm, pm + g.H * g.W, kNegInf);
    std::vector<acc_t> columns(2 * kGroup * g.W);
    int64_t c = c0;
    for (; c + kGroup <= c1; c += kGroup)
      nchw_group<kGroup, kExact>(b, c, ps, pm, columns.data());
    for (; c < c1; ++c) nchw_group<1, kExact>(b, c, ps, pm, columns.data());
  }

  // Channels [c, c + kCh) of sample b, a row of each at a time: their
  // reductions over H and W, and their sum and max per pixel, combined over
  // the kCh channels first (in channel order) and then folded into ps and pm,
  // which are so read and written once per kCh channels.
  static constexpr int kGroup = 4;

  template <int kCh, bool kExact>
  void nchw_group(int64_t b, int64_t c, acc_t* ps, acc_t* pm, acc_t* columns) const {
    const int64_t H = g.H, W = g.W;
    acc_t* hs[kCh];
    acc_t* hm[kCh];
    for (int j = 0; j < kCh; ++j) {
      hs[j] = columns + 2 * j * W;
      hm[j] = hs[j] + W;
      std::fill(hs[j], hs[j] + W, acc_t(0));
      std::fill(hm[j], hm[j] + W, kNegInf);
    }
    for (int64_t h = 0; h < H; ++h) {
      const scalar_t* row[kCh];
      for (int j = 0; j < kCh; ++j) {
        row[j] = x + ((b * g.C + c + j) * H + h) * W;
        g.pf.span_ahead(row[j], W);
      }
      acc_t* __restrict__ s = ps + h * W;
      acc_t* __restrict__ m = pm + h * W;
      acc_t rs[kCh], rm[kCh];
      std::fill(rs, rs + kCh, acc_t(0));
      std::fill(rm, rm + kCh, kNegInf);
      int64_t w = 0;
      if constexpr (kFloat<scalar_t>) {
        f4 rs4[kCh], rm4[kCh];
        for (int j = 0; j < kCh; ++j) {
          rs4[j] = splat4(0.f);
          rm4[j] = splat4(kNegInf);
        }
        for (; w + 4 <= W; w += 4) {
          f4 vs = splat4(0.f), vm = splat4(kNegInf);
          for (int j = 0; j < kCh; ++j) {
            const f4 v = load4(row[j] + w);
            rs4[j] += v;
            rm4[j] = max4<kExact>(rm4[j], v);
            store4(hs[j] + w, load4(hs[j] + w) + v);
            store4(hm[j] + w, max4<kExact>(load4(hm[j] + w), v));
            vs += v;
            vm = max4<kExact>(vm, v);
          }
          store4(s + w, load4(s + w) + vs);
          store4(m + w, max4<kExact>(load4(m + w), vm));
        }
        for (int j = 0; j < kCh; ++j) {
          rs[j] = hsum4(rs4[j]);
          for (int l = 0; l < 4; ++l) rm[j] = max_nan(rm[j], rm4[j][l]);
        }
      }
      for (; w < W; ++w) {
        acc_t vs = 0, vm = kNegInf;
        for (int j = 0; j < kCh; ++j) {
          const acc_t v = static_cast<acc_t>(row[j][w]);
          rs[j] += v;
          rm[j] = max_nan(rm[j], v);
          hs[j][w] += v;
          hm[j][w] = max_nan(hm[j][w], v);
          vs += v;
          vm = max_nan(vm, v);
        }
        s[w] += vs;
        m[w] = max_nan(m[w], vm);
      }
      for (int j = 0; j < kCh; ++j) {
        wmean[(b * g.C + c + j) * H + h] = rs[j] / static_cast<acc_t>(W);
        wmax[(b * g.C + c + j) * H + h] = rm[j];
      }
    }
    for (int j = 0; j < kCh; ++j)
      for (int64_t w = 0; w < W; ++w) {
        hmean[(b * g.C + c + j) * W + w] = hs[j][w] / static_cast<acc_t>(H);
        hmax[(b * g.C + c + j) * W + w] = hm[j][w];
      }
  }

  // A pixel's nc channels at a time, four lanes wide: the sum and max over
  // them (lanes, then in lane order, then the tail), and folded into the
  // per-channel reductions over W (rs, rm) and over H (columns per w).
  template <bool kExact>
  void nhwc(int64_t b, int64_t c0, int64_t c1, acc_t* ps, acc_t* pm) const {
    const int64_t H = g.H, W = g.W, nc = c1 - c0;
    std::vector<acc_t> col_sum(W * nc, acc_t(0)), col_max(W * nc, kNegInf);
    acc_t rs[kBlockC], rm[kBlockC];
    const scalar_t* xs = x + b * g.sample() + c0;
    const int64_t ahead = rows_ahead<scalar_t>(nc) * g.C;
    for (int64_t h = 0; h < H; ++h) {
      std::fill(rs, rs + nc, acc_t(0));
      std::fill(rm, rm + nc, kNegInf);
      for (int64_t w = 0; w < W; ++w) {
        const scalar_t* __restrict__ row = xs + (h * W + w) * g.C;
        g.pf.span(row + ahead, nc);
        acc_t* __restrict__ hs = col_sum.data() + w * nc;
        acc_t* __restrict__ hm = col_max.data() + w * nc;
        acc_t s = 0, m = kNegInf;
        int64_t c = 0;
        if constexpr (kFloat<scalar_t>) {
          f4 vs = splat4(0.f), vm = splat4(kNegInf);
          for (; c + 4 <= nc; c += 4) {
            const f4 v = load4(row + c);
            vs += v;
            vm = max4<kExact>(vm, v);
            store4(rs + c, load4(rs + c) + v);
            store4(rm + c, max4<kExact>(load4(rm + c), v));
            store4(hs + c, load4(hs + c) + v);
            store4(hm + c, max4<kExact>(load4(hm + c), v));
          }
          s = hsum4(vs);
          for (int l = 0; l < 4; ++l) m = max_nan(m, vm[l]);
        }
        for (; c < nc; ++c) {
          const acc_t v = static_cast<acc_t>(row[c]);
          s += v;
          m = max_nan(m, v);
          rs[c] += v;
          rm[c] = max_nan(rm[c], v);
          hs[c] += v;
          hm[c] = max_nan(hm[c], v);
        }
        ps[h * W + w] = s;
        pm[h * W + w] = m;
      }
      for (int64_t c = 0; c < nc; ++c) {
        wmean[(b * g.C + c0 + c) * H + h] = rs[c] / static_cast<acc_t>(W);
        wmax[(b * g.C + c0 + c) * H + h] = rm[c];
      }
    }
    for (int64_t w = 0; w < W; ++w)
      for (int64_t c = 0; c < nc; ++c) {
        hmean[(b * g.C + c0 + c) * W + w] = col_sum[w * nc + c] / static_cast<acc_t>(H);
        hmax[(b * g.C + c0 + c) * W + w] = col_max[w * nc + c];
      }
  }
};

template <typename scalar_t>
void pool_kernel(const at::Tensor& x, std::array<at::Tensor, 6>& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g(x);
  const Blocks blocks(Layout(x), g.B);
  const int64_t HW = g.H * g.W;
  const at::Tensor psum_t = blocks.partials(x, out[0].scalar_type());
  const at::Tensor pmax_t = blocks.partials(x, out[0].scalar_type());
  acc_t* psum = ptr<acc_t>(psum_t);
  acc_t* pmax = ptr<acc_t>(pmax_t);
  const PoolTask<scalar_t> task{g, x.data_ptr<scalar_t>(), ptr<acc_t>(out[2]), ptr<acc_t>(out[3]),
                                ptr<acc_t>(out[4]), ptr<acc_t>(out[5])};
  blocks.for_each([&](int64_t b, int64_t k, int64_t c0, int64_t c1) {
    acc_t* ps = psum + (b * blocks.n + k) * HW;
    acc_t* pm = pmax + (b * blocks.n + k) * HW;
    task(b, c0, c1, ps, pm);
  });
  combine_pixel_partials(g.B, blocks.n, HW, psum, pmax, static_cast<acc_t>(g.C),
                         ptr<acc_t>(out[0]), ptr<acc_t>(out[1]));
}

// ---------------------------------------------------------------- backward reduce

// One task's sums of dy * x over H and W of channels [c0, c1) and their ties,
// and its partial sum over those channels per pixel with the first channel
// there that holds the max (pd, pt).
template <typename scalar_t>
struct ReduceTask {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g;
  const scalar_t *dy, *x;
  const acc_t *cmax, *hmax, *wmax;
  acc_t *dh, *dw;
  int32_t *htie, *wtie;

  void nchw(int64_t b, int64_t c0, int64_t c1, acc_t* pd, int32_t* pt) const {
    const int64_t H = g.H, W = g.W;
    std::fill(pd, pd + H * W, acc_t(0));
    std::fill(pt, pt + H * W, -1);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t cw = (b * g.C + c) * W;
      acc_t* __restrict__ col = dh + cw;  // zero-filled by the caller
      int32_t* __restrict__ ht = htie + cw;
      const acc_t* __restrict__ hm = hmax + cw;
      const int32_t c32 = static_cast<int32_t>(c);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t off = ((b * g.C + c) * H + h) * W, pix = (b * H + h) * W;
        const scalar_t* __restrict__ xr = x + off;
        const scalar_t* __restrict__ dr = dy + off;
        g.pf.span_ahead(xr, W);
        g.pf.span_ahead(dr, W);
        const acc_t* __restrict__ cm = cmax + pix;
        acc_t* __restrict__ s = pd + h * W;
        int32_t* __restrict__ t = pt + h * W;
        const acc_t wm = wmax[(b * g.C + c) * H + h];
        const int32_t h32 = static_cast<int32_t>(h);
        acc_t rs = 0;
        int32_t wt = -1;
        int64_t w = 0;
        if constexpr (kFloat<scalar_t>) {
          f4 rs4 = splat4(0.f);
          const f4 wm4 = splat4(wm);
          for (; w + 4 <= W; w += 4) {
            const f4 v = load4(xr + w), p = load4(dr + w) * v;
            rs4 += p;
            store4(col + w, load4(col + w) + p);
            store4(s + w, load4(s + w) + p);
            const f4 hmv = load4(hm + w), cmv = load4(cm + w);
            const i4 htv = load4(ht + w), ptv = load4(t + w);
            store4(ht + w, ((htv < splat4(0)) & is_max4(v, hmv)) ? splat4(h32) : htv);
            store4(t + w, ((ptv < splat4(0)) & is_max4(v, cmv)) ? splat4(c32) : ptv);
            if (wt < 0) wt = first_lane(is_max4(v, wm4), w);
          }
          rs = hsum4(rs4);
        }
        for (; w < W; ++w) {
          const acc_t v = static_cast<acc_t>(xr[w]), p = static_cast<acc_t>(dr[w]) * v;
          rs += p;
          col[w] += p;
          s[w] += p;
          if (ht[w] < 0 && is_max(v, hm[w])) ht[w] = h32;
          if (t[w] < 0 && is_max(v, cm[w])) t[w] = c32;
          if (wt < 0 && is_max(v, wm)) wt = static_cast<int32_t>(w);
        }
        dw[(b * g.C + c) * H + h] = rs;
        wtie[(b * g.C + c) * H + h] = wt;
      }
    }
  }

  // A pixel's nc channels at a time: its sum over them (four lanes, then in
  // lane order, then the tail) and the first channel holding its max; folded
  // into the per-channel sums over W (rs) and over H (columns per w) with
  // their ties.
  void nhwc(int64_t b, int64_t c0, int64_t c1, acc_t* pd, int32_t* pt) const {
    const int64_t H = g.H, W = g.W, nc = c1 - c0, ahead = rows_ahead<scalar_t>(nc) * g.C;
    std::vector<acc_t> col_sum(W * nc, acc_t(0)), col_max(W * nc);
    std::vector<int32_t> col_tie(W * nc, -1);
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t w = 0; w < W; ++w) col_max[w * nc + c] = hmax[(b * g.C + c0 + c) * W + w];
    acc_t rs[kBlockC], wm[kBlockC];
    int32_t wt[kBlockC];
    for (int64_t h = 0; h < H; ++h) {
      std::fill(rs, rs + nc, acc_t(0));
      std::fill(wt, wt + nc, -1);
      for (int64_t c = 0; c < nc; ++c) wm[c] = wmax[(b * g.C + c0 + c) * H + h];
      const int32_t h32 = static_cast<int32_t>(h);
      for (int64_t w = 0; w < W; ++w) {
        const int64_t off = b * g.sample() + (h * W + w) * g.C + c0, pix = (b * H + h) * W + w;
        const scalar_t* __restrict__ xr = x + off;
        const scalar_t* __restrict__ dr = dy + off;
        g.pf.span(xr + ahead, nc);
        g.pf.span(dr + ahead, nc);
        acc_t* __restrict__ hs = col_sum.data() + w * nc;
        int32_t* __restrict__ ht = col_tie.data() + w * nc;
        const acc_t* __restrict__ hm = col_max.data() + w * nc;
        const acc_t cm = cmax[pix];
        const int32_t w32 = static_cast<int32_t>(w);
        acc_t s = 0;
        int32_t t = -1;
        int64_t c = 0;
        if constexpr (kFloat<scalar_t>) {
          f4 s4 = splat4(0.f);
          const f4 cm4 = splat4(cm);
          i4 first = splat4(std::numeric_limits<int32_t>::max());
          i4 chan = iota4(static_cast<int32_t>(c0));
          for (; c + 4 <= nc; c += 4, chan += 4) {
            const f4 v = load4(xr + c), p = load4(dr + c) * v;
            s4 += p;
            store4(rs + c, load4(rs + c) + p);
            store4(hs + c, load4(hs + c) + p);
            first = least4(first, is_max4(v, cm4), chan);
            const i4 wtv = load4(wt + c), htv = load4(ht + c);
            store4(wt + c, ((wtv < 0) & is_max4(v, load4(wm + c))) ? splat4(w32) : wtv);
            store4(ht + c, ((htv < 0) & is_max4(v, load4(hm + c))) ? splat4(h32) : htv);
          }
          s = hsum4(s4);
          t = least_index(first);
        }
        for (; c < nc; ++c) {
          const acc_t v = static_cast<acc_t>(xr[c]), p = static_cast<acc_t>(dr[c]) * v;
          s += p;
          rs[c] += p;
          hs[c] += p;
          if (t < 0 && is_max(v, cm)) t = static_cast<int32_t>(c0 + c);
          if (wt[c] < 0 && is_max(v, wm[c])) wt[c] = w32;
          if (ht[c] < 0 && is_max(v, hm[c])) ht[c] = h32;
        }
        pd[h * W + w] = s;
        pt[h * W + w] = t;
      }
      for (int64_t c = 0; c < nc; ++c) {
        dw[(b * g.C + c0 + c) * H + h] = rs[c];
        wtie[(b * g.C + c0 + c) * H + h] = wt[c];
      }
    }
    for (int64_t w = 0; w < W; ++w)
      for (int64_t c = 0; c < nc; ++c) {
        dh[(b * g.C + c0 + c) * W + w] = col_sum[w * nc + c];
        htie[(b * g.C + c0 + c) * W + w] = col_tie[w * nc + c];
      }
  }
};

template <typename scalar_t>
void backward_reduce_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& cmax,
                            const at::Tensor& hmax, const at::Tensor& wmax,
                            std::array<at::Tensor, 6>& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g(x);
  const Blocks blocks(Layout(x), g.B);
  const int64_t HW = g.H * g.W;
  const at::Tensor psum_t = blocks.partials(x, out[0].scalar_type());
  const at::Tensor ptie_t = blocks.partials(x, at::kInt);
  acc_t* psum = ptr<acc_t>(psum_t);
  int32_t* ptie = ptr<int32_t>(ptie_t);
  const ReduceTask<scalar_t> task{g,
                                  dy.data_ptr<scalar_t>(),
                                  x.data_ptr<scalar_t>(),
                                  cmax.data_ptr<acc_t>(),
                                  hmax.data_ptr<acc_t>(),
                                  wmax.data_ptr<acc_t>(),
                                  ptr<acc_t>(out[1]),
                                  ptr<acc_t>(out[2]),
                                  ptr<int32_t>(out[4]),
                                  ptr<int32_t>(out[5])};
  blocks.for_each([&](int64_t b, int64_t k, int64_t c0, int64_t c1) {
    acc_t* pd = psum + (b * blocks.n + k) * HW;
    int32_t* pt = ptie + (b * blocks.n + k) * HW;
    if (g.cl)
      task.nhwc(b, c0, c1, pd, pt);
    else
      task.nchw(b, c0, c1, pd, pt);
  });
  acc_t* dc = ptr<acc_t>(out[0]);
  int32_t* ctie = ptr<int32_t>(out[3]);
  for_pixels(g.B, HW, [&](int64_t b, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      acc_t s = 0;
      int32_t t = -1;
      for (int64_t k = 0; k < blocks.n; ++k) {
        s += psum[(b * blocks.n + k) * HW + p];
        if (t < 0) t = ptie[(b * blocks.n + k) * HW + p];
      }
      dc[b * HW + p] = s;
      ctie[b * HW + p] = t;
    }
  });
}

// ---------------------------------------------------------------- ops

TripletSix triplet_pool_cpu(const at::Tensor& x) {
  check_activation_4d(x, "x");
  auto out = triplet_pool_outputs(x);
  if (x.numel() != 0) AK_DISPATCH(x, "triplet_pool_cpu", [&] { pool_kernel<scalar_t>(x, out); });
  return as_tuple(out);
}

TripletSix triplet_backward_reduce_cpu(const at::Tensor& dy, const at::Tensor& x,
                                       const at::Tensor& cmax, const at::Tensor& hmax,
                                       const at::Tensor& wmax) {
  check_triplet_backward_reduce_args(dy, x, cmax, hmax, wmax);
  auto out = triplet_backward_reduce_outputs(x);
  if (x.numel() != 0)
    AK_DISPATCH(x, "triplet_backward_reduce_cpu",
                [&] { backward_reduce_kernel<scalar_t>(dy, x, cmax, hmax, wmax, out); });
  return as_tuple(out);
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_TRIPLET_REDUCE_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
