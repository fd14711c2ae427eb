// SimAM: argument checks, outputs and the per-element math, shared by the CPU
// and CUDA implementations (semantics in csrc/schemas/simam_schema.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <limits>

#include "checks.h"
#include "gate_math.h"
#include "mean_m2.h"
#include "outputs.h"

namespace attnkernels {

// The gate of one element, s = sigmoid(d / denom + 0.5) with d = dev^2, written
// as upstream writes it (the forward and the backward both recompute it so).
template <typename T>
AK_HD T simam_gate(T dev, T denom) {
  return sigmoid(dev * dev / denom + T(0.5));
}

// denom = 4 (S / (H*W - 1) + e_lambda), as upstream orders it.
template <typename T>
AK_HD T simam_denom(T m2, int64_t HW, double e_lambda) {
  return T(4) * (m2 / static_cast<T>(HW - 1) + static_cast<T>(e_lambda));
}

inline void check_simam_backward_args(const at::Tensor& dy, const at::Tensor& x,
                                      const at::Tensor& mean, const at::Tensor& denom) {
  check_activation_4d(x, "x");
  check_grad_like_x(dy, x, "dy");
  check_stats(x, mean, "mean");
  check_stats(x, denom, "denom");
}

// simam_forward's outputs: y in x's memory format, mean and denom (N, C) (NaN
// for an empty H*W, as torch's mean; the caller then launches nothing).
struct SimAMForwardOutputs {
  at::Tensor y, mean, denom;
};

inline SimAMForwardOutputs simam_forward_outputs(const at::Tensor& x) {
  check_activation_4d(x, "x");
  const auto opts = x.options().dtype(accumulate_type(x));
  SimAMForwardOutputs out{empty_output_like(x), at::empty({x.size(0), x.size(1)}, opts),
                          at::empty({x.size(0), x.size(1)}, opts)};
  if (x.numel() == 0) {
    out.mean.fill_(std::numeric_limits<double>::quiet_NaN());
    out.denom.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

// The backward's per-(n, c) coefficients, from A = sum t (x - mean) and
// B = sum t d: dx = dy * s + (x - mean) (k1 t - k2) - k3.
template <typename T>
struct SimAMGradCoefs {
  T k1, k2, k3;
  AK_HD SimAMGradCoefs(T A, T B, T denom, int64_t HW) {
    const T a = T(1) / denom;
    k1 = T(2) * a;
    k2 = T(8) * a * a * B / static_cast<T>(HW - 1);
    k3 = T(2) * a * A / static_cast<T>(HW);
  }
};

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/simam_schema.cpp; see dispatch.h).
#define AK_SIMAM_OPS(X, suffix) X(simam_forward, suffix) X(simam_backward, suffix)
