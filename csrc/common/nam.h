// NAM's channel attention: argument checks, outputs and the per-channel math,
// shared by the CPU and CUDA implementations (semantics in
// csrc/schemas/nam_schema.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <limits>

#include "checks.h"
#include "gate_math.h"
#include "mean_m2.h"
#include "outputs.h"

namespace attnkernels {

// One channel's normalisation and gate: z = (x - mean) * a + b, the
// BatchNorm (mean, invstd, gamma, beta) and the channel weight w folded as
// a = invstd * gamma * w, b = beta * w; y = x * sigmoid(z).
template <typename T>
struct NAMChannel {
  T mean, a, b;
  AK_HD T gate(T v) const { return sigmoid((v - mean) * a + b); }
};

// w = |gamma| / sum |gamma|, the sum taken over the channels in order.
template <typename T>
AK_HD T nam_abs_sum(const T* gamma, int64_t C) {
  T s = 0;
  for (int64_t c = 0; c < C; ++c) s += gamma[c] < T(0) ? -gamma[c] : gamma[c];
  return s;
}

template <typename T>
AK_HD NAMChannel<T> nam_channel(T mean, T invstd, T gamma, T beta, T abs_sum) {
  const T w = (gamma < T(0) ? -gamma : gamma) / abs_sum;
  return {mean, invstd * gamma * w, beta * w};
}

// The batch statistics of channel c from the per-(n, c) means m and sums of
// squared deviations m2 (N, C), every plane HW values: the mean of the plane
// means and M2 = sum m2 + HW sum (m - mean)^2 (exact for equal counts), the
// samples in order. var: the biased variance; unbiased: M2 / (M - 1).
template <typename T>
struct NAMBatchStats {
  T mean, invstd, unbiased;
  AK_HD NAMBatchStats(const T* m, const T* m2, int64_t N, int64_t C, int64_t c, int64_t HW,
                      double eps) {
    T sum = 0;
    for (int64_t n = 0; n < N; ++n) sum += m[n * C + c];
    mean = sum / static_cast<T>(N);
    T within = 0, between = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T d = m[n * C + c] - mean;
      within += m2[n * C + c];
      between += d * d;
    }
    const T M2 = within + static_cast<T>(HW) * between, count = static_cast<T>(N * HW);
    invstd = T(1) / std::sqrt(M2 / count + static_cast<T>(eps));
    unbiased = M2 / (count - T(1));
  }
};

// The backward of channel c from the per-(n, c) sums s1 = sum g and
// s2 = sum g (x - mean) (N, C), g = dy * x * s (1 - s):
//   dgamma = w * invstd * S2, dbeta = w * S1 (S: the sums over the samples, in order);
//   dx = dy * s + a * g - k2 (x - mean) - k3, with, for batch statistics,
//   k2 = a * invstd^2 * S2 / M and k3 = a * S1 / M (M = N * HW), else 0.
template <typename T>
struct NAMGradCoefs {
  T dgamma, dbeta, k2, k3;
  AK_HD NAMGradCoefs(const T* s1, const T* s2, int64_t N, int64_t C, int64_t c, int64_t HW,
                     const NAMChannel<T>& ch, T invstd, T gamma, T abs_sum, bool batch) {
    T S1 = 0, S2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      S1 += s1[n * C + c];
      S2 += s2[n * C + c];
    }
    const T w = (gamma < T(0) ? -gamma : gamma) / abs_sum;
    dgamma = w * invstd * S2;
    dbeta = w * S1;
    const T count = static_cast<T>(N * HW);
    k2 = batch ? ch.a * invstd * invstd * S2 / count : T(0);
    k3 = batch ? ch.a * S1 / count : T(0);
  }
};

inline void check_nam_params(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias) {
  check_activation_4d(x, "x");
  check_bias(x, weight, "weight", x.size(1));
  check_bias(x, bias, "bias", x.size(1));
}

inline void check_nam_backward_args(const at::Tensor& dy, const at::Tensor& x,
                                    const at::Tensor& weight, const at::Tensor& bias,
                                    const at::Tensor& mean, const at::Tensor& invstd) {
  check_nam_params(x, weight, bias);
  check_grad_like_x(dy, x, "dy");
  for (const auto* t : {&mean, &invstd}) {
    TORCH_CHECK(t->scalar_type() == accumulate_type(x) && t->dim() == 1 &&
                    t->size(0) == x.size(1) && t->is_contiguous(),
                "mean and invstd must be contiguous (", x.size(1), ",) ", accumulate_type(x),
                " tensors");
    check_same_device(x, *t, "mean");
  }
}

// The per-channel parameters in the accumulate dtype, contiguous (C,).
inline at::Tensor nam_acc(const at::Tensor& x, const at::Tensor& t) {
  return t.to(accumulate_type(x)).contiguous();
}

// nam_forward's outputs: y in x's memory format; mean, invstd (C,) and var:
// (C,) with batch statistics, (0,) with running ones. An empty batch gives
// NaN statistics (the caller then launches nothing).
struct NAMForwardOutputs {
  at::Tensor y, mean, invstd, var;
};

inline NAMForwardOutputs nam_forward_outputs(const at::Tensor& x, bool batch) {
  const auto opts = x.options().dtype(accumulate_type(x));
  const int64_t C = x.size(1);
  NAMForwardOutputs out{empty_output_like(x), at::empty({C}, opts), at::empty({C}, opts),
                        at::empty({batch ? C : 0}, opts)};
  if (batch && x.numel() == 0) {
    for (auto* t : {&out.mean, &out.invstd, &out.var})
      t->fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

inline void check_running(const at::Tensor& x, const c10::optional<at::Tensor>& running_mean,
                          const c10::optional<at::Tensor>& running_var) {
  TORCH_CHECK(running_mean.has_value() == running_var.has_value(),
              "give both running_mean and running_var, or neither");
  check_bias(x, running_mean, "running_mean", x.size(1));
  check_bias(x, running_var, "running_var", x.size(1));
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/nam_schema.cpp; see dispatch.h).
#define AK_NAM_OPS(X, suffix) X(nam_forward, suffix) X(nam_backward, suffix)
