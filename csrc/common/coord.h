// Coordinate Attention: argument checks and outputs of the passes over x,
// shared by the CPU and CUDA implementations (schemas and semantics in
// csrc/schemas/coord_schema.cpp). Strip tensors are contiguous (N, C, H) or (N, C, W) in the
// accumulate dtype.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>

#include <limits>
#include <tuple>

#include "checks.h"
#include "outputs.h"

namespace attnkernels {

// A strip of x: (N, C, len), contiguous, in the accumulate dtype.
inline void check_strip(const at::Tensor& x, const at::Tensor& t, const char* name, int64_t len) {
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(t.scalar_type() == acc && t.sizes() == at::IntArrayRef({B, C, len}) && t.is_contiguous(),
              name, " must be a contiguous (", B, ", ", C, ", ", len, ") ", acc, " tensor");
  check_same_device(x, t, name);
}

inline void check_coord_gates(const at::Tensor& x, const at::Tensor& ah, const at::Tensor& aw) {
  check_activation_4d(x, "x");
  check_strip(x, ah, "ah", x.size(2));
  check_strip(x, aw, "aw", x.size(3));
}

inline at::Tensor strip_like(const at::Tensor& x, int64_t len) {
  return at::empty({x.size(0), x.size(1), len}, x.options().dtype(accumulate_type(x)));
}

// coord_pool's outputs (mh, mw); NaN for an empty x, as torch's mean of
// nothing (the caller then launches nothing).
inline std::tuple<at::Tensor, at::Tensor> coord_pool_outputs(const at::Tensor& x) {
  at::Tensor mh = strip_like(x, x.size(2)), mw = strip_like(x, x.size(3));
  if (x.numel() == 0) {
    mh.fill_(std::numeric_limits<double>::quiet_NaN());
    mw.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  return {mh, mw};
}

inline void check_coord_backward_apply_args(const at::Tensor& dy, const at::Tensor& ah,
                                            const at::Tensor& aw, const at::Tensor& gh,
                                            const at::Tensor& gw) {
  check_coord_gates(dy, ah, aw);
  check_strip(dy, gh, "gh", dy.size(2));
  check_strip(dy, gw, "gw", dy.size(3));
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/coord_schema.cpp; see dispatch.h).
// the passes over x
#define AK_COORD_OPS(X, suffix) \
  X(coord_pool, suffix) \
  X(coord_apply, suffix) \
  X(coord_backward_reduce, suffix) \
  X(coord_backward_apply, suffix)
