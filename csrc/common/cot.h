// CoT attention's softmax gate: argument checks, outputs and the per-element
// weight, shared by the CPU and CUDA implementations (semantics in
// csrc/schemas/cot_schema.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <limits>

#include "checks.h"
#include "gate_math.h"
#include "outputs.h"

namespace attnkernels {

// The softmax weight of one element: w = exp(a - max) * inv_sum.
template <typename T>
AK_HD T cot_weight(T a, T max, T inv_sum) {
  return std::exp(a - max) * inv_sum;
}

// t (v, k1 or dy) indexed like att: same shape, dtype, device and dense memory format.
inline void check_like_att(const at::Tensor& t, const at::Tensor& att, const char* name) {
  const bool same_format = is_channels_last(att) ? t.is_contiguous(at::MemoryFormat::ChannelsLast)
                                                 : t.is_contiguous();
  TORCH_CHECK(t.sizes() == att.sizes() && t.scalar_type() == att.scalar_type() && same_format,
              name, " must match att in shape, dtype and memory format (got ", t.sizes(), " ",
              t.strides(), " ", t.scalar_type(), " for att ", att.sizes(), " ", att.strides(), " ",
              att.scalar_type(), ")");
  check_same_device(att, t, name);
}

// cot_forward's outputs: y in att's memory format, max and inv_sum (N, C)
// (NaN for an empty H*W; the caller then launches nothing).
struct CoTForwardOutputs {
  at::Tensor y, max, inv_sum;
};

inline CoTForwardOutputs cot_forward_outputs(const at::Tensor& att, const at::Tensor& v,
                                             const at::Tensor& k1) {
  check_activation_4d(att, "att");
  check_like_att(v, att, "v");
  check_like_att(k1, att, "k1");
  const auto opts = att.options().dtype(accumulate_type(att));
  CoTForwardOutputs out{empty_output_like(att), at::empty({att.size(0), att.size(1)}, opts),
                        at::empty({att.size(0), att.size(1)}, opts)};
  if (att.numel() == 0) {
    out.max.fill_(std::numeric_limits<double>::quiet_NaN());
    out.inv_sum.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return out;
}

inline void check_cot_backward_args(const at::Tensor& dy, const at::Tensor& att,
                                    const at::Tensor& v, const at::Tensor& max,
                                    const at::Tensor& inv_sum) {
  check_activation_4d(att, "att");
  check_like_att(v, att, "v");
  check_like_att(dy, att, "dy");
  check_stats(att, max, "max");
  check_stats(att, inv_sum, "inv_sum");
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/cot_schema.cpp; see dispatch.h).
#define AK_COT_OPS(X, suffix) X(cot_forward, suffix) X(cot_backward, suffix)
