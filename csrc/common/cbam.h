// CBAM: argument checks and outputs of the passes over x, shared by the CPU
// and CUDA implementations (schemas and semantics in csrc/schemas/cbam_schema.cpp).
//
// Per-(n, c) tensors (ca, channel statistics, their gradients) are contiguous
// (N, C); per-(n, h, w) tensors (sa, spatial statistics, their gradients) are
// contiguous (N, H, W); both in the accumulate dtype. The tie tensors are int32.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <limits>

#include "checks.h"
#include "outputs.h"

namespace attnkernels {

// A per-(n, h, w) statistic: contiguous (N, H, W) in the accumulate dtype.
inline void check_pixel_stats(const at::Tensor& x, const at::Tensor& t, const char* name) {
  const auto acc = accumulate_type(x);
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  TORCH_CHECK(t.scalar_type() == acc && t.sizes() == at::IntArrayRef({B, H, W}) && t.is_contiguous(),
              name, " must be a contiguous (", B, ", ", H, ", ", W, ") ", acc, " tensor");
  check_same_device(x, t, name);
}

// Where the maxima are: int32, (N, C) for the channel max, (N, H, W) for the spatial max.
inline void check_ties(const at::Tensor& x, const at::Tensor& t, const char* name, bool pixel) {
  const int64_t B = x.size(0);
  const auto want = pixel ? std::vector<int64_t>{B, x.size(2), x.size(3)}
                          : std::vector<int64_t>{B, x.size(1)};
  TORCH_CHECK(t.scalar_type() == at::kInt && t.sizes() == at::IntArrayRef(want) && t.is_contiguous(),
              name, " must be a contiguous int32 tensor of shape ", at::IntArrayRef(want));
  check_same_device(x, t, name);
}

inline at::Tensor channel_stats_like(const at::Tensor& x) {
  return at::empty({x.size(0), x.size(1)}, x.options().dtype(accumulate_type(x)));
}

inline at::Tensor pixel_stats_like(const at::Tensor& x) {
  return at::empty({x.size(0), x.size(2), x.size(3)}, x.options().dtype(accumulate_type(x)));
}

// Statistics of an empty reduction are NaN, as torch's mean of nothing; the
// caller then launches nothing.
inline void fill_empty_stats(const at::Tensor& x, at::Tensor& mean, at::Tensor& max) {
  if (x.numel() != 0) return;
  mean.fill_(std::numeric_limits<double>::quiet_NaN());
  max.fill_(std::numeric_limits<double>::quiet_NaN());
}

inline void check_cbam_gates(const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa) {
  check_activation_4d(x, "x");
  check_stats(x, ca, "ca");
  check_pixel_stats(x, sa, "sa");
}

// Every input of cbam_backward_apply / cbam_backward_reduce beyond (dy, x, ca, sa).
inline void check_cbam_grad_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca,
                                   const at::Tensor& sa) {
  check_cbam_gates(x, ca, sa);
  check_grad_like_x(dy, x, "dy");
}

inline void check_cbam_backward_reduce_args(const at::Tensor& dy, const at::Tensor& x,
                                            const at::Tensor& ca, const at::Tensor& sa,
                                            const at::Tensor& cmax, const at::Tensor& smax) {
  check_cbam_grad_inputs(dy, x, ca, sa);
  check_stats(x, cmax, "cmax");
  check_pixel_stats(x, smax, "smax");
}

inline void check_cbam_spatial_pool_backward_args(const at::Tensor& x, const at::Tensor& ca,
                                                  const at::Tensor& smax, const at::Tensor& stie,
                                                  const at::Tensor& sgmean,
                                                  const at::Tensor& sgmax) {
  check_activation_4d(x, "x");
  check_stats(x, ca, "ca");
  check_pixel_stats(x, smax, "smax");
  check_ties(x, stie, "stie", true);
  check_pixel_stats(x, sgmean, "sgmean");
  check_pixel_stats(x, sgmax, "sgmax");
}

inline void check_cbam_backward_apply_args(const at::Tensor& dy, const at::Tensor& x,
                                           const at::Tensor& ca, const at::Tensor& sa,
                                           const at::Tensor& cmax, const at::Tensor& ctie,
                                           const at::Tensor& cgmean, const at::Tensor& cgmax,
                                           const at::Tensor& smax, const at::Tensor& stie,
                                           const at::Tensor& sgmean, const at::Tensor& sgmax) {
  check_cbam_backward_reduce_args(dy, x, ca, sa, cmax, smax);
  check_ties(x, ctie, "ctie", false);
  check_stats(x, cgmean, "cgmean");
  check_stats(x, cgmax, "cgmax");
  check_ties(x, stie, "stie", true);
  check_pixel_stats(x, sgmean, "sgmean");
  check_pixel_stats(x, sgmax, "sgmax");
}

// cbam_backward_reduce's outputs, zero-filled: dca, dsa and the int32 ties.
struct CBAMReduceOutputs {
  at::Tensor dca, dsa, ctie, stie;
};

inline CBAMReduceOutputs cbam_backward_reduce_outputs(const at::Tensor& ca, const at::Tensor& sa) {
  return {at::zeros_like(ca), at::zeros_like(sa), at::zeros(ca.sizes(), ca.options().dtype(at::kInt)),
          at::zeros(sa.sizes(), sa.options().dtype(at::kInt))};
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/cbam_schema.cpp; see dispatch.h).
// the forward passes
#define AK_CBAM_FORWARD_OPS(X, suffix) \
  X(cbam_channel_pool, suffix) \
  X(cbam_spatial_pool, suffix) \
  X(cbam_apply, suffix)
// the backward passes
#define AK_CBAM_BACKWARD_OPS(X, suffix) \
  X(cbam_backward_reduce, suffix) \
  X(cbam_spatial_pool_backward, suffix) \
  X(cbam_backward_apply, suffix)
