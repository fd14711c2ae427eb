// Selective Kernel attention: argument checks, outputs and the softmax over
// branches, shared by the CPU and CUDA implementations (semantics in
// csrc/schemas/sk_schema.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <string>
#include <vector>

#include "checks.h"
#include "gate_math.h"
#include "outputs.h"

namespace attnkernels {

// The most branches one call takes (the CUDA kernels pass their pointers by
// value); upstream modules use 2 (timm) to 4 (SKAttention's default).
constexpr int64_t kSKMaxBranches = 8;

inline void check_sk_branches(at::TensorList branches) {
  TORCH_CHECK(!branches.empty() && static_cast<int64_t>(branches.size()) <= kSKMaxBranches,
              "branches must hold 1 to ", kSKMaxBranches, " tensors, got ", branches.size());
  check_activation_4d(branches[0], "branches[0]");
  for (size_t k = 1; k < branches.size(); ++k) {
    const std::string name = "branches[" + std::to_string(k) + "]";
    const at::Tensor& t = branches[k];
    const at::Tensor& x = branches[0];
    const bool same_format = is_channels_last(x) ? t.is_contiguous(at::MemoryFormat::ChannelsLast)
                                                 : t.is_contiguous();
    TORCH_CHECK(t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type() && same_format, name,
                " must match branches[0] in shape, dtype and memory format (got ", t.sizes(), " ",
                t.strides(), " ", t.scalar_type(), " for ", x.sizes(), " ", x.strides(), " ",
                x.scalar_type(), ")");
    check_same_device(x, t, name.c_str());
  }
}

// logits (B, K, C), floating point, on the branches' device; returned
// contiguous in the accumulate dtype (a (B, K, C) copy at most).
inline at::Tensor sk_logits_acc(at::TensorList branches, const at::Tensor& logits) {
  const at::Tensor& x = branches[0];
  const int64_t K = static_cast<int64_t>(branches.size());
  check_same_device(x, logits, "logits");
  TORCH_CHECK(logits.is_floating_point(), "logits must be a floating-point tensor, got ",
              logits.scalar_type());
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == x.size(0) && logits.size(1) == K &&
                  logits.size(2) == x.size(1),
              "logits must have shape (", x.size(0), ", ", K, ", ", x.size(1), ") (batch, branch, "
              "channel), got ", logits.sizes());
  return logits.to(accumulate_type(x)).contiguous();
}

// The branches' data pointers, by value (a CUDA kernel argument).
template <typename scalar_t>
struct BranchPtrs {
  const scalar_t* p[kSKMaxBranches];
};

template <typename scalar_t>
struct BranchOutPtrs {
  scalar_t* p[kSKMaxBranches];
};

template <typename scalar_t>
BranchPtrs<scalar_t> branch_ptrs(at::TensorList branches) {
  BranchPtrs<scalar_t> out{};
  for (size_t k = 0; k < branches.size(); ++k) out.p[k] = branches[k].data_ptr<scalar_t>();
  return out;
}

template <typename scalar_t>
BranchOutPtrs<scalar_t> branch_out_ptrs(const std::vector<at::Tensor>& outs) {
  BranchOutPtrs<scalar_t> out{};
  for (size_t k = 0; k < outs.size(); ++k) out.p[k] = outs[k].data_ptr<scalar_t>();
  return out;
}

inline std::vector<at::Tensor> sk_branch_grads(at::TensorList branches) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& b : branches) out.push_back(empty_output_like(b));
  return out;
}

}  // namespace attnkernels

// The ops every backend implements (schemas in csrc/schemas/sk_schema.cpp; see dispatch.h).
#define AK_SK_OPS(X, suffix) X(sk_pool, suffix) X(sk_forward, suffix) X(sk_backward, suffix)
