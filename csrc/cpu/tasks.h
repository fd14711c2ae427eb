// Task decomposition shared by the CPU passes of the families whose
// reductions run over several axes (CBAM, Coordinate Attention, Triplet).
// Each result is formed by one task, or by per-block partials combined in
// block order, so results do not depend on the thread count. Internal to
// csrc/cpu/ (everything here has internal linkage).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "channel_gate.h"
#include "isa.h"

namespace attnkernels {
namespace {

constexpr int64_t kBlockC = 32;

// The (sample, channel block) tasks of one tensor.
struct Blocks {
  int64_t B, C, HW, n;  // n: channel blocks per sample
  Blocks(const Layout& L, int64_t batch)
      : B(batch), C(L.C), HW(L.HW), n((L.C + kBlockC - 1) / kBlockC) {}
  // f(b, k, c0, c1) for every task, in parallel.
  template <typename F>
  void for_each(const F& f) const {
    at::parallel_for(0, B * n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / n, k = t % n, c0 = k * kBlockC;
        f(b, k, c0, std::min(C, c0 + kBlockC));
      }
    });
  }
  // Per-block partials of a per-pixel reduction: (B, n, HW).
  at::Tensor partials(const at::Tensor& x, at::ScalarType dtype) const {
    return at::empty({B, n, HW}, x.options().dtype(dtype));
  }
};

// f(b, p0, p1) over every pixel of every sample, in parallel.
template <typename F>
void for_pixels(int64_t B, int64_t HW, const F& f) {
  at::parallel_for(0, B * HW, 4096, [&](int64_t i0, int64_t i1) {
    while (i0 < i1) {
      const int64_t b = i0 / HW, p0 = i0 % HW, p1 = std::min(HW, p0 + (i1 - i0));
      f(b, p0, p1);
      i0 += p1 - p0;
    }
  });
}

// The per-pixel mean and max over C from the channel blocks' partials (B, n,
// HW): mean[b, p] = (sum over k of psum[b, k, p]) / count and max[b, p] the
// NaN-propagating max of pmax[b, k, p], the blocks taken in order. fp32 four
// pixels at a time: the same bits as one pixel at a time (at batch 1 the
// scalar loop was a fifth of CBAM's spatial pool).
template <typename acc_t>
void combine_pixel_partials(int64_t B, int64_t n, int64_t HW, const acc_t* psum,
                            const acc_t* pmax, acc_t count, acc_t* mean, acc_t* max) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  for_pixels(B, HW, [&](int64_t b, int64_t p0, int64_t p1) {
    const acc_t* ps = psum + b * n * HW;
    const acc_t* pm = pmax + b * n * HW;
    int64_t p = p0;
    if constexpr (std::is_same_v<acc_t, float>) {
      const f4 count4 = splat4(count);
      for (; p + 4 <= p1; p += 4) {
        f4 a = splat4(0.f), m = splat4(kNegInf);
        for (int64_t k = 0; k < n; ++k) {
          a = a + load4(ps + k * HW + p);
          m = max_nan4(m, load4(pm + k * HW + p));
        }
        store4(mean + b * HW + p, a / count4);
        store4(max + b * HW + p, m);
      }
    }
    for (; p < p1; ++p) {
      acc_t a = 0, m = kNegInf;
      for (int64_t k = 0; k < n; ++k) {
        a += ps[k * HW + p];
        m = max_nan(m, pm[k * HW + p]);
      }
      mean[b * HW + p] = a / count;
      max[b * HW + p] = m;
    }
  });
}

// f(b, r) over the rows of every sample (channels for NCHW, pixels for
// channels_last), in parallel.
template <typename F>
void for_rows(const Layout& L, int64_t B, const F& f) {
  const int64_t rows = L.rows(), len = L.sample() / std::max<int64_t>(1, rows);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, len));
  at::parallel_for(0, B * rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) f(r / rows, r % rows);
  });
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return const_cast<T*>(t.data_ptr<T>());
}

// The shape of x, whether the kernels index it as channels_last, and whether
// a pass streaming it prefetches.
struct Geometry {
  int64_t B, C, H, W;
  bool cl;
  Prefetch pf;
  explicit Geometry(const at::Tensor& x)
      : B(x.size(0)), C(x.size(1)), H(x.size(2)), W(x.size(3)), cl(Layout(x).channels_last()),
        pf(x.nbytes()) {}
  int64_t sample() const { return C * H * W; }
  int64_t blocks() const { return (C + kBlockC - 1) / kBlockC; }
};

// sum_i term(i) for i in [0, n), in kLanes lanes (then the lanes in order, then the tail).
template <typename acc_t, typename Term>
inline acc_t lane_sum(int64_t n, const Term& term) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] += term(i + l);
  acc_t s = 0;
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  for (; i < n; ++i) s += term(i);
  return s;
}

// Planes (NCHW) or (sample, channel block) tasks (channels_last), in parallel.
template <typename Plane, typename Block>
void for_tasks(const Geometry& g, const Plane& plane, const Block& block) {
  if (!g.cl) {
    at::parallel_for(0, g.B * g.C, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) plane(t / g.C, t % g.C);
    });
  } else {
    const int64_t n = g.blocks();
    at::parallel_for(0, g.B * n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c0 = (t % n) * kBlockC;
        block(t / n, c0, std::min(g.C, c0 + kBlockC));
      }
    });
  }
}

// pass.plane(b, c, C, pf) or pass.block(b, c0, c1, C) over for_tasks' tasks,
// each at the widest instruction set (isa.h): the per-(n, c) reductions of
// NAM and Selective Kernel.
template <typename Pass>
void run_plane_pass(const Geometry& g, const Pass& pass) {
  for_tasks(
      g,
      [&](int64_t b, int64_t c) {
        with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA { pass.plane(b, c, g.C, g.pf); });
      },
      [&](int64_t b, int64_t c0, int64_t c1) {
        with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA { pass.block(b, c0, c1, g.C); });
      });
}

// A strip (N, C, len) as (N, len, C), contiguous: channels_last reads it per position.
inline at::Tensor by_position(const at::Tensor& strip) { return strip.transpose(1, 2).contiguous(); }

// Elementwise over x-shaped tensors, a row at a time: f.row_nchw(b, c, h) (a
// row of W) or f.row_nhwc(b, h, w) (a position's C channels), in parallel.
template <typename F>
void for_elements(const Geometry& g, const F& f) {
  if (!g.cl) {
    at::parallel_for(0, g.B * g.C, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t h = 0; h < g.H; ++h) f.row_nchw(t / g.C, t % g.C, h);
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.C));
    at::parallel_for(0, g.B * g.H * g.W, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / (g.H * g.W), p = t % (g.H * g.W);
        f.row_nhwc(b, p / g.W, p % g.W);
      }
    });
  }
}

}  // namespace
}  // namespace attnkernels
