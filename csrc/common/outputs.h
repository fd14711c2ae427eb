// Allocation of the x-sized outputs (y, dx) of every op, on every backend.
#pragma once
#include <ATen/core/Tensor.h>

namespace attnkernels {

// at::empty_like(t). On the CPU, a large result is also advised onto
// transparent huge pages (csrc/cpu/outputs.cpp): most of a fresh output's
// cost there is faulting in its 4 KB pages, not writing it.
at::Tensor empty_output_like(const at::Tensor& t);

}  // namespace attnkernels
