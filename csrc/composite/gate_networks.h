// The pieces of the gate networks that run between the passes of the native
// (CPU, CUDA) composite forwards: the C++ twins of the Python helpers in
// attnkernels/_core/ops.py, gate_matmul.py and gate_conv.py, calling the same
// ATen and attnkernels ops in the same order, so their results are bitwise the
// Python ones. They run in C++ because at batch 1 the Python chain of a dozen
// small ops cost more than the passes over x (CBAM at 1x256x56x56: about
// 0.2 ms of Python around 0.18 ms of passes on a 2-thread AMD EPYC).
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>
#include <string>
#include <tuple>

#include "../common/modes.h"

namespace attnkernels::composite {

// The handle of attnkernels::<name>, typed Sig (looked up once per call site).
template <class Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string("attnkernels::") + name).c_str(), "")
      .template typed<Sig>();
}

// Dtype of the per-(n, c) statistics: fp32, or fp64 for fp64 input (stats_dtype).
inline at::ScalarType stats_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// x.new_empty((0,), dtype=stats_dtype(x)): an output the backward does not read.
inline at::Tensor empty_stats(const at::Tensor& x) {
  return at::empty({0}, x.options().dtype(stats_dtype(x)));
}

inline std::optional<at::Tensor> to(const std::optional<at::Tensor>& t, at::ScalarType dtype) {
  if (!t.has_value()) return std::nullopt;
  return t->to(dtype);
}

// Activation and gate codes as in csrc/common/modes.h.
inline at::Tensor activation(const at::Tensor& h, int64_t act) {
  switch (act) {
    case 0: return h;
    case 1: return at::relu(h);
    case 2: return at::silu(h);
    case 3: return at::hardswish(h);
  }
  TORCH_CHECK(false, "unknown activation code ", act);
}

inline at::Tensor gate(const at::Tensor& z, int64_t g) {
  switch (g) {
    case 0: return at::sigmoid(z);
    case 1: return at::hardsigmoid(z);
  }
  TORCH_CHECK(false, "unknown gate code ", g);
}

// a @ b on attnkernels::gate_matmul where it serves (CPU, float32/float64,
// bits independent of the thread count), else at::matmul (gate_matmul.matmul).
inline at::Tensor gate_product(const at::Tensor& a, const at::Tensor& b) {
  if (a.device().is_cpu() && (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble) &&
      a.scalar_type() == b.scalar_type() && (a.dim() == 2 || a.dim() == 3) &&
      (b.dim() == 2 || b.dim() == 3)) {
    static const auto gate_matmul =
        op<at::Tensor(const at::Tensor&, const at::Tensor&)>("gate_matmul");
    return gate_matmul.call(a, b);
  }
  return at::matmul(a, b);
}

// F.linear(inp, weight, bias) on 2-D inp (gate_matmul.linear).
inline at::Tensor gate_linear(const at::Tensor& inp, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  at::Tensor out = gate_product(inp, weight.t());
  return bias.has_value() ? out + *bias : out;
}

// F.conv2d(inp, weight, padding=k // 2), contiguous (gate_conv.same_conv2d):
// attnkernels::gate_conv2d on the CPU for float32/float64, on the plane's
// longer side as columns.
inline at::Tensor same_conv2d(const at::Tensor& inp, const at::Tensor& weight) {
  if (!(inp.device().is_cpu() &&
        (inp.scalar_type() == at::kFloat || inp.scalar_type() == at::kDouble))) {
    const int64_t pad = weight.size(-1) / 2;
    return at::conv2d(inp, weight, {}, 1, {pad, pad});
  }
  static const auto gate_conv2d =
      op<at::Tensor(const at::Tensor&, const at::Tensor&)>("gate_conv2d");
  if (inp.size(3) >= inp.size(2)) return gate_conv2d.call(inp.contiguous(), weight.contiguous());
  return gate_conv2d
      .call(inp.transpose(2, 3).contiguous(), weight.transpose(2, 3).contiguous())
      .transpose(2, 3)
      .contiguous();
}

// _common.normalise_saving: (out, save_mean, save_invstd, batch mean, unbiased
// batch variance); the last four empty unless mode is kBnBatch (zeros of the
// width for an empty z).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> normalise_saving(
    const at::Tensor& z, int64_t mode, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double eps) {
  const at::ScalarType acc = z.scalar_type();
  const int64_t width = z.size(1);
  if (mode != kBnBatch || z.numel() == 0) {
    at::Tensor out = z;
    if (mode == kBnBatch) {
      out = at::batch_norm(z, to(weight, acc), to(bias, acc), {}, {}, true, 0.0, eps,
                           at::globalContext().userEnabledCuDNN());
    } else if (mode == kBnRunning) {
      out = at::batch_norm(z, to(weight, acc), to(bias, acc), to(running_mean, acc),
                           to(running_var, acc), false, 0.0, eps,
                           at::globalContext().userEnabledCuDNN());
    }
    // zeros of the width for an empty batch's statistics, else nothing to fill
    const bool filled = mode == kBnBatch;
    auto stats = [&] {
      return filled ? at::zeros({width}, z.options()) : at::empty({0}, z.options());
    };
    return {out, stats(), stats(), stats(), stats()};
  }
  // fresh running buffers at momentum 1 come out as the batch's statistics
  at::Tensor mean = at::zeros({width}, z.options());
  at::Tensor var = at::ones({width}, z.options());
  auto [out, save_mean, save_invstd] =
      at::native_batch_norm(z, to(weight, acc), to(bias, acc), mean, var, true, 1.0, eps);
  return {out, save_mean, save_invstd, mean, var};
}

}  // namespace attnkernels::composite
