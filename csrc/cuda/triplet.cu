// Triplet Attention on CUDA: the passes over x (semantics in csrc/schemas/triplet_schema.cpp).
// One thread per map entry, reducing its line of x in order (no atomics:
// deterministic); each map (over C, over H, over W) is its own launch, so the
// pool and the backward reduction read their inputs three times here. A first
// version, to be tuned on a GPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>

#include "../common/dispatch.h"
#include "../common/cuda_utils.cuh"
#include "../common/gate_math.h"
#include "../common/triplet.h"

namespace attnkernels {
namespace {

constexpr int kThreads = 256;

// One map's geometry: entry q = (i, j) of sample n reduces x[n] at
// i * si + j * sj + k * sk over k < K; the map is (N, I, J).
struct MapGeometry {
  int64_t I, J, K, si, sj, sk;
};

// Over C, over H, over W.
std::array<MapGeometry, 3> map_geometries(const at::Tensor& x) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const bool cl = is_channels_last(x);
  const int64_t sc = cl ? 1 : H * W, sh = cl ? W * C : W, sw = cl ? C : 1;
  return {MapGeometry{H, W, C, sh, sw, sc}, MapGeometry{C, W, H, sc, sw, sh},
          MapGeometry{C, H, W, sc, sh, sw}};
}

// Pool: out = mean x, aux = max x (NaN-propagating). kGrad: out = sum dy * x,
// aux = the first k where x is the max (mx), -1 if none.
template <bool kGrad, typename scalar_t, typename acc_t, typename aux_t>
__global__ void reduce_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ dy,
                              const acc_t* __restrict__ mx, acc_t* __restrict__ out,
                              aux_t* __restrict__ aux, int64_t B, int64_t sample, MapGeometry g) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= B * g.I * g.J) return;
  const int64_t j = o % g.J, i = (o / g.J) % g.I, n = o / (g.I * g.J);
  const int64_t base = n * sample + i * g.si + j * g.sj;
  acc_t sum = 0;
  if (kGrad) {
    const acc_t m = mx[o];
    int32_t tie = -1;
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t e = base + k * g.sk;
      const acc_t v = static_cast<acc_t>(x[e]);
      sum += static_cast<acc_t>(dy[e]) * v;
      if (tie < 0 && is_max(v, m)) tie = static_cast<int32_t>(k);
    }
    out[o] = sum;
    aux[o] = static_cast<aux_t>(tie);
  } else {
    acc_t m = -std::numeric_limits<acc_t>::infinity();
    for (int64_t k = 0; k < g.K; ++k) {
      const acc_t v = static_cast<acc_t>(x[base + k * g.sk]);
      sum += v;
      m = max_nan(m, v);
    }
    out[o] = sum / static_cast<acc_t>(g.K);
    aux[o] = static_cast<aux_t>(m);
  }
}

// What triplet_backward_apply adds per map: the tie and the gradients.
template <typename acc_t>
struct MapGrads {
  const int32_t* tie;
  const acc_t *gmean, *gmax;
};

// Forward: out = branch_mean(x, s_hw, s_cw, s_hc). kGrad (in = dy): plus, per
// map, gmean + gmax where this element is the tie.
template <bool kGrad, bool kChannelsLast, typename scalar_t, typename acc_t>
__global__ void elementwise_kernel(const scalar_t* __restrict__ in, const acc_t* __restrict__ s_hw,
                                   const acc_t* __restrict__ s_cw, const acc_t* __restrict__ s_hc,
                                   MapGrads<acc_t> gc, MapGrads<acc_t> gh, MapGrads<acc_t> gw,
                                   scalar_t* __restrict__ out, bool spatial, int64_t N, int64_t C,
                                   int64_t H, int64_t W) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < N;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t c, h, w;
    if (kChannelsLast) {
      c = e % C;
      w = (e / C) % W;
      h = (e / (C * W)) % H;
    } else {
      w = e % W;
      h = (e / W) % H;
      c = (e / (H * W)) % C;
    }
    const int64_t n = e / (C * H * W);
    const int64_t pix = (n * H + h) * W + w, cw = (n * C + c) * W + w, ch = (n * C + c) * H + h;
    acc_t r = branch_mean(static_cast<acc_t>(in[e]), s_hw[pix], s_cw[cw], s_hc[ch], spatial);
    if (kGrad) {
      r += (gc.gmean[pix] + gh.gmean[cw]) + gw.gmean[ch];
      r += ((gc.tie[pix] == c ? gc.gmax[pix] : acc_t(0)) +
            (gh.tie[cw] == h ? gh.gmax[cw] : acc_t(0))) +
           (gw.tie[ch] == w ? gw.gmax[ch] : acc_t(0));
    }
    out[e] = static_cast<scalar_t>(r);
  }
}

template <bool kGrad, typename scalar_t, typename acc_t, typename aux_t>
void launch_reductions(const at::Tensor& x, const scalar_t* dy,
                       const std::array<const acc_t*, 3>& mx,
                       const std::array<acc_t*, 3>& out, const std::array<aux_t*, 3>& aux,
                       cudaStream_t stream) {
  const int64_t B = x.size(0), sample = x.size(1) * x.size(2) * x.size(3);
  const auto geometries = map_geometries(x);
  for (int a = 0; a < 3; ++a) {
    const MapGeometry& g = geometries[a];
    AK_LAUNCH(ceil_div(B * g.I * g.J, kThreads), kThreads, 0, stream, reduce_kernel<kGrad, scalar_t, acc_t, aux_t>)(
            x.data_ptr<scalar_t>(), dy, mx[a], out[a], aux[a], B, sample, g);
    AK_LAUNCH_CHECK();
  }
}

template <bool kGrad, typename scalar_t, typename acc_t>
void launch_elementwise(const at::Tensor& in, const at::Tensor& s_hw, const at::Tensor& s_cw,
                        const at::Tensor& s_hc, const std::array<MapGrads<acc_t>, 3>& grads,
                        bool spatial, at::Tensor& out, cudaStream_t stream) {
  const int64_t N = in.numel(), C = in.size(1), H = in.size(2), W = in.size(3);
  const unsigned int grid = grid_stride_blocks(N, kThreads);
  const scalar_t* ip = in.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t *a = s_hw.data_ptr<acc_t>(), *b = s_cw.data_ptr<acc_t>(), *c = s_hc.data_ptr<acc_t>();
  if (is_channels_last(in))
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, true, scalar_t, acc_t>)(
        ip, a, b, c, grads[0], grads[1], grads[2], op, spatial, N, C, H, W);
  else
    AK_LAUNCH(grid, kThreads, 0, stream, elementwise_kernel<kGrad, false, scalar_t, acc_t>)(
        ip, a, b, c, grads[0], grads[1], grads[2], op, spatial, N, C, H, W);
  AK_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- ops

TripletSix triplet_pool_cuda(const at::Tensor& x) {
  AK_DEVICE_GUARD(x);
  check_activation_4d(x, "x");
  auto out = triplet_pool_outputs(x);
  if (x.numel() == 0) return as_tuple(out);
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "triplet_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto p = [&](int i) { return out[i].data_ptr<acc_t>(); };
    launch_reductions<false, scalar_t, acc_t, acc_t>(
        x, nullptr, {nullptr, nullptr, nullptr}, {p(0), p(2), p(4)}, {p(1), p(3), p(5)}, stream);
  });
  return as_tuple(out);
}

at::Tensor triplet_apply_cuda(const at::Tensor& x, const at::Tensor& s_hw, const at::Tensor& s_cw,
                              const at::Tensor& s_hc, bool spatial) {
  AK_DEVICE_GUARD(x);
  check_triplet_gates(x, s_hw, s_cw, s_hc);
  at::Tensor y = empty_output_like(x);
  if (x.numel() == 0) return y;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "triplet_apply_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const MapGrads<acc_t> none{nullptr, nullptr, nullptr};
    launch_elementwise<false, scalar_t, acc_t>(x, s_hw, s_cw, s_hc, {none, none, none}, spatial, y,
                                               stream);
  });
  return y;
}

TripletSix triplet_backward_reduce_cuda(const at::Tensor& dy, const at::Tensor& x,
                                        const at::Tensor& cmax, const at::Tensor& hmax,
                                        const at::Tensor& wmax) {
  AK_DEVICE_GUARD(x);
  check_triplet_backward_reduce_args(dy, x, cmax, hmax, wmax);
  auto out = triplet_backward_reduce_outputs(x);
  if (x.numel() == 0) return as_tuple(out);
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "triplet_backward_reduce_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_reductions<true, scalar_t, acc_t, int32_t>(
        x, dy.data_ptr<scalar_t>(),
        {cmax.data_ptr<acc_t>(), hmax.data_ptr<acc_t>(), wmax.data_ptr<acc_t>()},
        {out[0].data_ptr<acc_t>(), out[1].data_ptr<acc_t>(), out[2].data_ptr<acc_t>()},
        {out[3].data_ptr<int32_t>(), out[4].data_ptr<int32_t>(), out[5].data_ptr<int32_t>()},
        stream);
  });
  return as_tuple(out);
}

at::Tensor triplet_backward_apply_cuda(const at::Tensor& dy, const at::Tensor& s_hw,
                                       const at::Tensor& s_cw, const at::Tensor& s_hc,
                                       bool spatial, const at::Tensor& ctie,
                                       const at::Tensor& cgmean, const at::Tensor& cgmax,
                                       const at::Tensor& htie, const at::Tensor& hgmean,
                                       const at::Tensor& hgmax, const at::Tensor& wtie,
                                       const at::Tensor& wgmean, const at::Tensor& wgmax) {
  AK_DEVICE_GUARD(dy);
  check_triplet_backward_apply_args(
      dy, s_hw, s_cw, s_hc, {{ctie, cgmean, cgmax}, {htie, hgmean, hgmax}, {wtie, wgmean, wgmax}});
  at::Tensor dx = empty_output_like(dy);
  if (dy.numel() == 0) return dx;
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(dy, "triplet_backward_apply_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto grads = [&](const at::Tensor& t, const at::Tensor& m, const at::Tensor& x) {
      return MapGrads<acc_t>{t.data_ptr<int32_t>(), m.data_ptr<acc_t>(), x.data_ptr<acc_t>()};
    };
    launch_elementwise<true, scalar_t, acc_t>(
        dy, s_hw, s_cw, s_hc,
        {grads(ctie, cgmean, cgmax), grads(htie, hgmean, hgmax), grads(wtie, wgmean, wgmax)},
        spatial, dx, stream);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) {
  AK_TRIPLET_REDUCE_OPS(AK_IMPL, _cuda)
  AK_TRIPLET_APPLY_OPS(AK_IMPL, _cuda)
}

}  // namespace attnkernels
