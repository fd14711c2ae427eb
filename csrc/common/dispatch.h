// The dtypes every pass over x takes (float, double, half, bfloat16): one
// dispatch for the CPU and CUDA kernels. And their registration: each family
// lists its ops once (AK_<FAMILY>_..._OPS in common/<family>.h), each backend
// registers the list, TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { AK_SE_OPS(AK_IMPL, _cpu) },
// binding each op to the function of its name and the backend's suffix.
#pragma once
#include <ATen/Dispatch.h>

#define AK_DISPATCH(x, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, (x).scalar_type(), name, __VA_ARGS__)

#define AK_IMPL(op, suffix) m.impl(#op, &op##suffix);
