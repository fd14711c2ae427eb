// Argument checks shared by every backend of every family (host code only).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

namespace attnkernels {

// True when x is channels_last-dense and not NCHW-dense: the layout the
// kernels index with. Tensors that are both (C == 1 or H*W == 1) are
// treated as NCHW; either reading is correct for them.
inline bool is_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline void check_activation_4d(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, name, " must be a 4-D (N, C, H, W) tensor, got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf ||
                  x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kDouble,
              name, " must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be contiguous in NCHW or channels_last memory format (got strides ",
              x.strides(), "); call .contiguous() first");
}

inline void check_same_device(const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == x.device(), name, " is on ", t.device(), " but x is on ", x.device());
}

inline void check_weight(const at::Tensor& x, const at::Tensor& w, const char* name,
                         int64_t rows, int64_t cols) {
  check_same_device(x, w, name);
  TORCH_CHECK(w.is_floating_point(), name, " must be a floating-point tensor, got ", w.scalar_type());
  TORCH_CHECK(w.dim() == 2 && w.size(0) == rows && w.size(1) == cols, name, " must have shape (",
              rows, ", ", cols, "), got ", w.sizes());
}

inline void check_bias(const at::Tensor& x, const c10::optional<at::Tensor>& b, const char* name,
                       int64_t n) {
  if (!b.has_value()) return;
  check_same_device(x, *b, name);
  TORCH_CHECK(b->is_floating_point(), name, " must be a floating-point tensor, got ", b->scalar_type());
  TORCH_CHECK(b->dim() == 1 && b->size(0) == n, name, " must have shape (", n, "), got ", b->sizes());
}

// Dtype of the fp32 (fp64 for double input) per-(n, c) statistics.
inline at::ScalarType accumulate_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A gradient the kernels index like x: same shape, dtype and dense memory
// format (strides of size-1 dimensions do not matter).
inline void check_grad_like_x(const at::Tensor& dy, const at::Tensor& x, const char* name) {
  const bool same_format = is_channels_last(x) ? dy.is_contiguous(at::MemoryFormat::ChannelsLast)
                                               : dy.is_contiguous();
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type() && same_format, name,
              " must match x in shape, dtype and memory format (got ", dy.sizes(), " ",
              dy.strides(), " ", dy.scalar_type(), " for x ", x.sizes(), " ", x.strides(), ")");
  check_same_device(x, dy, name);
}

// A per-(n, c) statistic kept for backward: contiguous (N, C) in the accumulate dtype.
inline void check_stats(const at::Tensor& x, const at::Tensor& t, const char* name) {
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(t.scalar_type() == acc && t.sizes() == at::IntArrayRef({B, C}) && t.is_contiguous(),
              name, " must be a contiguous (", B, ", ", C, ") ", acc, " tensor");
  check_same_device(x, t, name);
}

// Data pointer of an optional (possibly undefined) tensor, or nullptr.
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace attnkernels
