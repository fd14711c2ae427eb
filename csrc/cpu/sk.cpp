// Selective Kernel attention on the CPU (semantics in csrc/schemas/sk_schema.cpp).
//
// Pool: one read of each branch, per (n, c) plane (NCHW) or per (sample,
// channel block) task (channels_last). Select forward: the softmax over the
// branches per (n, c) (a (B, K, C) table), then one read of each branch and a
// write of y. Select backward: one read of dy and of each branch, writing each
// branch's gradient and forming g_k = sum_hw dy * branch_k in the same loop.
// Each result is formed by one task in a fixed order: results do not depend
// on the thread count. The sums over H*W accumulate in double: g_k feeds
// g_k - sum_j a_j g_j, which cancels where the branches agree (float lanes
// left the logits' gradient several times eager's error off float64).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/dispatch.h"
#include "../common/sk.h"
#include "isa.h"
#include "tasks.h"

namespace attnkernels {
namespace {

// The softmax table a (B, K, C) of logits (B, K, C), both in acc_t.
template <typename acc_t>
std::vector<acc_t> softmax_table(const at::Tensor& logits) {
  const int64_t B = logits.size(0), K = logits.size(1), C = logits.size(2);
  const acc_t* l = logits.data_ptr<acc_t>();
  std::vector<acc_t> a(B * K * C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      softmax_over(l + b * K * C + c, K, C, a.data() + b * K * C + c, C);
  return a;
}

template <typename scalar_t>
struct Pool {
  using acc_t = at::opmath_type<scalar_t>;
  BranchPtrs<scalar_t> f;
  int64_t K, HW;
  scalar_t* s;

  ATTNKERNELS_INLINE void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const int64_t off = (b * C + c) * HW;
    double t = 0;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* __restrict__ fp = f.p[k] + off;
      pf.span_ahead(fp, HW);
      t += lane_sum<double>(HW, [&](int64_t i) { return static_cast<double>(fp[i]); });
    }
    s[b * C + c] = static_cast<scalar_t>(t / static_cast<double>(HW));
  }
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0, base = b * C * HW + c0;
    double t[kBlockC] = {};
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < HW; ++p) {
        const scalar_t* __restrict__ fp = f.p[k] + base + p * C;
        for (int64_t c = 0; c < nc; ++c) t[c] += static_cast<double>(fp[c]);
      }
    for (int64_t c = 0; c < nc; ++c)
      s[b * C + c0 + c] = static_cast<scalar_t>(t[c] / static_cast<double>(HW));
  }
};

// Backward: per (n, c), dbranch_k = a_k dy and g_k = sum_hw dy * branch_k.
template <typename scalar_t>
struct SelectGrad {
  using acc_t = at::opmath_type<scalar_t>;
  BranchPtrs<scalar_t> f;
  BranchOutPtrs<scalar_t> df;
  const scalar_t* dy;
  const acc_t* a;  // (B, K, C)
  double* g;       // (B, K, C)
  int64_t K, HW;

  ATTNKERNELS_INLINE void plane(int64_t b, int64_t c, int64_t C, const Prefetch& pf) const {
    const int64_t off = (b * C + c) * HW;
    const scalar_t* __restrict__ gp = dy + off;
    pf.span_ahead(gp, HW);
    for (int64_t k = 0; k < K; ++k) {  // a branch at a time: dy stays in cache
      const acc_t ak = a[(b * K + k) * C + c];
      const scalar_t* __restrict__ fp = f.p[k] + off;
      scalar_t* __restrict__ dp = df.p[k] + off;
      pf.span_ahead(fp, HW);
      for (int64_t i = 0; i < HW; ++i) dp[i] = static_cast<scalar_t>(ak * static_cast<acc_t>(gp[i]));
      g[(b * K + k) * C + c] = lane_sum<double>(
          HW, [&](int64_t i) { return static_cast<double>(gp[i]) * static_cast<double>(fp[i]); });
    }
  }
  ATTNKERNELS_INLINE void block(int64_t b, int64_t c0, int64_t c1, int64_t C) const {
    const int64_t nc = c1 - c0, base = b * C * HW + c0;
    for (int64_t k = 0; k < K; ++k) {
      const acc_t* ak = a + (b * K + k) * C + c0;
      double t[kBlockC] = {};
      for (int64_t p = 0; p < HW; ++p) {
        const scalar_t* __restrict__ gp = dy + base + p * C;
        const scalar_t* __restrict__ fp = f.p[k] + base + p * C;
        scalar_t* __restrict__ dp = df.p[k] + base + p * C;
        for (int64_t c = 0; c < nc; ++c) {
          const acc_t d = static_cast<acc_t>(gp[c]);
          dp[c] = static_cast<scalar_t>(ak[c] * d);
          t[c] += static_cast<double>(d) * static_cast<double>(fp[c]);
        }
      }
      std::copy(t, t + nc, g + (b * K + k) * C + c0);
    }
  }
};

// y = sum_k a_k branch_k, a row at a time (for_elements), in chunks of kChunk
// elements: a branch at a time into an acc_t buffer (the loops vectorise).
template <typename scalar_t>
struct SelectApply {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int64_t kChunk = 256;
  BranchPtrs<scalar_t> f;
  const acc_t* a;
  scalar_t* y;
  int64_t K, C, H, W;

  // n elements from off; branch k's weight: ak[k * astep], or with kPerChannel
  // (channels_last rows) ak[k * astep + j] for element j.
  template <bool kPerChannel>
  ATTNKERNELS_INLINE void span(int64_t off, int64_t n, const acc_t* ak, int64_t astep) const {
    with_widest_isa([&]() ATTNKERNELS_INLINE_LAMBDA {
      acc_t buf[kChunk];
      for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
        const int64_t m = std::min(kChunk, n - j0);
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t* __restrict__ fk = f.p[k] + off + j0;
          const acc_t* __restrict__ wk = ak + k * astep + (kPerChannel ? j0 : 0);
          if (k == 0) {
            for (int64_t j = 0; j < m; ++j)
              buf[j] = wk[kPerChannel ? j : 0] * static_cast<acc_t>(fk[j]);
          } else {
            for (int64_t j = 0; j < m; ++j)
              buf[j] += wk[kPerChannel ? j : 0] * static_cast<acc_t>(fk[j]);
          }
        }
        scalar_t* __restrict__ yp = y + off + j0;
        for (int64_t j = 0; j < m; ++j) yp[j] = static_cast<scalar_t>(buf[j]);
      }
    });
  }
  ATTNKERNELS_INLINE void row_nchw(int64_t b, int64_t c, int64_t h) const {
    span<false>(((b * C + c) * H + h) * W, W, a + b * K * C + c, C);
  }
  ATTNKERNELS_INLINE void row_nhwc(int64_t b, int64_t h, int64_t w) const {
    span<true>(((b * H + h) * W + w) * C, C, a + b * K * C, C);
  }
};

at::Tensor sk_pool_cpu(at::TensorList branches) {
  check_sk_branches(branches);
  const at::Tensor& x = branches[0];
  at::Tensor s = at::empty({x.size(0), x.size(1)}, x.options());
  if (s.numel() == 0) return s;
  if (x.numel() == 0) return s.fill_(std::numeric_limits<double>::quiet_NaN());  // as torch.mean
  const Geometry g(x);
  AK_DISPATCH(x, "sk_pool_cpu", [&] {
    run_plane_pass(g, Pool<scalar_t>{branch_ptrs<scalar_t>(branches),
                                static_cast<int64_t>(branches.size()), g.H * g.W,
                                s.data_ptr<scalar_t>()});
  });
  return s;
}

at::Tensor sk_forward_cpu(at::TensorList branches, const at::Tensor& logits) {
  check_sk_branches(branches);
  const at::Tensor l = sk_logits_acc(branches, logits);
  const at::Tensor& x = branches[0];
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const Geometry g(x);
  AK_DISPATCH(x, "sk_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const std::vector<acc_t> a = softmax_table<acc_t>(l);
    for_elements(g, SelectApply<scalar_t>{branch_ptrs<scalar_t>(branches), a.data(),
                                          y.data_ptr<scalar_t>(),
                                          static_cast<int64_t>(branches.size()), g.C, g.H, g.W});
  });
  return y;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> sk_backward_cpu(
    const at::Tensor& dy, at::TensorList branches, const at::Tensor& logits) {
  check_sk_branches(branches);
  const at::Tensor l = sk_logits_acc(branches, logits);
  const at::Tensor& x = branches[0];
  check_grad_like_x(dy, x, "dy");
  std::vector<at::Tensor> dbranches = sk_branch_grads(branches);
  at::Tensor dl = at::zeros_like(l);
  if (x.numel() != 0) {
    const Geometry g(x);
    const int64_t K = static_cast<int64_t>(branches.size());
    AK_DISPATCH(x, "sk_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const std::vector<acc_t> a = softmax_table<acc_t>(l);
      std::vector<double> gk(a.size());
      run_plane_pass(g, SelectGrad<scalar_t>{branch_ptrs<scalar_t>(branches),
                                        branch_out_ptrs<scalar_t>(dbranches),
                                        dy.data_ptr<scalar_t>(), a.data(), gk.data(), K,
                                        g.H * g.W});
      acc_t* d = dl.data_ptr<acc_t>();
      for (int64_t b = 0; b < g.B; ++b)
        for (int64_t c = 0; c < g.C; ++c) {
          const int64_t o = b * K * g.C + c;
          double ak[kSKMaxBranches], dk[kSKMaxBranches];
          for (int64_t k = 0; k < K; ++k) ak[k] = a[o + k * g.C];
          softmax_over_backward(ak, gk.data() + o, K, g.C, dk, 1);
          for (int64_t k = 0; k < K; ++k) d[o + k * g.C] = static_cast<acc_t>(dk[k]);
        }
    });
  }
  return {dbranches, dl.to(logits.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_SK_OPS(AK_IMPL, _cpu) }

}  // namespace attnkernels
