// CBAM on the CPU, the forward passes (semantics in csrc/schemas/cbam_schema.cpp; the backward
// passes are in cbam_backward.cpp).
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

// ---------------------------------------------------------------- forward

template <typename scalar_t>
void channel_pool_kernel(const at::Tensor& x, at::Tensor& mean, at::Tensor& max) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const scalar_t* xp = x.data_ptr<scalar_t>();
  acc_t* sp = mean.data_ptr<acc_t>();
  acc_t* mp = max.data_ptr<acc_t>();
  const acc_t hw = static_cast<acc_t>(L.HW);
  Blocks(L, x.size(0)).for_each([&](int64_t b, int64_t, int64_t c0, int64_t c1) {
    pool_channels<true>(xp + b * L.sample(), L, c0, c1, sp + b * L.C, mp + b * L.C, NoHook{},
                        pf);
    for (int64_t c = c0; c < c1; ++c) sp[b * L.C + c] /= hw;
  });
}

template <typename scalar_t>
void spatial_pool_kernel(const at::Tensor& x, const at::Tensor& ca, at::Tensor& mean,
                         at::Tensor& max) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const Blocks blocks(L, x.size(0));
  const int64_t C = L.C, HW = L.HW;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const acc_t* gp = ca.data_ptr<acc_t>();
  const at::Tensor psum_t = blocks.partials(x, mean.scalar_type());
  const at::Tensor pmax_t = blocks.partials(x, mean.scalar_type());
  acc_t* psum = ptr<acc_t>(psum_t);
  acc_t* pmax = ptr<acc_t>(pmax_t);
  blocks.for_each([&](int64_t b, int64_t k, int64_t c0, int64_t c1) {
    const scalar_t* xs = xp + b * L.sample();
    const acc_t* g = gp + b * C;
    acc_t* s = psum + (b * blocks.n + k) * HW;
    acc_t* m = pmax + (b * blocks.n + k) * HW;
    if (!L.channels_last()) {
      // The block's rows with the cheap max (max_fast4), and again with the
      // exact one if a NaN reached the sums.
      const auto rows = [&](auto exact) {
        constexpr bool kExact = decltype(exact)::value;
        std::fill(s, s + HW, acc_t(0));
        std::fill(m, m + HW, kNegInf);
        int64_t c = c0;
        if constexpr (kFloat<scalar_t>) {
          // Four channels per visit of s and m (a quarter of the stores), each
          // pixel's terms still added in channel order: the same bits.
          for (; c + 4 <= c1; c += 4) {
            const scalar_t* r0 = xs + c * HW;
            const f4 g0 = splat4(g[c]), g1 = splat4(g[c + 1]), g2 = splat4(g[c + 2]),
                     g3 = splat4(g[c + 3]);
            int64_t p = 0;
            for (; p + 4 <= HW; p += 4) {
              if (p % 16 == 0)
                for (int j = 0; j < 4; ++j) pf.ahead(r0 + j * HW + p);
              const f4 u0 = load4(r0 + p) * g0, u1 = load4(r0 + HW + p) * g1,
                       u2 = load4(r0 + 2 * HW + p) * g2, u3 = load4(r0 + 3 * HW + p) * g3;
              store4(s + p, (((load4(s + p) + u0) + u1) + u2) + u3);
              f4 mv = load4(m + p);
              for (const f4 u : {u0, u1, u2, u3}) mv = max4<kExact>(mv, u);
              store4(m + p, mv);
            }
            for (int j = 0; j < 4; ++j)
              for (int64_t q = p; q < HW; ++q) {
                const acc_t u = static_cast<acc_t>(r0[j * HW + q]) * g[c + j];
                s[q] += u;
                m[q] = max_nan(m[q], u);
              }
          }
        }
        for (; c < c1; ++c) {
          const scalar_t* __restrict__ row = xs + c * HW;
          const acc_t gc = g[c];
          int64_t p = 0;
          if constexpr (kFloat<scalar_t>) {
            for (; p + 4 <= HW; p += 4) {
              if (p % 16 == 0) pf.ahead(row + p);
              const f4 u = load4(row + p) * gc;
              store4(s + p, load4(s + p) + u);
              store4(m + p, max4<kExact>(load4(m + p), u));
            }
          }
          for (; p < HW; ++p) {
            const acc_t u = static_cast<acc_t>(row[p]) * gc;
            s[p] += u;
            m[p] = max_nan(m[p], u);
          }
        }
      };
      cheap_then_exact_max<scalar_t>(rows, s, HW);
    } else {
      // A pixel's channels four lanes wide (lanes, then in lane order, then
      // the tail); the cheap max, and the exact one again on a NaN sum.
      const int64_t ahead = rows_ahead<scalar_t>(c1 - c0) * C;
      const auto pixels = [&](auto exact) {
        constexpr bool kExact = decltype(exact)::value;
        for (int64_t p = 0; p < HW; ++p) {
          const scalar_t* __restrict__ row = xs + p * C;
          pf.span(row + ahead + c0, c1 - c0);
          acc_t a = 0, mx = kNegInf;
          int64_t c = c0;
          if constexpr (kFloat<scalar_t>) {
            f4 a4 = splat4(0.f), m4 = splat4(kNegInf);
            for (; c + 4 <= c1; c += 4) {
              const f4 u = load4(row + c) * load4(g + c);
              a4 += u;
              m4 = max4<kExact>(m4, u);
            }
            a = hsum4(a4);
            for (int l = 0; l < 4; ++l) mx = max_nan(mx, m4[l]);
          }
          for (; c < c1; ++c) {
            const acc_t u = static_cast<acc_t>(row[c]) * g[c];
            a += u;
            mx = max_nan(mx, u);
          }
          s[p] = a;
          m[p] = mx;
        }
      };
      cheap_then_exact_max<scalar_t>(pixels, s, HW);
    }
  });
  combine_pixel_partials(blocks.B, blocks.n, HW, psum, pmax, static_cast<acc_t>(C),
                         mean.data_ptr<acc_t>(), max.data_ptr<acc_t>());
}

template <typename scalar_t>
void apply_kernel(const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const Layout L(x);
  const Prefetch pf(x.nbytes());
  const int64_t C = L.C, HW = L.HW;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const acc_t* gp = ca.data_ptr<acc_t>();
  const acc_t* sp = sa.data_ptr<acc_t>();
  for_rows(L, x.size(0), [&](int64_t b, int64_t r) {
    const int64_t off = b * L.sample();
    if (!L.channels_last()) {
      const scalar_t* __restrict__ xr = xp + off + r * HW;
      scalar_t* __restrict__ yr = yp + off + r * HW;
      const acc_t* __restrict__ s = sp + b * HW;
      const acc_t g = gp[b * C + r];
      int64_t p = 0;
      // Explicit vectors (a loop through a lambda's captures stays scalar), no
      // software prefetch:
      // on the AMD EPYC it took 0.22-0.25 ms against 0.07-0.10 at 1x256x56x56
      // and gained nothing at 16x256x56x56 (8.7-9.8 ms against 8.4-9.7).
      if constexpr (kFloat<scalar_t>) {
        const f4 gv = splat4(g);
        for (; p + 4 <= HW; p += 4) {
          store4(yr + p, load4(xr + p) * gv * load4(s + p));
        }
      }
      for (; p < HW; ++p) yr[p] = static_cast<scalar_t>(static_cast<acc_t>(xr[p]) * g * s[p]);
    } else {
      const scalar_t* __restrict__ xr = xp + off + r * C;
      scalar_t* __restrict__ yr = yp + off + r * C;
      const acc_t* __restrict__ g = gp + b * C;
      const acc_t s = sp[b * HW + r];
      pf.span_ahead(xr, C);
      for (int64_t c = 0; c < C; ++c)
        yr[c] = static_cast<scalar_t>(static_cast<acc_t>(xr[c]) * g[c] * s);
    }
  });
}

// ---------------------------------------------------------------- ops

std::tuple<at::Tensor, at::Tensor> cbam_channel_pool_cpu(const at::Tensor& x) {
  check_activation_4d(x, "x");
  at::Tensor mean = channel_stats_like(x), max = channel_stats_like(x);
  fill_empty_stats(x, mean, max);
  if (x.numel() == 0) return {mean, max};
  AK_DISPATCH(x, "cbam_channel_pool_cpu", [&] { channel_pool_kernel<scalar_t>(x, mean, max); });
  return {mean, max};
}

std::tuple<at::Tensor, at::Tensor> cbam_spatial_pool_cpu(const at::Tensor& x, const at::Tensor& ca) {
  check_activation_4d(x, "x");
  check_stats(x, ca, "ca");
  at::Tensor mean = pixel_stats_like(x), max = pixel_stats_like(x);
  fill_empty_stats(x, mean, max);
  if (x.numel() == 0) return {mean, max};
  AK_DISPATCH(x, "cbam_spatial_pool_cpu", [&] { spatial_pool_kernel<scalar_t>(x, ca, mean, max); });
  return {mean, max};
}

at::Tensor cbam_apply_cpu(const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa) {
  check_cbam_gates(x, ca, sa);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  AK_DISPATCH(x, "cbam_apply_cpu", [&] { apply_kernel<scalar_t>(x, ca, sa, y); });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_CBAM_FORWARD_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
