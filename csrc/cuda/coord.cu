// Coordinate Attention on CUDA: the passes over x (semantics in csrc/schemas/coord_schema.cpp).
// One thread per strip element, summing its row in order (no atomics:
// deterministic); each strip is its own launch, so the pool and the backward
// reduction read their inputs twice here. A first version, to be tuned on a GPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../common/dispatch.h"
#include "../common/coord.h"
#include "../common/cuda_utils.cuh"

namespace attnkernels {
namespace {

constexpr int kThreads = 256;

struct Strides {
  int64_t c, h, w;
};

Strides strides_of(const at::Tensor& x) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  if (is_channels_last(x)) return {1, W * C, C};
  return {H * W, W, 1};
}

// out[b, c, l] = scale * sum_m x[b, c, l, m] (kGrad: sum_m dy * x * a[b, c, m]),
// (l, m) being (h, w) for the h strip and (w, h) for the w strip.
template <bool kGrad, typename scalar_t, typename acc_t>
__global__ void strip_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                             const acc_t* __restrict__ a, acc_t* __restrict__ out, int64_t B,
                             int64_t C, int64_t L, int64_t M, int64_t sc, int64_t sl, int64_t sm,
                             acc_t scale) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= B * C * L) return;
  const int64_t l = o % L, nc = o / L, n = nc / C, c = nc % C;
  const int64_t base = n * C * L * M + c * sc + l * sl;
  acc_t sum = 0;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t i = base + m * sm;
    acc_t v = static_cast<acc_t>(x[i]);
    if (kGrad) v = static_cast<acc_t>(dy[i]) * v * a[nc * M + m];
    sum += v;
  }
  out[o] = sum * scale;
}

// Forward: out = x * aw * ah (+ x). Backward (kGrad): out = dy * aw * ah + gh + gw (+ dy).
template <bool kGrad, bool kChannelsLast, typename scalar_t, typename acc_t>
__global__ void elementwise_kernel(const scalar_t* __restrict__ in, const acc_t* __restrict__ ah,
                                   const acc_t* __restrict__ aw, const acc_t* __restrict__ gh,
                                   const acc_t* __restrict__ gw, scalar_t* __restrict__ out,
                                   int64_t N, int64_t C, int64_t H, int64_t W, bool skip) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t c, h, w;
    if (kChannelsLast) {
      c = i % C;
      w = (i / C) % W;
      h = (i / (C * W)) % H;
    } else {
      w = i % W;
      h = (i / W) % H;
      c = (i / (H * W)) % C;
    }
    const int64_t nc = (i / (C * H * W)) * C + c;
    const acc_t v = static_cast<acc_t>(in[i]);
    acc_t r = v * aw[nc * W + w] * ah[nc * H + h];
    if (kGrad) r += gh[nc * H + h] + gw[nc * W + w];
    if (skip) r += v;
    out[i] = static_cast<scalar_t>(r);
  }
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_strips(const at::Tensor& x, const scalar_t* dy, const acc_t* ah, const acc_t* aw,
                   acc_t* out_h, acc_t* out_w, cudaStream_t stream) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Strides s = strides_of(x);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  AK_LAUNCH(ceil_div(B * C * H, kThreads), kThreads, 0, stream, strip_kernel<kGrad, scalar_t, acc_t>)(
      xp, dy, aw, out_h, B, C, H, W, s.c, s.h, s.w,
      kGrad ? acc_t(1) : acc_t(1) / static_cast<acc_t>(W));
  AK_LAUNCH_CHECK();
  AK_LAUNCH(ceil_div(B * C * W, kThreads), kThreads, 0, stream, strip_kernel<kGrad, scalar_t, acc_t>)(
      xp, dy, ah, out_w, B, C, W, H, s.c, s.w, s.h,
      kGrad ? acc_t(1) : acc_t(1) / static_cast<acc_t>(H));
  AK_LAUNCH_CHECK();
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_elementwise(const at::Tensor& in, const acc_t* ah, const acc_t* aw, const acc_t* gh,
                        const acc_t* gw, at::Tensor& out, bool skip, cudaStream_t stream) {
  const int64_t N = in.numel(), C = in.size(1), H = in.size(2), W = in.size(3);
  const unsigned int grid = grid_stride_blocks(N, kThreads);
  const scalar_t* ip = in.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  if (is_channels_last(in))
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, true, scalar_t, acc_t>)(
        ip, ah, aw, gh, gw, op, N, C, H, W, skip);
  else
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, false, scalar_t, acc_t>)(
        ip, ah, aw, gh, gw, op, N, C, H, W, skip);
  AK_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- ops

std::tuple<at::Tensor, at::Tensor> coord_pool_cuda(const at::Tensor& x) {
  AK_DEVICE_GUARD(x);
  check_activation_4d(x, "x");
  auto [mh, mw] = coord_pool_outputs(x);
  if (x.numel() == 0) return {mh, mw};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "coord_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_strips<false, scalar_t, acc_t>(x, nullptr, nullptr, nullptr, mh.data_ptr<acc_t>(),
                                          mw.data_ptr<acc_t>(), stream);
  });
  return {mh, mw};
}

at::Tensor coord_apply_cuda(const at::Tensor& x, const at::Tensor& ah, const at::Tensor& aw,
                            bool skip) {
  AK_DEVICE_GUARD(x);
  check_coord_gates(x, ah, aw);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "coord_apply_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_elementwise<false, scalar_t, acc_t>(x, ah.data_ptr<acc_t>(), aw.data_ptr<acc_t>(),
                                               nullptr, nullptr, y, skip, stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> coord_backward_reduce_cuda(const at::Tensor& dy,
                                                              const at::Tensor& x,
                                                              const at::Tensor& ah,
                                                              const at::Tensor& aw) {
  AK_DEVICE_GUARD(x);
  check_coord_gates(x, ah, aw);
  check_grad_like_x(dy, x, "dy");
  at::Tensor dah = at::zeros_like(ah), daw = at::zeros_like(aw);
  if (x.numel() == 0) return {dah, daw};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "coord_backward_reduce_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_strips<true, scalar_t, acc_t>(x, dy.data_ptr<scalar_t>(), ah.data_ptr<acc_t>(),
                                         aw.data_ptr<acc_t>(), dah.data_ptr<acc_t>(),
                                         daw.data_ptr<acc_t>(), stream);
  });
  return {dah, daw};
}

at::Tensor coord_backward_apply_cuda(const at::Tensor& dy, const at::Tensor& ah,
                                     const at::Tensor& aw, const at::Tensor& gh,
                                     const at::Tensor& gw, bool skip) {
  AK_DEVICE_GUARD(dy);
  check_coord_backward_apply_args(dy, ah, aw, gh, gw);
  at::Tensor dx = empty_output_like(dy);
  if (dy.numel() == 0) return dx;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(dy, "coord_backward_apply_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_elementwise<true, scalar_t, acc_t>(dy, ah.data_ptr<acc_t>(), aw.data_ptr<acc_t>(),
                                              gh.data_ptr<acc_t>(), gw.data_ptr<acc_t>(), dx,
                                              skip, stream);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_COORD_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
