// Coordinate Attention on the CPU: the passes over x (semantics in csrc/schemas/coord_schema.cpp).
//
// NCHW: one task per (n, c) plane; a row's sum over W uses kLanes independent
// lanes, the sum over H runs row by row (vectorised over W). channels_last:
// one task per (sample, block of kBlockC channels), every sum in row order.
// Each result is formed by one task in a fixed order: results do not depend on
// the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/dispatch.h"
#include "../common/coord.h"
#include "simd.h"
#include "tasks.h"

namespace attnkernels {
namespace {

template <typename scalar_t>
void pool_kernel(const at::Tensor& x, at::Tensor& mh, at::Tensor& mw) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g(x);
  const int64_t H = g.H, W = g.W, C = g.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  acc_t* hp = mh.data_ptr<acc_t>();
  acc_t* wp = mw.data_ptr<acc_t>();
  const acc_t hf = static_cast<acc_t>(H), wf = static_cast<acc_t>(W);
  for_tasks(
      g,
      [&](int64_t b, int64_t c) {
        const scalar_t* plane = xp + (b * C + c) * H * W;
        acc_t* mhr = hp + (b * C + c) * H;
        acc_t* __restrict__ mwr = wp + (b * C + c) * W;
        std::fill(mwr, mwr + W, acc_t(0));
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t* __restrict__ row = plane + h * W;
          g.pf.span_ahead(row, W);
          mhr[h] = lane_sum<acc_t>(W, [&](int64_t w) { return static_cast<acc_t>(row[w]); }) / wf;
          for (int64_t w = 0; w < W; ++w) mwr[w] += static_cast<acc_t>(row[w]);
        }
        for (int64_t w = 0; w < W; ++w) mwr[w] /= hf;
      },
      [&](int64_t b, int64_t c0, int64_t c1) {
        const int64_t nc = c1 - c0, ahead = rows_ahead<scalar_t>(nc) * C;
        std::vector<acc_t> acc_w(W * nc, acc_t(0));
        acc_t acc_h[kBlockC];
        for (int64_t h = 0; h < H; ++h) {
          std::fill(acc_h, acc_h + nc, acc_t(0));
          for (int64_t w = 0; w < W; ++w) {
            const scalar_t* __restrict__ row = xp + b * g.sample() + (h * W + w) * C + c0;
            g.pf.span(row + ahead, nc);
            acc_t* __restrict__ aw = acc_w.data() + w * nc;
            int64_t c = 0;
            if constexpr (std::is_same_v<scalar_t, float>) {  // the loop below, four channels at a time
              for (; c + 4 <= nc; c += 4) {
                const f4 v = load4(row + c);
                store4(acc_h + c, load4(acc_h + c) + v);
                store4(aw + c, load4(aw + c) + v);
              }
            }
            for (; c < nc; ++c) {
              const acc_t v = static_cast<acc_t>(row[c]);
              acc_h[c] += v;
              aw[c] += v;
            }
          }
          for (int64_t c = 0; c < nc; ++c) hp[(b * C + c0 + c) * H + h] = acc_h[c] / wf;
        }
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < nc; ++c) wp[(b * C + c0 + c) * W + w] = acc_w[w * nc + c] / hf;
      });
}

// y = x * aw * ah (+ x); dx = dy * aw * ah + gh + gw (+ dy). in is x or dy.
template <bool kGrad, typename scalar_t>
struct ApplyRows {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry& g;
  const scalar_t* in;
  scalar_t* out;
  const acc_t *ah, *aw, *gh, *gw;  // (N, C, len), or (N, len, C) for channels_last
  bool skip;

  acc_t value(acc_t v, acc_t a_w, acc_t a_h, acc_t g_h, acc_t g_w) const {
    acc_t r = v * a_w * a_h;
    if (kGrad) r += g_h + g_w;
    return skip ? r + v : r;
  }
  void row_nchw(int64_t b, int64_t c, int64_t h) const {
    const int64_t off = ((b * g.C + c) * g.H + h) * g.W;
    const scalar_t* __restrict__ src = in + off;
    scalar_t* __restrict__ dst = out + off;
    const acc_t* __restrict__ awr = aw + (b * g.C + c) * g.W;
    const acc_t* __restrict__ gwr = kGrad ? gw + (b * g.C + c) * g.W : awr;
    const acc_t a_h = ah[(b * g.C + c) * g.H + h];
    const acc_t g_h = kGrad ? gh[(b * g.C + c) * g.H + h] : acc_t(0);
    int64_t w = 0;
    if constexpr (kFloat<scalar_t>) {
      const f4 ah4 = splat4(a_h), gh4 = splat4(g_h);
      for (; w + 4 <= g.W; w += 4) {
        const f4 v = load4(src + w);
        f4 r = v * load4(awr + w) * ah4;
        if constexpr (kGrad) r += gh4 + load4(gwr + w);
        store4(dst + w, skip ? r + v : r);
      }
    }
    for (; w < g.W; ++w)
      dst[w] = static_cast<scalar_t>(
          value(static_cast<acc_t>(src[w]), awr[w], a_h, g_h, kGrad ? gwr[w] : acc_t(0)));
  }
  void row_nhwc(int64_t b, int64_t h, int64_t w) const {
    const int64_t off = b * g.sample() + (h * g.W + w) * g.C;
    const scalar_t* __restrict__ src = in + off;
    scalar_t* __restrict__ dst = out + off;
    const acc_t* __restrict__ ahr = ah + (b * g.H + h) * g.C;
    const acc_t* __restrict__ awr = aw + (b * g.W + w) * g.C;
    const acc_t* __restrict__ ghr = kGrad ? gh + (b * g.H + h) * g.C : ahr;
    const acc_t* __restrict__ gwr = kGrad ? gw + (b * g.W + w) * g.C : awr;
    g.pf.span_ahead(src, g.C);
    for (int64_t c = 0; c < g.C; ++c)
      dst[c] = static_cast<scalar_t>(value(static_cast<acc_t>(src[c]), awr[c], ahr[c],
                                           kGrad ? ghr[c] : acc_t(0), kGrad ? gwr[c] : acc_t(0)));
  }
};

template <typename scalar_t>
void backward_reduce_kernel(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ah,
                            const at::Tensor& aw, at::Tensor& dah, at::Tensor& daw) {
  using acc_t = at::opmath_type<scalar_t>;
  const Geometry g(x);
  const int64_t H = g.H, W = g.W, C = g.C;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dyp = dy.data_ptr<scalar_t>();
  acc_t* dhp = dah.data_ptr<acc_t>();
  acc_t* dwp = daw.data_ptr<acc_t>();
  const at::Tensor aht = g.cl ? by_position(ah) : ah, awt = g.cl ? by_position(aw) : aw;
  const acc_t* ahp = aht.data_ptr<acc_t>();
  const acc_t* awp = awt.data_ptr<acc_t>();
  for_tasks(
      g,
      [&](int64_t b, int64_t c) {
        const int64_t plane = (b * C + c) * H * W;
        const acc_t* __restrict__ awr = awp + (b * C + c) * W;
        acc_t* dhr = dhp + (b * C + c) * H;
        acc_t* __restrict__ dwr = dwp + (b * C + c) * W;
        std::fill(dwr, dwr + W, acc_t(0));
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t* __restrict__ xr = xp + plane + h * W;
          const scalar_t* __restrict__ dr = dyp + plane + h * W;
          g.pf.span_ahead(xr, W);
          g.pf.span_ahead(dr, W);
          dhr[h] = lane_sum<acc_t>(W, [&](int64_t w) {
            return static_cast<acc_t>(dr[w]) * static_cast<acc_t>(xr[w]) * awr[w];
          });
          const acc_t a_h = ahp[(b * C + c) * H + h];
          for (int64_t w = 0; w < W; ++w)
            dwr[w] += static_cast<acc_t>(dr[w]) * static_cast<acc_t>(xr[w]) * a_h;
        }
      },
      [&](int64_t b, int64_t c0, int64_t c1) {
        const int64_t nc = c1 - c0, ahead = rows_ahead<scalar_t>(nc) * C;
        std::vector<acc_t> acc_w(W * nc, acc_t(0));
        acc_t acc_h[kBlockC];
        for (int64_t h = 0; h < H; ++h) {
          std::fill(acc_h, acc_h + nc, acc_t(0));
          const acc_t* __restrict__ ahr = ahp + (b * H + h) * C + c0;
          for (int64_t w = 0; w < W; ++w) {
            const int64_t off = b * g.sample() + (h * W + w) * C + c0;
            const scalar_t* __restrict__ xr = xp + off;
            const scalar_t* __restrict__ dr = dyp + off;
            g.pf.span(xr + ahead, nc);
            g.pf.span(dr + ahead, nc);
            const acc_t* __restrict__ awr = awp + (b * W + w) * C + c0;
            acc_t* __restrict__ accw = acc_w.data() + w * nc;
            int64_t c = 0;
            if constexpr (std::is_same_v<scalar_t, float>) {  // the loop below, four channels at a time
              for (; c + 4 <= nc; c += 4) {
                const f4 t = load4(dr + c) * load4(xr + c);
                store4(acc_h + c, load4(acc_h + c) + t * load4(awr + c));
                store4(accw + c, load4(accw + c) + t * load4(ahr + c));
              }
            }
            for (; c < nc; ++c) {
              const acc_t t = static_cast<acc_t>(dr[c]) * static_cast<acc_t>(xr[c]);
              acc_h[c] += t * awr[c];
              accw[c] += t * ahr[c];
            }
          }
          for (int64_t c = 0; c < nc; ++c) dhp[(b * C + c0 + c) * H + h] = acc_h[c];
        }
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < nc; ++c) dwp[(b * C + c0 + c) * W + w] = acc_w[w * nc + c];
      });
}

// ---------------------------------------------------------------- ops

std::tuple<at::Tensor, at::Tensor> coord_pool_cpu(const at::Tensor& x) {
  check_activation_4d(x, "x");
  auto [mh, mw] = coord_pool_outputs(x);
  if (x.numel() == 0) return {mh, mw};
  AK_DISPATCH(x, "coord_pool_cpu", [&] { pool_kernel<scalar_t>(x, mh, mw); });
  return {mh, mw};
}

at::Tensor coord_apply_cpu(const at::Tensor& x, const at::Tensor& ah, const at::Tensor& aw,
                           bool skip) {
  check_coord_gates(x, ah, aw);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const Geometry g(x);
  const at::Tensor aht = g.cl ? by_position(ah) : ah, awt = g.cl ? by_position(aw) : aw;
  AK_DISPATCH(x, "coord_apply_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ApplyRows<false, scalar_t> rows{g, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                          aht.data_ptr<acc_t>(), awt.data_ptr<acc_t>(), nullptr,
                                          nullptr, skip};
    for_elements(g, rows);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> coord_backward_reduce_cpu(const at::Tensor& dy,
                                                             const at::Tensor& x,
                                                             const at::Tensor& ah,
                                                             const at::Tensor& aw) {
  check_coord_gates(x, ah, aw);
  check_grad_like_x(dy, x, "dy");
  at::Tensor dah = at::zeros_like(ah), daw = at::zeros_like(aw);
  if (x.numel() == 0) return {dah, daw};
  AK_DISPATCH(x, "coord_backward_reduce_cpu",
              [&] { backward_reduce_kernel<scalar_t>(dy, x, ah, aw, dah, daw); });
  return {dah, daw};
}

at::Tensor coord_backward_apply_cpu(const at::Tensor& dy, const at::Tensor& ah,
                                    const at::Tensor& aw, const at::Tensor& gh,
                                    const at::Tensor& gw, bool skip) {
  check_coord_backward_apply_args(dy, ah, aw, gh, gw);
  at::Tensor dx = empty_output_like(dy);
  if (dy.numel() == 0) return dx;
  const Geometry g(dy);
  auto pos = [&](const at::Tensor& t) { return g.cl ? by_position(t) : t; };
  const at::Tensor aht = pos(ah), awt = pos(aw), ght = pos(gh), gwt = pos(gw);
  AK_DISPATCH(dy, "coord_backward_apply_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ApplyRows<true, scalar_t> rows{g, dy.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                                         aht.data_ptr<acc_t>(), awt.data_ptr<acc_t>(),
                                         ght.data_ptr<acc_t>(), gwt.data_ptr<acc_t>(), skip};
    for_elements(g, rows);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_COORD_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
