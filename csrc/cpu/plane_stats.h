// The per-(n, c) statistics pass of SimAM and NAM on the CPU. Internal to
// csrc/cpu/ (internal linkage).
#pragma once
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>

#include "../common/mean_m2.h"
#include "isa.h"
#include "tasks.h"

namespace attnkernels {
namespace {

constexpr int64_t kPlaneChunk = 512;  // NCHW: positions per chunk of one plane
constexpr int64_t kPixelChunk = 64;   // channels_last: positions per chunk of a channel block

// Per (n, c): the mean and the sum of squared deviations over the H*W
// positions, exact per chunk of positions (two reads of the chunk while it is
// in cache), chunks merged in order; store(nc, MeanM2) keeps them. plane():
// one NCHW plane; block(): channels [c0, c1) of a channels_last sample (at
// most kBlockC).
template <typename scalar_t, typename Store>
struct PlaneStats {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  int64_t HW;
  Store store;

  // Exact statistics of n values v(i), then merged into s.
  template <typename V>
  static void add_chunk(MeanM2<acc_t>& s, int64_t n, const V& v) {
    const acc_t m = lane_sum<acc_t>(n, v) / static_cast<acc_t>(n);
    const acc_t m2 = lane_sum<acc_t>(n, [&](int64_t i) {
      const acc_t d = v(i) - m;
      return d * d;
    });
    s.merge(static_cast<acc_t>(n), m, m2);
  }
  ATTNKERNELS_INLINE void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const scalar_t* p = x + (b * C + c) * HW;
    MeanM2<acc_t> s;
    for (int64_t i0 = 0; i0 < HW; i0 += kPlaneChunk) {
      const int64_t n = std::min(kPlaneChunk, HW - i0);
      const scalar_t* q = p + i0;
      pf.span_ahead(q, n);
      add_chunk(s, n, [&](int64_t i) { return static_cast<acc_t>(q[i]); });
    }
    store(b * C + c, s);
  }
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0;
    MeanM2<acc_t> s[kBlockC];
    acc_t m[kBlockC], m2[kBlockC];
    const scalar_t* base = x + b * C * HW + c0;
    for (int64_t p0 = 0; p0 < HW; p0 += kPixelChunk) {
      const int64_t n = std::min(kPixelChunk, HW - p0);
      std::fill(m, m + nc, acc_t(0));
      std::fill(m2, m2 + nc, acc_t(0));
      for (int64_t p = p0; p < p0 + n; ++p)
        for (int64_t c = 0; c < nc; ++c) m[c] += static_cast<acc_t>(base[p * C + c]);
      for (int64_t c = 0; c < nc; ++c) m[c] /= static_cast<acc_t>(n);
      for (int64_t p = p0; p < p0 + n; ++p)
        for (int64_t c = 0; c < nc; ++c) {
          const acc_t d = static_cast<acc_t>(base[p * C + c]) - m[c];
          m2[c] += d * d;
        }
      for (int64_t c = 0; c < nc; ++c) s[c].merge(static_cast<acc_t>(n), m[c], m2[c]);
    }
    for (int64_t c = 0; c < nc; ++c) store(b * C + c0 + c, s[c]);
  }
};

}  // namespace
}  // namespace attnkernels
