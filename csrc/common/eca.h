// Efficient Channel Attention: argument checks, weights and outputs, shared by
// the CPU and CUDA implementations.
//
// z[b, c] = bias + sum_j w[j] * s[b, c + j - pad] (pad = (k - 1) / 2; outside
// [0, C) the term is zero, or wraps around with circular padding), y = x * gate(z).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <limits>

#include "checks.h"
#include "outputs.h"
#include "gate_math.h"

namespace attnkernels {

// The 1-D conv over channels, in the accumulate dtype.
struct ECAWeights {
  at::Tensor w, b;  // w: (k,), b: (1,) or undefined
  int64_t k, pad;
};

inline ECAWeights eca_prepare(const at::Tensor& x, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, int64_t gate) {
  check_activation_4d(x, "x");
  TORCH_CHECK(gate == kSigmoid || gate == kHardSigmoid, "gate must be 0 or 1, got ", gate);
  check_same_device(x, weight, "weight");
  TORCH_CHECK(weight.is_floating_point(), "weight must be a floating-point tensor, got ",
              weight.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) % 2 == 1,
              "weight must be a 1-D tensor of odd size k (the conv1d kernel), got shape ",
              weight.sizes());
  check_bias(x, bias, "bias", 1);
  const auto acc = accumulate_type(x);
  ECAWeights w;
  w.w = weight.to(acc).contiguous();
  if (bias.has_value()) w.b = bias->to(acc).contiguous();
  w.k = weight.size(0);
  w.pad = (w.k - 1) / 2;
  return w;
}

// Channel index c + j - pad with zero (-1: no term) or circular padding.
AK_HD int64_t eca_source(int64_t c, int64_t j, int64_t pad, int64_t C, bool circular) {
  int64_t i = c + j - pad;
  if (i >= 0 && i < C) return i;
  if (!circular) return -1;
  i %= C;
  return i < 0 ? i + C : i;
}

// z[c] for one sample's pooled channels s (any indexable type).
template <typename acc_t, typename S>
AK_HD acc_t eca_conv(const S& s, const acc_t* w, const acc_t* b, int64_t k, int64_t c, int64_t C,
                     bool circular) {
  const int64_t pad = (k - 1) / 2;
  acc_t z = b ? b[0] : acc_t(0);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = eca_source(c, j, pad, C, circular);
    if (i >= 0) z += w[j] * s[i];
  }
  return z;
}

// d loss / d s[i] = sum_j w[j] * dz[c] over the c that read s[i] through tap j.
template <typename acc_t, typename D>
AK_HD acc_t eca_conv_transpose(const D& dz, const acc_t* w, int64_t k, int64_t i, int64_t C,
                               bool circular) {
  const int64_t pad = (k - 1) / 2;
  acc_t ds = 0;
  for (int64_t j = 0; j < k; ++j) {
    // c + j - pad == i  <=>  c == i - j + pad (the same padding rule, mirrored)
    const int64_t c = eca_source(i, pad - j + pad, pad, C, circular);
    if (c >= 0) ds += w[j] * dz[c];
  }
  return ds;
}

inline void check_eca_backward_args(const at::Tensor& dy, const at::Tensor& x,
                                    const at::Tensor& pooled) {
  check_grad_like_x(dy, x, "dy");
  check_stats(x, pooled, "pooled");
}

// eca_forward's outputs: y in x's memory format and the pooled means (NaN for
// an empty H*W, as in torch; the caller then launches nothing).
struct ECAForwardOutputs {
  at::Tensor y, pooled;
};

inline ECAForwardOutputs eca_forward_outputs(const at::Tensor& x) {
  const auto opts = x.options().dtype(accumulate_type(x));
  ECAForwardOutputs out{empty_output_like(x), at::empty({x.size(0), x.size(1)}, opts)};
  if (x.numel() == 0) out.pooled.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

// eca_backward's outputs: dx in x's memory format and dz (B, C), zero-filled.
struct ECABackwardOutputs {
  at::Tensor dx, dz;
};

inline ECABackwardOutputs eca_backward_outputs(const at::Tensor& x) {
  const auto opts = x.options().dtype(accumulate_type(x));
  return {empty_output_like(x), at::zeros({x.size(0), x.size(1)}, opts)};
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/eca_schema.cpp; see dispatch.h).
// the forward and backward
#define AK_ECA_OPS(X, suffix) X(eca_forward, suffix) X(eca_backward, suffix)
