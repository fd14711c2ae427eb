// CoT attention's softmax gate on the CPU (semantics in csrc/schemas/cot_schema.cpp).
//
// NCHW, plane by plane, each plane in cache once read: forward, the max of
// att, then w's numerators exp(att - max) into a plane-sized buffer and their
// sum, then y = k1 + w * v: att, v and k1 read once from memory, y written
// once. Backward: w into the buffer, r = sum w dy v, then datt and dv: att,
// dy and v read once. channels_last: the statistics (or r) over (sample,
// channel block) tasks, then an elementwise pass by positions that recomputes
// w. Each statistic is formed by one task in a fixed order: results do not
// depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/cot.h"
#include "../common/dispatch.h"
#include "fast_sigmoid.h"
#include "isa.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// The max over the lanes (a NaN in a plane makes its sum NaN, so the max
// need not propagate it: a plain compare, which vectorises).
template <typename acc_t>
ATTNKERNELS_INLINE acc_t bigger(acc_t m, acc_t v) {
  return v > m ? v : m;
}

template <typename scalar_t>
struct Planes {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *att, *v, *k1, *dy;
  scalar_t *out, *out2;  // y; or datt and dv
  acc_t *max, *inv_sum;
  int64_t HW;

  ATTNKERNELS_INLINE acc_t plane_max(const scalar_t* __restrict__ a) const {
    acc_t lane[kLanes];
    std::fill(lane, lane + kLanes, -std::numeric_limits<acc_t>::infinity());
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes)
      for (int l = 0; l < kLanes; ++l) lane[l] = bigger(lane[l], static_cast<acc_t>(a[i + l]));
    acc_t m = lane[0];
    for (int l = 1; l < kLanes; ++l) m = bigger(m, lane[l]);
    for (; i < HW; ++i) m = bigger(m, static_cast<acc_t>(a[i]));
    return m;
  }

  // e[i] = exp(a[i] - m) * scale: a loop of its own, which vectorises.
  ATTNKERNELS_INLINE static void exps(const scalar_t* __restrict__ a, acc_t m, acc_t scale,
                                      acc_t* __restrict__ e, int64_t n) {
    for (int64_t i = 0; i < n; ++i) e[i] = fast_exp(static_cast<acc_t>(a[i]) - m) * scale;
  }

  // Forward of plane nc: max, inv_sum, y; e is the plane-sized buffer.
  ATTNKERNELS_INLINE void forward(int64_t nc, acc_t* __restrict__ e, const Prefetch& pf) const {
    const int64_t off = nc * HW;
    const scalar_t* __restrict__ a = att + off;
    pf.span_ahead(a, HW);
    const acc_t m = plane_max(a);
    exps(a, m, acc_t(1), e, HW);
    const acc_t inv =
        acc_t(1) / lane_sum<acc_t>(HW, [&](int64_t i) ATTNKERNELS_INLINE_LAMBDA { return e[i]; });
    max[nc] = m;
    inv_sum[nc] = inv;
    pf.span_ahead(v + off, HW);
    pf.span_ahead(k1 + off, HW);
    apply_forward(e, inv, v + off, k1 + off, out + off, HW);
  }

  // (restrict parameters: the outputs alias none of the inputs, which lets
  // the compiler vectorise the loops)
  ATTNKERNELS_INLINE static void apply_forward(const acc_t* __restrict__ e, acc_t inv,
                                               const scalar_t* __restrict__ vp,
                                               const scalar_t* __restrict__ kp,
                                               scalar_t* __restrict__ yp, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      yp[i] = static_cast<scalar_t>(static_cast<acc_t>(kp[i]) +
                                    e[i] * inv * static_cast<acc_t>(vp[i]));
  }
  ATTNKERNELS_INLINE static void apply_backward(const acc_t* __restrict__ w, acc_t r,
                                                const scalar_t* __restrict__ vp,
                                                const scalar_t* __restrict__ gp,
                                                scalar_t* __restrict__ da,
                                                scalar_t* __restrict__ dv, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const acc_t g = static_cast<acc_t>(gp[i]);
      da[i] = static_cast<scalar_t>(w[i] * (g * static_cast<acc_t>(vp[i]) - r));
      dv[i] = static_cast<scalar_t>(g * w[i]);
    }
  }

  // Backward of plane nc: datt and dv; w is the plane-sized buffer.
  ATTNKERNELS_INLINE void backward(int64_t nc, acc_t* __restrict__ w, const Prefetch& pf) const {
    const int64_t off = nc * HW;
    const scalar_t* __restrict__ a = att + off;
    const scalar_t* __restrict__ vp = v + off;
    const scalar_t* __restrict__ gp = dy + off;
    pf.span_ahead(a, HW);
    pf.span_ahead(vp, HW);
    pf.span_ahead(gp, HW);
    exps(a, max[nc], inv_sum[nc], w, HW);
    const acc_t r = lane_sum<acc_t>(HW, [&](int64_t i) ATTNKERNELS_INLINE_LAMBDA {
      return w[i] * (static_cast<acc_t>(gp[i]) * static_cast<acc_t>(vp[i]));
    });
    apply_backward(w, r, vp, gp, out + off, out2 + off, HW);
  }

  // channels_last: channels [c0, c1) of sample b. Forward: max and inv_sum
  // (two reads of the block's rows); backward: r, into rsum.
  template <bool kGrad>
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C,
                                acc_t* rsum) const {
    const int64_t nc = c1 - c0, row = b * C + c0;
    acc_t m[kBlockC], s[kBlockC];
    const scalar_t* base = att + b * C * HW + c0;
    if constexpr (!kGrad) {
      std::fill(m, m + nc, -std::numeric_limits<acc_t>::infinity());
      for (int64_t p = 0; p < HW; ++p) {
        const scalar_t* __restrict__ ap = base + p * C;
        for (int64_t c = 0; c < nc; ++c) m[c] = bigger(m[c], static_cast<acc_t>(ap[c]));
      }
    } else {
      std::copy(max + row, max + row + nc, m);
    }
    acc_t inv[kBlockC];
    if constexpr (kGrad) std::copy(inv_sum + row, inv_sum + row + nc, inv);
    std::fill(s, s + nc, acc_t(0));
    for (int64_t p = 0; p < HW; ++p) {
      const int64_t o = p * C;
      const scalar_t* __restrict__ ap = base + o;
      if constexpr (!kGrad) {
        for (int64_t c = 0; c < nc; ++c) s[c] += fast_exp(static_cast<acc_t>(ap[c]) - m[c]);
      } else {
        const scalar_t* __restrict__ vp = v + b * C * HW + c0 + o;
        const scalar_t* __restrict__ gp = dy + b * C * HW + c0 + o;
        for (int64_t c = 0; c < nc; ++c)
          s[c] += fast_exp(static_cast<acc_t>(ap[c]) - m[c]) * inv[c] *
                  (static_cast<acc_t>(gp[c]) * static_cast<acc_t>(vp[c]));
      }
    }
    if constexpr (!kGrad) {
      std::copy(m, m + nc, max + row);
      for (int64_t c = 0; c < nc; ++c) inv_sum[row + c] = acc_t(1) / s[c];
    } else {
      std::copy(s, s + nc, rsum + row);
    }
  }

  // channels_last: the C channels of one position of sample b (element offset o).
  template <bool kGrad>
  ATTNKERNELS_INLINE void position(int64_t b, int64_t o, int64_t C, const acc_t* rsum) const {
    if constexpr (!kGrad)
      position_forward(att + o, v + o, k1 + o, max + b * C, inv_sum + b * C, out + o, C);
    else
      position_backward(att + o, v + o, dy + o, max + b * C, inv_sum + b * C, rsum + b * C,
                        out + o, out2 + o, C);
  }
  ATTNKERNELS_INLINE static void position_forward(
      const scalar_t* __restrict__ a, const scalar_t* __restrict__ vp,
      const scalar_t* __restrict__ kp, const acc_t* __restrict__ m,
      const acc_t* __restrict__ inv, scalar_t* __restrict__ yp, int64_t C) {
    for (int64_t c = 0; c < C; ++c)
      yp[c] = static_cast<scalar_t>(
          static_cast<acc_t>(kp[c]) +
          fast_exp(static_cast<acc_t>(a[c]) - m[c]) * inv[c] * static_cast<acc_t>(vp[c]));
  }
  ATTNKERNELS_INLINE static void position_backward(
      const scalar_t* __restrict__ a, const scalar_t* __restrict__ vp,
      const scalar_t* __restrict__ gp, const acc_t* __restrict__ m,
      const acc_t* __restrict__ inv, const acc_t* __restrict__ r, scalar_t* __restrict__ da,
      scalar_t* __restrict__ dv, int64_t C) {
    for (int64_t c = 0; c < C; ++c) {
      const acc_t w = fast_exp(static_cast<acc_t>(a[c]) - m[c]) * inv[c];
      const acc_t g = static_cast<acc_t>(gp[c]);
      da[c] = static_cast<scalar_t>(w * (g * static_cast<acc_t>(vp[c]) - r[c]));
      dv[c] = static_cast<scalar_t>(g * w);
    }
  }
};

// The whole op: NCHW plane by plane (a buffer of H*W per task); channels_last
// the reduction by channel blocks, then the positions.
template <bool kGrad, typename scalar_t>
void run(const Geometry& g, const Planes<scalar_t>& planes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = g.H * g.W, C = g.C;
  if (!g.cl) {
    at::parallel_for(0, g.B * C, 1, [&](int64_t t0, int64_t t1) {
      std::vector<acc_t> buf(HW);
      with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
        for (int64_t nc = t0; nc < t1; ++nc) {
          if constexpr (kGrad)
            planes.backward(nc, buf.data(), g.pf);
          else
            planes.forward(nc, buf.data(), g.pf);
        }
      });
    });
    return;
  }
  std::vector<acc_t> rsum(kGrad ? g.B * C : 0);
  for_tasks(
      g, [](int64_t, int64_t) {},
      [&](int64_t b, int64_t c0, int64_t c1) {
        with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
          planes.template block<kGrad>(b, c0, c1, C, rsum.data());
        });
      });
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C));
  at::parallel_for(0, g.B * HW, grain, [&](int64_t t0, int64_t t1) {
    with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
      for (int64_t t = t0; t < t1; ++t)
        planes.template position<kGrad>(t / HW, t * C, C, rsum.data());
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cot_forward_cpu(const at::Tensor& att,
                                                               const at::Tensor& v,
                                                               const at::Tensor& k1) {
  CoTForwardOutputs out = cot_forward_outputs(att, v, k1);
  if (att.numel() == 0) return {out.y, out.max, out.inv_sum};
  const Geometry g(att);
  AK_DISPATCH(att, "cot_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    run<false>(g, Planes<scalar_t>{att.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                   k1.data_ptr<scalar_t>(), nullptr, out.y.data_ptr<scalar_t>(),
                                   nullptr, out.max.data_ptr<acc_t>(),
                                   out.inv_sum.data_ptr<acc_t>(), g.H * g.W});
  });
  return {out.y, out.max, out.inv_sum};
}

std::tuple<at::Tensor, at::Tensor> cot_backward_cpu(const at::Tensor& dy, const at::Tensor& att,
                                                    const at::Tensor& v, const at::Tensor& max,
                                                    const at::Tensor& inv_sum) {
  check_cot_backward_args(dy, att, v, max, inv_sum);
  at::Tensor datt = empty_output_like(att), dv = empty_output_like(att);
  if (att.numel() == 0) return {datt, dv};
  const Geometry g(att);
  AK_DISPATCH(att, "cot_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    run<true>(g, Planes<scalar_t>{att.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), nullptr,
                                  dy.data_ptr<scalar_t>(), datt.data_ptr<scalar_t>(),
                                  dv.data_ptr<scalar_t>(), ptr<acc_t>(max), ptr<acc_t>(inv_sum),
                                  g.H * g.W});
  });
  return {datt, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_COT_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
