// EMA: argument checks and small-parameter handling shared by its backends
// (semantics in csrc/schemas/ema_schema.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <vector>

#include "checks.h"

namespace attnkernels {

// x (B, C, H, W) and its 3x3 branch x2 (B * groups, C / groups, H, W), alike
// in dtype and device, each dense (NCHW or channels_last, independently).
inline void check_ema_inputs(const at::Tensor& x, const at::Tensor& x2, int64_t groups) {
  check_activation_4d(x, "x");
  check_activation_4d(x2, "x2");
  check_same_device(x, x2, "x2");
  TORCH_CHECK(groups > 0 && x.size(1) % groups == 0, "groups (", groups,
              ") must be positive and divide the channels (", x.size(1), ")");
  const int64_t g = x.size(1) / groups;
  TORCH_CHECK(x2.scalar_type() == x.scalar_type() &&
                  x2.sizes() == at::IntArrayRef({x.size(0) * groups, g, x.size(2), x.size(3)}),
              "x2 must be a (", x.size(0) * groups, ", ", g, ", ", x.size(2), ", ", x.size(3),
              ") ", x.scalar_type(), " tensor (conv3x3 of x's groups), got ", x2.sizes(), " ",
              x2.scalar_type());
}

// A (g,) parameter in the accumulate dtype, contiguous; `fill` where absent.
inline at::Tensor ema_vector(const at::Tensor& x, const c10::optional<at::Tensor>& t,
                             const char* name, int64_t g, double fill) {
  check_bias(x, t, name, g);
  const auto opts = x.options().dtype(accumulate_type(x));
  if (!t.has_value()) return fill == 0 ? at::zeros({g}, opts) : at::ones({g}, opts);
  return t->to(accumulate_type(x)).contiguous();
}

// The 1x1 conv's weight (g, g, 1, 1) or (g, g) as a contiguous (g, g) matrix
// in the accumulate dtype.
inline at::Tensor ema_matrix(const at::Tensor& x, const at::Tensor& w1, int64_t g) {
  check_same_device(x, w1, "w1");
  TORCH_CHECK(w1.is_floating_point() && w1.numel() == g * g &&
                  (w1.dim() == 2 || (w1.dim() == 4 && w1.size(2) == 1 && w1.size(3) == 1)) &&
                  w1.size(0) == g && w1.size(1) == g,
              "w1 must be a (", g, ", ", g, ", 1, 1) floating-point conv weight, got ", w1.sizes(),
              " ", w1.scalar_type());
  return w1.reshape({g, g}).to(accumulate_type(x)).contiguous();
}

// The small parameters in the accumulate dtype, contiguous: w1 as (g, g), b1
// (undefined when absent), gn_w (ones when absent), gn_b (zeros).
struct EmaSmallParams {
  at::Tensor w1, b1, gn_w, gn_b;
};

inline EmaSmallParams ema_small_params(const at::Tensor& x, const at::Tensor& w1,
                                       const c10::optional<at::Tensor>& b1,
                                       const c10::optional<at::Tensor>& gn_w,
                                       const c10::optional<at::Tensor>& gn_b, int64_t g) {
  return {ema_matrix(x, w1, g), b1.has_value() ? ema_vector(x, b1, "b1", g, 0) : at::Tensor(),
          ema_vector(x, gn_w, "gn_w", g, 1), ema_vector(x, gn_b, "gn_b", g, 0)};
}

// The shapes of what ema_forward saves besides y: strips and gates (N, g, H + W),
// stats (N, 4, g), s (N, H, W), N = B * groups; all in the accumulate dtype.
inline std::vector<std::vector<int64_t>> ema_saved_shapes(const at::Tensor& x, int64_t groups) {
  const int64_t N = x.size(0) * groups, g = x.size(1) / groups, H = x.size(2), W = x.size(3);
  return {{N, g, H + W}, {N, g, H + W}, {N, 4, g}, {N, H, W}};
}

// ema_forward's saved outputs (strips, gates, stats, s), allocated.
inline std::vector<at::Tensor> ema_empty_saved(const at::Tensor& x, int64_t groups) {
  std::vector<at::Tensor> out;
  for (const auto& shape : ema_saved_shapes(x, groups))
    out.push_back(at::empty(shape, x.options().dtype(accumulate_type(x))));
  return out;
}

// What ema_backward reads: x, x2 and groups as ema_forward's, dy like x, the
// saved tensors contiguous in the accumulate dtype and of their shapes.
inline void check_ema_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& x2,
                               int64_t groups, at::TensorList saved) {
  check_ema_inputs(x, x2, groups);
  check_grad_like_x(dy, x, "dy");
  const char* names[] = {"strips", "gates", "stats", "s"};
  const auto shapes = ema_saved_shapes(x, groups);
  for (size_t i = 0; i < 4; ++i) {
    const at::Tensor& t = saved[i];
    check_same_device(x, t, names[i]);
    TORCH_CHECK(t.scalar_type() == accumulate_type(x) && t.sizes() == shapes[i] &&
                    t.is_contiguous(),
                names[i], " must be a contiguous ", at::IntArrayRef(shapes[i]), " ",
                accumulate_type(x), " tensor, got ", t.sizes(), " ", t.scalar_type());
  }
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/ema_schema.cpp; see dispatch.h).
#define AK_EMA_OPS(X, suffix) X(ema_forward, suffix) X(ema_backward, suffix)
