// CBAM on CUDA: the passes over x (semantics in csrc/schemas/cbam_schema.cpp). Every
// reduction is a fixed-order loop or block reduction (no atomics:
// deterministic). Per (n, c) over H*W: one block per plane (NCHW) or a tile of
// 32 channels (channels_last). Per (n, h, w) over C: one thread per pixel
// (NCHW: coalesced over pixels) or one warp per pixel (channels_last: lanes
// over channels). The backward reduction runs both kinds, so it reads (dy, x)
// twice here.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <climits>
#include <limits>

#include "../common/dispatch.h"
#include "../common/cbam.h"
#include "channel_gate.cuh"

namespace attnkernels {
namespace {

constexpr int kThreads = 256;
constexpr int kNoIndex = INT_MAX;  // "no index yet" while taking the first maximal element

// Tie state: the smallest index hit (kFirst), or the count of hits.
template <bool kFirst>
__device__ __forceinline__ int tie_update(int tie, bool hit, int64_t index) {
  if (kFirst) return hit ? min(tie, static_cast<int>(index)) : tie;
  return tie + (hit ? 1 : 0);
}

template <bool kFirst>
__device__ __forceinline__ int tie_combine(int a, int b) {
  return kFirst ? min(a, b) : a + b;
}

template <bool kFirst>
__device__ __forceinline__ int tie_init() {
  return kFirst ? kNoIndex : 0;
}

template <bool kFirst>
__device__ __forceinline__ int32_t tie_result(int tie) {
  return (kFirst && tie == kNoIndex) ? -1 : tie;
}

template <bool kFirst>
__device__ __forceinline__ int warp_tie(int v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = tie_combine<kFirst>(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

template <bool kFirst>
__device__ __forceinline__ int block_tie(int v, int* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_tie<kFirst>(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarp) ? scratch[lane] : tie_init<kFirst>();
    v = warp_tie<kFirst>(v);
  }
  return v;
}

// ---------------------------------------------------------------- per (n, c), over H*W

// kMode 1 (backward, channel side): sum dy * x * sa[p]; tie of x == cmax[n, c].
// kMode 2 (spatial pool backward): sum x * (sgmean[p] + routed * sgmax[p]), with
//   routed: c == stie[p] (kFirst) or x * ca[n, c] == smax[p].
struct OverHWArgs {
  const void* x;
  const void* dy;
  const void* sa;      // mode 1; sgmean in mode 2
  const void* sgmax;   // mode 2
  const void* smax;    // mode 2
  const int32_t* stie; // mode 2
  const void* chan;    // cmax (mode 1) or ca (mode 2), per (n, c)
  void* out;
  int32_t* tie_out;    // mode 1
  int64_t C, HW;
};

template <int kMode, bool kFirst, typename scalar_t, typename acc_t>
__device__ __forceinline__ void over_hw_term(const OverHWArgs& a, int64_t i, int64_t n, int64_t c,
                                             int64_t p, acc_t chan, acc_t& sum, int& tie) {
  const acc_t v = static_cast<acc_t>(static_cast<const scalar_t*>(a.x)[i]);
  const int64_t q = n * a.HW + p;
  if (kMode == 1) {
    const acc_t t = static_cast<acc_t>(static_cast<const scalar_t*>(a.dy)[i]) * v;
    sum += t * static_cast<const acc_t*>(a.sa)[q];
    tie = tie_update<kFirst>(tie, v == chan, p);
  } else {
    const bool hit = kFirst ? a.stie[q] == c : v * chan == static_cast<const acc_t*>(a.smax)[q];
    sum += v * (static_cast<const acc_t*>(a.sa)[q] +
                (hit ? static_cast<const acc_t*>(a.sgmax)[q] : acc_t(0)));
  }
}

template <int kMode, bool kFirst, typename scalar_t, typename acc_t>
__global__ void over_hw_nchw_kernel(OverHWArgs a) {
  AK_SHARED(acc_t, scratch, [kThreads / kWarp]);
  AK_SHARED(int, tscratch, [kThreads / kWarp]);
  const int64_t nc = blockIdx.x, n = nc / a.C, c = nc % a.C;
  const acc_t chan = static_cast<const acc_t*>(a.chan)[nc];
  acc_t sum = 0;
  int tie = tie_init<kFirst>();
  for (int64_t p = threadIdx.x; p < a.HW; p += blockDim.x)
    over_hw_term<kMode, kFirst, scalar_t, acc_t>(a, nc * a.HW + p, n, c, p, chan, sum, tie);
  sum = block_reduce<false>(sum, scratch);
  if (kMode == 1) tie = block_tie<kFirst>(tie, tscratch);
  if (threadIdx.x == 0) {
    static_cast<acc_t*>(a.out)[nc] = sum;
    if (kMode == 1) a.tie_out[nc] = tie_result<kFirst>(tie);
  }
}

template <int kMode, bool kFirst, typename scalar_t, typename acc_t>
__global__ void over_hw_nhwc_kernel(OverHWArgs a) {
  constexpr int kRows = kThreads / kTileC;
  AK_SHARED(acc_t, ssum, [kRows][kTileC]);
  AK_SHARED(int, sties, [kRows][kTileC]);
  const int64_t n = blockIdx.y;
  const int lane = threadIdx.x % kTileC, row = threadIdx.x / kTileC;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTileC + lane;
  acc_t sum = 0;
  int tie = tie_init<kFirst>();
  if (c < a.C) {
    const acc_t chan = static_cast<const acc_t*>(a.chan)[n * a.C + c];
    for (int64_t p = row; p < a.HW; p += kRows)
      over_hw_term<kMode, kFirst, scalar_t, acc_t>(a, (n * a.HW + p) * a.C + c, n, c, p, chan, sum,
                                                   tie);
  }
  ssum[row][lane] = sum;
  sties[row][lane] = tie;
  __syncthreads();
  if (row == 0 && c < a.C) {
    for (int r = 1; r < kRows; ++r) {
      sum += ssum[r][lane];
      tie = tie_combine<kFirst>(tie, sties[r][lane]);
    }
    static_cast<acc_t*>(a.out)[n * a.C + c] = sum;
    if (kMode == 1) a.tie_out[n * a.C + c] = tie_result<kFirst>(tie);
  }
}

template <int kMode, bool kFirst, typename scalar_t, typename acc_t>
void launch_over_hw(const at::Tensor& x, const OverHWArgs& a, cudaStream_t stream) {
  const int64_t B = x.size(0);
  if (is_channels_last(x)) {
    const dim3 grid(ceil_div(a.C, kTileC), static_cast<unsigned int>(B));
    AK_LAUNCH(grid, kThreads, 0, stream, over_hw_nhwc_kernel<kMode, kFirst, scalar_t, acc_t>)(a);
  } else {
    AK_LAUNCH(static_cast<unsigned int>(B * a.C), kThreads, 0, stream, over_hw_nchw_kernel<kMode, kFirst, scalar_t, acc_t>)(a);
  }
  AK_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- per (n, h, w), over C

// kGrad false (spatial pool): out = mean u, aux = max u, u = x * ca.
// kGrad true (backward, spatial side): out = sum dy * u, tie of u == smax.
template <bool kGrad, bool kFirst, typename scalar_t, typename acc_t>
struct OverC {
  const scalar_t* x;
  const scalar_t* dy;
  const acc_t* ca;
  const acc_t* smax;
  acc_t* out;
  acc_t* aux;
  int32_t* tie_out;
  int64_t C, HW;

  struct State {
    acc_t sum, mx;
    int tie;
  };
  __device__ State init() const {
    return {acc_t(0), -std::numeric_limits<acc_t>::infinity(), tie_init<kFirst>()};
  }
  __device__ void add(State& s, int64_t i, int64_t n, int64_t c, acc_t sm) const {
    const acc_t u = static_cast<acc_t>(x[i]) * ca[n * C + c];
    if (kGrad) {
      s.sum += static_cast<acc_t>(dy[i]) * u;
      s.tie = tie_update<kFirst>(s.tie, u == sm, c);
    } else {
      s.sum += u;
      s.mx = max_nan(s.mx, u);
    }
  }
  __device__ void write(const State& s, int64_t q) const {
    if (kGrad) {
      out[q] = s.sum;
      tie_out[q] = tie_result<kFirst>(s.tie);
    } else {
      out[q] = s.sum / static_cast<acc_t>(C);
      aux[q] = s.mx;
    }
  }
};

template <typename Op>
__global__ void over_c_nchw_kernel(Op op, int64_t B) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= B * op.HW) return;
  const int64_t n = q / op.HW, p = q % op.HW;
  const auto sm = op.smax ? op.smax[q] : decltype(op.init().sum)(0);
  auto s = op.init();
  for (int64_t c = 0; c < op.C; ++c) op.add(s, (n * op.C + c) * op.HW + p, n, c, sm);
  op.write(s, q);
}

template <bool kFirst, typename Op>
__global__ void over_c_nhwc_kernel(Op op, int64_t B) {
  const int64_t q = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (q >= B * op.HW) return;  // whole warps leave together
  const int64_t n = q / op.HW;
  const auto sm = op.smax ? op.smax[q] : decltype(op.init().sum)(0);
  auto s = op.init();
  for (int64_t c = lane; c < op.C; c += kWarp) op.add(s, q * op.C + c, n, c, sm);
  s.sum = warp_sum(s.sum);
  s.mx = warp_max(s.mx);
  s.tie = warp_tie<kFirst>(s.tie);
  if (lane == 0) op.write(s, q);
}

template <bool kGrad, bool kFirst, typename scalar_t, typename acc_t>
void launch_over_c(const at::Tensor& x, const OverC<kGrad, kFirst, scalar_t, acc_t>& op,
                   cudaStream_t stream) {
  const int64_t B = x.size(0), pixels = B * op.HW;
  if (is_channels_last(x))
    AK_LAUNCH(ceil_div(pixels * kWarp, kThreads), kThreads, 0, stream, over_c_nhwc_kernel<kFirst>)(op, B);
  else
    AK_LAUNCH(ceil_div(pixels, kThreads), kThreads, 0, stream, over_c_nchw_kernel)(op, B);
  AK_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- elementwise

struct ElementwiseArgs {
  const void *x, *dy;
  const void *ca, *sa, *cmax, *cgmean, *cgmax, *smax, *sgmean, *sgmax;
  const int32_t *ctie, *stie;
  void* out;
  int64_t N, C, HW;
};

// Forward: out = x * ca * sa. Backward (kGrad): dx of backward_apply.
template <bool kGrad, bool kFirst, bool kChannelsLast, typename scalar_t, typename acc_t>
__global__ void elementwise_kernel(ElementwiseArgs a) {
  auto load = [](const void* p, int64_t i) { return static_cast<const acc_t*>(p)[i]; };
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = kChannelsLast ? i % a.C : (i / a.HW) % a.C;
    const int64_t p = kChannelsLast ? (i / a.C) % a.HW : i % a.HW;
    const int64_t n = i / (a.C * a.HW), nc = n * a.C + c, q = n * a.HW + p;
    const acc_t xv = static_cast<acc_t>(static_cast<const scalar_t*>(a.x)[i]);
    const acc_t g = load(a.ca, nc), s = load(a.sa, q);
    acc_t v;
    if (kGrad) {
      const acc_t dyv = static_cast<acc_t>(static_cast<const scalar_t*>(a.dy)[i]);
      const bool s_hit = kFirst ? a.stie[q] == c : xv * g == load(a.smax, q);
      const bool c_hit = kFirst ? a.ctie[nc] == p : xv == load(a.cmax, nc);
      v = g * (dyv * s + load(a.sgmean, q) + (s_hit ? load(a.sgmax, q) : acc_t(0))) +
          load(a.cgmean, nc) + (c_hit ? load(a.cgmax, nc) : acc_t(0));
    } else {
      v = xv * g * s;
    }
    static_cast<scalar_t*>(a.out)[i] = static_cast<scalar_t>(v);
  }
}

template <bool kGrad, bool kFirst, typename scalar_t, typename acc_t>
void launch_elementwise(const at::Tensor& x, const ElementwiseArgs& a, cudaStream_t stream) {
  const unsigned int grid = grid_stride_blocks(a.N, kThreads);
  if (is_channels_last(x))
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, kFirst, true, scalar_t, acc_t>)(a);
  else
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, kFirst, false, scalar_t, acc_t>)(a);
  AK_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- ops

// f.template operator()<kFirst>() with kFirst = first_max.
template <typename F>
void with_first(bool first_max, const F& f) {
  if (first_max) f(std::true_type{});
  else f(std::false_type{});
}

std::tuple<at::Tensor, at::Tensor> cbam_channel_pool_cuda(const at::Tensor& x) {
  AK_DEVICE_GUARD(x);
  check_activation_4d(x, "x");
  at::Tensor mean = channel_stats_like(x), max = channel_stats_like(x);
  fill_empty_stats(x, mean, max);
  if (x.numel() == 0) return {mean, max};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "cbam_channel_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reduce<false, scalar_t, acc_t>(x, nullptr, nullptr, true, mean.data_ptr<acc_t>(),
                                          max.data_ptr<acc_t>(), stream, /*mix=*/false);
  });
  return {mean, max};
}

std::tuple<at::Tensor, at::Tensor> cbam_spatial_pool_cuda(const at::Tensor& x, const at::Tensor& ca) {
  AK_DEVICE_GUARD(x);
  check_activation_4d(x, "x");
  check_stats(x, ca, "ca");
  at::Tensor mean = pixel_stats_like(x), max = pixel_stats_like(x);
  fill_empty_stats(x, mean, max);
  if (x.numel() == 0) return {mean, max};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "cbam_spatial_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const OverC<false, false, scalar_t, acc_t> op{
        x.data_ptr<scalar_t>(), nullptr, ca.data_ptr<acc_t>(), nullptr, mean.data_ptr<acc_t>(),
        max.data_ptr<acc_t>(), nullptr, x.size(1), x.size(2) * x.size(3)};
    launch_over_c(x, op, stream);
  });
  return {mean, max};
}

ElementwiseArgs elementwise_args(const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa,
                                 void* out) {
  ElementwiseArgs a{};
  a.x = x.data_ptr();
  a.ca = ca.data_ptr();
  a.sa = sa.data_ptr();
  a.out = out;
  a.N = x.numel();
  a.C = x.size(1);
  a.HW = x.size(2) * x.size(3);
  return a;
}

at::Tensor cbam_apply_cuda(const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa) {
  AK_DEVICE_GUARD(x);
  check_cbam_gates(x, ca, sa);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  const ElementwiseArgs a = elementwise_args(x, ca, sa, y.data_ptr());
  AK_DISPATCH(x, "cbam_apply_cuda", [&] {
    launch_elementwise<false, false, scalar_t, at::opmath_type<scalar_t>>(x, a, stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cbam_backward_reduce_cuda(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca, const at::Tensor& sa,
    const at::Tensor& cmax, const at::Tensor& smax, bool first_max) {
  AK_DEVICE_GUARD(x);
  check_cbam_backward_reduce_args(dy, x, ca, sa, cmax, smax);
  auto [dca, dsa, ctie, stie] = cbam_backward_reduce_outputs(ca, sa);
  if (x.numel() == 0) return {dca, dsa, ctie, stie};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "cbam_backward_reduce_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_first(first_max, [&](auto first) {
      constexpr bool kFirst = decltype(first)::value;
      OverHWArgs a{};
      a.x = x.data_ptr();
      a.dy = dy.data_ptr();
      a.sa = sa.data_ptr();
      a.chan = cmax.data_ptr();
      a.out = dca.data_ptr();
      a.tie_out = ctie.data_ptr<int32_t>();
      a.C = x.size(1);
      a.HW = x.size(2) * x.size(3);
      launch_over_hw<1, kFirst, scalar_t, acc_t>(x, a, stream);
      const OverC<true, kFirst, scalar_t, acc_t> op{
          x.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), ca.data_ptr<acc_t>(),
          smax.data_ptr<acc_t>(), dsa.data_ptr<acc_t>(), nullptr, stie.data_ptr<int32_t>(),
          a.C, a.HW};
      launch_over_c(x, op, stream);
    });
  });
  return {dca, dsa, ctie, stie};
}

at::Tensor cbam_spatial_pool_backward_cuda(const at::Tensor& x, const at::Tensor& ca,
                                           const at::Tensor& smax, const at::Tensor& stie,
                                           const at::Tensor& sgmean, const at::Tensor& sgmax,
                                           bool first_max) {
  AK_DEVICE_GUARD(x);
  check_cbam_spatial_pool_backward_args(x, ca, smax, stie, sgmean, sgmax);
  at::Tensor dca = at::zeros_like(ca);
  if (x.numel() == 0) return dca;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "cbam_spatial_pool_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    OverHWArgs a{};
    a.x = x.data_ptr();
    a.sa = sgmean.data_ptr();
    a.sgmax = sgmax.data_ptr();
    a.smax = smax.data_ptr();
    a.stie = stie.data_ptr<int32_t>();
    a.chan = ca.data_ptr();
    a.out = dca.data_ptr();
    a.C = x.size(1);
    a.HW = x.size(2) * x.size(3);
    with_first(first_max, [&](auto first) {
      launch_over_hw<2, decltype(first)::value, scalar_t, acc_t>(x, a, stream);
    });
  });
  return dca;
}

at::Tensor cbam_backward_apply_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& ca,
                                    const at::Tensor& sa, const at::Tensor& cmax,
                                    const at::Tensor& ctie, const at::Tensor& cgmean,
                                    const at::Tensor& cgmax, const at::Tensor& smax,
                                    const at::Tensor& stie, const at::Tensor& sgmean,
                                    const at::Tensor& sgmax, bool first_max) {
  AK_DEVICE_GUARD(x);
  check_cbam_backward_apply_args(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean,
                                 sgmax);
  at::Tensor dx = empty_output_like(x);
  if (x.numel() == 0) return dx;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  ElementwiseArgs a = elementwise_args(x, ca, sa, dx.data_ptr());
  a.dy = dy.data_ptr();
  a.cmax = cmax.data_ptr();
  a.ctie = ctie.data_ptr<int32_t>();
  a.cgmean = cgmean.data_ptr();
  a.cgmax = cgmax.data_ptr();
  a.smax = smax.data_ptr();
  a.stie = stie.data_ptr<int32_t>();
  a.sgmean = sgmean.data_ptr();
  a.sgmax = sgmax.data_ptr();
  AK_DISPATCH(x, "cbam_backward_apply_cuda", [&] {
    with_first(first_max, [&](auto first) {
      launch_elementwise<true, decltype(first)::value, scalar_t, at::opmath_type<scalar_t>>(
          x, a, stream);
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) {
  AK_CBAM_FORWARD_OPS(AK_IMPL, _cuda)
  AK_CBAM_BACKWARD_OPS(AK_IMPL, _cuda)
}

}  // namespace attnkernels
