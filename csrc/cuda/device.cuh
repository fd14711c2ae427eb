// What the CUDA kernels and their launchers need from the device, for nvcc
// (CUDA) or for the host compiler (ATTNKERNELS_SIMT: the kernels run on the
// CPU under csrc/cuda/simt.h's emulator). Kernel bodies and launchers use only
// these, so that one source serves both builds:
//   AK_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...)
//   AK_SHARED(type, name, [dims]...);   AK_DYNAMIC_SHARED(type, name);
//   AK_DEVICE_GUARD(tensor); AK_CURRENT_STREAM(); AK_LAUNCH_CHECK();
//   TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m)
// AK_MAX_GRID_STRIDE_BLOCKS caps a grid-stride loop's grid: 2M blocks on a GPU,
// 3 in the emulator, so that small test tensors run the loop's later rounds.
#pragma once
#if defined(ATTNKERNELS_SIMT)
#include "simt.h"
#define AK_DISPATCH_KEY CPU
#define AK_MAX_GRID_STRIDE_BLOCKS int64_t{3}
#define AK_DEVICE_GUARD(tensor) (void)(tensor)
#define AK_CURRENT_STREAM() (cudaStream_t{})
#define AK_LAUNCH_CHECK() (void)0
#define AK_LAUNCH(grid, block, shared, stream, ...)                                           \
  ::attnkernels::simt::launch([](auto... args) { __VA_ARGS__(args...); }, grid, block, shared, \
                              stream, __FILE__ ":" #__VA_ARGS__)
#define AK_SHARED(type, name, ...)                                                 \
  static thread_local ::attnkernels::simt::Guarded<type __VA_ARGS__> name##_guarded_; \
  auto& name = ::attnkernels::simt::shared_region(name##_guarded_, #name)
#define AK_DYNAMIC_SHARED(type, name) type* name = ::attnkernels::simt::dynamic_shared<type>()
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#define AK_DISPATCH_KEY CUDA
#define AK_MAX_GRID_STRIDE_BLOCKS (int64_t{65535} * 32)
#define AK_DEVICE_GUARD(tensor) const c10::cuda::CUDAGuard device_guard_((tensor).device())
#define AK_CURRENT_STREAM() (c10::cuda::getCurrentCUDAStream().stream())
#define AK_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#define AK_LAUNCH(grid, block, shared, stream, ...) __VA_ARGS__<<<grid, block, shared, stream>>>
#define AK_SHARED(type, name, ...) __shared__ type name __VA_ARGS__
#define AK_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
