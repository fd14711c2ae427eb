// Squeeze-and-Excitation: argument checks and the weights' preparation,
// shared by the CPU and CUDA implementations.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <limits>

#include "checks.h"
#include "outputs.h"
#include "gate_math.h"

namespace attnkernels {

// The gate network of one SE family member, weights in the accumulate dtype.
struct SEWeights {
  at::Tensor w1, b1, w2, b2;  // b1, b2, w2 undefined when absent
  int64_t reduced;            // rows of w1
  bool two_layer() const { return w2.defined(); }
};

inline SEWeights se_prepare(const at::Tensor& x, const at::Tensor& w1,
                            const c10::optional<at::Tensor>& b1,
                            const c10::optional<at::Tensor>& w2,
                            const c10::optional<at::Tensor>& b2, int64_t pool, int64_t act,
                            int64_t gate) {
  check_activation_4d(x, "x");
  TORCH_CHECK(pool == kAvg || pool == kAvgMax, "pool must be 0 (avg) or 1 (avg_max), got ", pool);
  TORCH_CHECK(act >= kIdentity && act <= kHardswish, "act must be in [0, 3], got ", act);
  TORCH_CHECK(gate == kSigmoid || gate == kHardSigmoid, "gate must be 0 or 1, got ", gate);
  const int64_t C = x.size(1);
  TORCH_CHECK(w1.dim() == 2, "w1 must be 2-D (reduced, C), got ", w1.sizes());
  const int64_t R = w1.size(0);
  check_weight(x, w1, "w1", R, C);
  check_bias(x, b1, "b1", R);
  if (w2.has_value()) {
    check_weight(x, *w2, "w2", C, R);
    check_bias(x, b2, "b2", C);
  } else {
    TORCH_CHECK(R == C, "a one-layer gate needs w1 of shape (C, C) = (", C, ", ", C, "), got ",
                w1.sizes());
    TORCH_CHECK(!b2.has_value(), "b2 given without w2");
    TORCH_CHECK(act == kIdentity, "a one-layer gate has no activation; act must be 0 (identity)");
  }
  const auto acc = accumulate_type(x);
  auto prep = [&](const at::Tensor& t) { return t.to(acc).contiguous(); };
  SEWeights w;
  w.w1 = prep(w1);
  if (b1.has_value()) w.b1 = prep(*b1);
  if (w2.has_value()) w.w2 = prep(*w2);
  if (b2.has_value()) w.b2 = prep(*b2);
  w.reduced = R;
  return w;
}

inline void check_se_backward_args(const at::Tensor& dy, const at::Tensor& x,
                                   const at::Tensor& pooled, const at::Tensor& xmax,
                                   int64_t pool) {
  check_grad_like_x(dy, x, "dy");
  check_stats(x, pooled, "pooled");
  if (pool == kAvgMax) check_stats(x, xmax, "xmax");
}

// se_forward's outputs: y in x's memory format, the pooled statistic per
// (b, c) and, for avg_max, the max per (b, c). An empty x gets NaN statistics
// (the mean over an empty H*W, as in torch) and the caller launches nothing.
struct SEForwardOutputs {
  at::Tensor y, pooled, xmax;
};

inline SEForwardOutputs se_forward_outputs(const at::Tensor& x, int64_t pool) {
  const auto opts = x.options().dtype(accumulate_type(x));
  const int64_t B = x.size(0), C = x.size(1);
  SEForwardOutputs out{empty_output_like(x), at::empty({B, C}, opts),
                       at::empty({pool == kAvgMax ? B : 0, C}, opts)};
  if (x.numel() == 0) {
    out.pooled.fill_(std::numeric_limits<double>::quiet_NaN());
    out.xmax.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

// se_backward's outputs: dx in x's memory format, dz (B, C) and, for a
// two-layer gate, dh (B, R). Zero-filled, so an empty x needs no launch.
struct SEBackwardOutputs {
  at::Tensor dx, dz, dh;
};

inline SEBackwardOutputs se_backward_outputs(const at::Tensor& x, const SEWeights& w) {
  const auto opts = x.options().dtype(accumulate_type(x));
  const int64_t B = x.size(0), C = x.size(1);
  return {empty_output_like(x), at::zeros({B, C}, opts),
          at::zeros({w.two_layer() ? B : 0, w.reduced}, opts)};
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/se_schema.cpp; see dispatch.h).
// the forward and backward
#define AK_SE_OPS(X, suffix) X(se_forward, suffix) X(se_backward, suffix)
