// Triplet Attention: argument checks and outputs of the passes over x, shared
// by the CPU and CUDA implementations (schemas and semantics in csrc/schemas/triplet_schema.cpp).
//
// A reduction of x over one axis gives a map, contiguous, in the accumulate
// dtype (the tie maps int32): over C (N, H, W), over H (N, C, W), over W
// (N, C, H). The gates s_hw, s_cw, s_hc have the shapes of those maps.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include <array>
#include <tuple>
#include <limits>

#include "checks.h"
#include "outputs.h"
#include "gate_math.h"

namespace attnkernels {

enum TripletAxis { kOverC = 0, kOverH = 1, kOverW = 2 };

// Upstream's output for one element, the mean of the branches' products:
// (v s_hw + v s_cw + v s_hc) / 3, or (v s_cw + v s_hc) / 2 without the spatial
// branch. Product by product, as upstream, so an infinite v times a gate that
// is exactly 0 gives NaN where upstream's does.
template <typename T>
AK_HD T branch_mean(T v, T s_hw, T s_cw, T s_hc, bool spatial) {
  return spatial ? ((v * s_hw + v * s_cw) + v * s_hc) * T(1.0 / 3.0)
                 : (v * s_cw + v * s_hc) * T(0.5);
}

inline std::array<int64_t, 3> triplet_map_shape(const at::Tensor& x, TripletAxis axis) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (axis == kOverC) return {B, H, W};
  if (axis == kOverH) return {B, C, W};
  return {B, C, H};
}

inline at::Tensor triplet_map(const at::Tensor& x, TripletAxis axis, at::ScalarType dtype) {
  return at::empty(triplet_map_shape(x, axis), x.options().dtype(dtype));
}

inline void check_triplet_map(const at::Tensor& x, const at::Tensor& t, TripletAxis axis,
                              const char* name, bool ties = false) {
  const auto dtype = ties ? at::kInt : accumulate_type(x);
  const auto shape = triplet_map_shape(x, axis);
  TORCH_CHECK(t.scalar_type() == dtype && t.sizes() == at::IntArrayRef(shape) && t.is_contiguous(),
              name, " must be a contiguous ", dtype, " tensor of shape ", at::IntArrayRef(shape));
  check_same_device(x, t, name);
}

inline void check_triplet_gates(const at::Tensor& x, const at::Tensor& s_hw,
                                const at::Tensor& s_cw, const at::Tensor& s_hc) {
  check_activation_4d(x, "x");
  check_triplet_map(x, s_hw, kOverC, "s_hw");
  check_triplet_map(x, s_cw, kOverH, "s_cw");
  check_triplet_map(x, s_hc, kOverW, "s_hc");
}

inline void check_triplet_backward_reduce_args(const at::Tensor& dy, const at::Tensor& x,
                                               const at::Tensor& cmax, const at::Tensor& hmax,
                                               const at::Tensor& wmax) {
  check_activation_4d(x, "x");
  check_grad_like_x(dy, x, "dy");
  check_triplet_map(x, cmax, kOverC, "cmax");
  check_triplet_map(x, hmax, kOverH, "hmax");
  check_triplet_map(x, wmax, kOverW, "wmax");
}

// Everything triplet_backward_apply reads beyond dy and the gates: per axis the
// tie map and what each element receives from the mean and from the max.
struct TripletPoolGrads {
  const at::Tensor &tie, &gmean, &gmax;
};

inline void check_triplet_backward_apply_args(const at::Tensor& dy, const at::Tensor& s_hw,
                                              const at::Tensor& s_cw, const at::Tensor& s_hc,
                                              const TripletPoolGrads (&grads)[3]) {
  check_triplet_gates(dy, s_hw, s_cw, s_hc);
  const char* names[3][3] = {{"ctie", "cgmean", "cgmax"},
                             {"htie", "hgmean", "hgmax"},
                             {"wtie", "wgmean", "wgmax"}};
  for (int a = 0; a < 3; ++a) {
    const auto axis = static_cast<TripletAxis>(a);
    check_triplet_map(dy, grads[a].tie, axis, names[a][0], true);
    check_triplet_map(dy, grads[a].gmean, axis, names[a][1]);
    check_triplet_map(dy, grads[a].gmax, axis, names[a][2]);
  }
}

// The six maps an op returns, as the schema's tuple.
using TripletSix =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline TripletSix as_tuple(const std::array<at::Tensor, 6>& t) {
  return {t[0], t[1], t[2], t[3], t[4], t[5]};
}

// The statistics of triplet_pool: mean and max per axis, (cmean, cmax, hmean,
// hmax, wmean, wmax).
inline std::array<at::Tensor, 6> triplet_pool_outputs(const at::Tensor& x) {
  const auto acc = accumulate_type(x);
  std::array<at::Tensor, 6> out = {
      triplet_map(x, kOverC, acc), triplet_map(x, kOverC, acc), triplet_map(x, kOverH, acc),
      triplet_map(x, kOverH, acc), triplet_map(x, kOverW, acc), triplet_map(x, kOverW, acc)};
  // statistics of an empty reduction are NaN, as torch's mean of nothing; the
  // caller then launches nothing
  if (x.numel() == 0)
    for (auto& t : out) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

// triplet_backward_reduce's outputs: the sums of dy * x per axis (dc, dh, dw)
// and the ties (ctie, htie, wtie, -1 where no element is maximal).
inline std::array<at::Tensor, 6> triplet_backward_reduce_outputs(const at::Tensor& x) {
  const auto acc = accumulate_type(x);
  std::array<at::Tensor, 6> out;
  for (int a = 0; a < 3; ++a) {
    const auto axis = static_cast<TripletAxis>(a);
    out[a] = at::zeros(triplet_map_shape(x, axis), x.options().dtype(acc));
    out[3 + a] = at::full(triplet_map_shape(x, axis), -1, x.options().dtype(at::kInt));
  }
  return out;
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/triplet_schema.cpp; see dispatch.h).
// the reductions
#define AK_TRIPLET_REDUCE_OPS(X, suffix) X(triplet_pool, suffix) X(triplet_backward_reduce, suffix)
// the apply passes
#define AK_TRIPLET_APPLY_OPS(X, suffix) X(triplet_apply, suffix) X(triplet_backward_apply, suffix)
