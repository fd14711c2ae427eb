// EMA on CUDA (semantics in csrc/schemas/ema_schema.cpp).
//
// One block per channel group (b, G) (a block-stride loop past the grid's
// cap), in phases separated by __syncthreads: forward, the strip means
// (a thread per row or column), the 1x1 conv and gates (a thread per strip
// entry), the statistics of z and the mean of x2 (a warp per channel: the
// mean, then the centred sum of squares), the two softmaxes (thread 0), the
// per-pixel weight and s (a thread per pixel), y (a thread per element).
// Backward: dw per pixel, the per-channel sums of dw * x2 and dw * xhat, the
// softmaxes' backward, the strip sums of dz * x * gate and dx2, the 1x1
// conv's backward, dx. A group's x and x2 (g * H * W values) are read from
// memory once and then from L2; the small intermediates live in the saved
// outputs and per-group scratch. The parameter gradients are per-group
// partials, summed over the groups by at::sum. No atomics; deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common/cuda_utils.cuh"
#include "../common/dispatch.h"
#include "../common/ema.h"
#include "../common/outputs.h"

namespace attnkernels {
namespace {

constexpr int kEmaThreads = 256;

// A group's geometry and where its elements lie in x (dy, dx alike) and x2 (dx2 alike).
struct EmaGeom {
  int64_t N, G, g, H, W;
  int64_t xb, xc, xh, xw;      // x's strides
  int64_t x2n, x2c, x2h, x2w;  // x2's strides
  __host__ __device__ int64_t T() const { return H + W; }
  __host__ __device__ int64_t HW() const { return H * W; }
  __host__ __device__ int64_t x_at(int64_t n, int64_t k, int64_t i, int64_t j) const {
    return (n / G) * xb + ((n % G) * g + k) * xc + i * xh + j * xw;
  }
  __host__ __device__ int64_t x2_at(int64_t n, int64_t k, int64_t i, int64_t j) const {
    return n * x2n + k * x2c + i * x2h + j * x2w;
  }
};

EmaGeom ema_geom(const at::Tensor& x, const at::Tensor& x2, int64_t groups) {
  return {x.size(0) * groups, groups, x.size(1) / groups, x.size(2), x.size(3),
          x.stride(0), x.stride(1), x.stride(2), x.stride(3),
          x2.stride(0), x2.stride(1), x2.stride(2), x2.stride(3)};
}

template <typename acc_t>
struct EmaParams {
  const acc_t *w1, *b1, *gw, *gb;
};

template <typename scalar_t, typename acc_t>
__global__ void ema_forward_kernel(EmaGeom s, const scalar_t* __restrict__ x,
                                   const scalar_t* __restrict__ x2, EmaParams<acc_t> prm, acc_t eps,
                                   scalar_t* __restrict__ y, acc_t* __restrict__ strips,
                                   acc_t* __restrict__ gates, acc_t* __restrict__ stats,
                                   acc_t* __restrict__ smap) {
  const int64_t g = s.g, H = s.H, W = s.W, T = s.T(), HW = s.HW();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t n = blockIdx.x; n < s.N; n += gridDim.x) {
    acc_t* st = strips + n * g * T;
    acc_t* ga = gates + n * g * T;
    acc_t *mu = stats + n * 4 * g, *rstd = mu + g, *x11 = mu + 2 * g, *x21 = mu + 3 * g;
    acc_t* sp = smap + n * HW;
    // strip means: a row's over W (t < H), a column's over H
    for (int64_t o = threadIdx.x; o < g * T; o += blockDim.x) {
      const int64_t k = o / T, t = o % T;
      acc_t sum = 0;
      if (t < H) {
        for (int64_t j = 0; j < W; ++j) sum += static_cast<acc_t>(x[s.x_at(n, k, t, j)]);
        st[o] = sum / static_cast<acc_t>(W);
      } else {
        for (int64_t i = 0; i < H; ++i) sum += static_cast<acc_t>(x[s.x_at(n, k, i, t - H)]);
        st[o] = sum / static_cast<acc_t>(H);
      }
    }
    __syncthreads();
    for (int64_t o = threadIdx.x; o < g * T; o += blockDim.x) {
      const int64_t k = o / T, t = o % T;
      acc_t a = prm.b1 ? prm.b1[k] : acc_t(0);
      for (int64_t m = 0; m < g; ++m) a += prm.w1[k * g + m] * st[m * T + t];
      ga[o] = sigmoid(a);
    }
    __syncthreads();
    // per channel, a warp each: the means of z = x * gh * gw and of x2 ...
    for (int64_t k = warp; k < g; k += warps) {
      const acc_t* gh = ga + k * T;
      acc_t sum = 0, sum2 = 0;
      for (int64_t p = lane; p < HW; p += kWarp) {
        const int64_t i = p / W, j = p % W;
        sum += static_cast<acc_t>(x[s.x_at(n, k, i, j)]) * gh[i] * gh[H + j];
        sum2 += static_cast<acc_t>(x2[s.x2_at(n, k, i, j)]);
      }
      sum = warp_sum(sum);
      sum2 = warp_sum(sum2);
      if (lane == 0) {
        mu[k] = sum / static_cast<acc_t>(HW);
        x21[k] = sum2 / static_cast<acc_t>(HW);  // the mean of x2, until its softmax
      }
    }
    __syncthreads();
    // ... then the centred sum of squares
    for (int64_t k = warp; k < g; k += warps) {
      const acc_t* gh = ga + k * T;
      const acc_t m = mu[k];
      acc_t ss = 0;
      for (int64_t p = lane; p < HW; p += kWarp) {
        const int64_t i = p / W, j = p % W;
        const acc_t d = static_cast<acc_t>(x[s.x_at(n, k, i, j)]) * gh[i] * gh[H + j] - m;
        ss += d * d;
      }
      ss = warp_sum(ss);
      if (lane == 0) rstd[k] = acc_t(1) / std::sqrt(ss / static_cast<acc_t>(HW) + eps);
    }
    // no barrier: the softmaxes read x21's means (stored before the last one),
    // and rstd is read only after the next
    if (threadIdx.x == 0) {
      softmax_over(prm.gb, g, 1, x11, 1);  // the mean of x1 over H*W is gn_b exactly
      softmax_over(x21, g, 1, x21, 1);
    }
    __syncthreads();
    // per pixel: w = sum_k x11 x2 + x21 x1, s = sigmoid(w)
    for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
      const int64_t i = p / W, j = p % W;
      acc_t w = 0;
      for (int64_t k = 0; k < g; ++k) {
        const acc_t* gh = ga + k * T;
        const acc_t z = static_cast<acc_t>(x[s.x_at(n, k, i, j)]) * gh[i] * gh[H + j];
        w += x11[k] * static_cast<acc_t>(x2[s.x2_at(n, k, i, j)]) +
             x21[k] * (prm.gw[k] * rstd[k] * (z - mu[k]) + prm.gb[k]);
      }
      sp[p] = sigmoid(w);
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < g * HW; e += blockDim.x) {
      const int64_t k = e / HW, p = e % HW, i = p / W, j = p % W;
      const int64_t o = s.x_at(n, k, i, j);
      y[o] = static_cast<scalar_t>(static_cast<acc_t>(x[o]) * sp[p]);
    }
    // the next group's phases touch none of this group's memory: no barrier
  }
}

// Per-group scratch of the backward, in acc_t: dw (HW), the per-channel sums
// S1, Sxh, dm1, dm2 (4 g) and D (1), da and dstrip (g T each).
struct EmaScratch {
  int64_t HW, g, T;
  __host__ __device__ int64_t size() const { return HW + 4 * g + 1 + 2 * g * T; }
};

template <typename scalar_t, typename acc_t>
__global__ void ema_backward_kernel(EmaGeom s, const scalar_t* __restrict__ dy,
                                    const scalar_t* __restrict__ x,
                                    const scalar_t* __restrict__ x2, EmaParams<acc_t> prm,
                                    const acc_t* __restrict__ strips,
                                    const acc_t* __restrict__ gates,
                                    const acc_t* __restrict__ stats,
                                    const acc_t* __restrict__ smap, scalar_t* __restrict__ dx,
                                    scalar_t* __restrict__ dx2, acc_t* __restrict__ scratch,
                                    acc_t* __restrict__ partials) {
  const int64_t g = s.g, H = s.H, W = s.W, T = s.T(), HW = s.HW();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  const acc_t inv = acc_t(1) / static_cast<acc_t>(HW);
  const EmaScratch layout{HW, g, T};
  for (int64_t n = blockIdx.x; n < s.N; n += gridDim.x) {
    const acc_t* st = strips + n * g * T;
    const acc_t* ga = gates + n * g * T;
    const acc_t *mu = stats + n * 4 * g, *rstd = mu + g, *x11 = mu + 2 * g, *x21 = mu + 3 * g;
    const acc_t* sp = smap + n * HW;
    acc_t* dw = scratch + n * layout.size();
    acc_t *S1 = dw + HW, *Sxh = S1 + g, *dm1 = Sxh + g, *dm2 = dm1 + g, *D = dm2 + g;
    acc_t *da = D + 1, *dst = da + g * T;
    acc_t* part = partials + n * (g * g + 3 * g);
    acc_t *pw1 = part, *pb1 = part + g * g, *pgw = pb1 + g, *pgb = pgw + g;
    // dw = s (1 - s) sum_k dy x, per pixel
    for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
      const int64_t i = p / W, j = p % W;
      acc_t t = 0;
      for (int64_t k = 0; k < g; ++k) {
        const int64_t o = s.x_at(n, k, i, j);
        t += static_cast<acc_t>(dy[o]) * static_cast<acc_t>(x[o]);
      }
      dw[p] = t * sp[p] * (acc_t(1) - sp[p]);
    }
    __syncthreads();
    // per channel, a warp each: S1 = sum dw x2, Sxh = sum dw xhat; "channel" g: D = sum dw
    for (int64_t k = warp; k <= g; k += warps) {
      acc_t a = 0, b = 0;
      if (k == g) {
        for (int64_t p = lane; p < HW; p += kWarp) a += dw[p];
      } else {
        const acc_t* gh = ga + k * T;
        for (int64_t p = lane; p < HW; p += kWarp) {
          const int64_t i = p / W, j = p % W;
          const acc_t z = static_cast<acc_t>(x[s.x_at(n, k, i, j)]) * gh[i] * gh[H + j];
          a += dw[p] * static_cast<acc_t>(x2[s.x2_at(n, k, i, j)]);
          b += dw[p] * (z - mu[k]) * rstd[k];
        }
      }
      a = warp_sum(a);
      b = warp_sum(b);
      if (lane == 0) {
        if (k == g) {
          D[0] = a;
        } else {
          S1[k] = a;
          Sxh[k] = b;
        }
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // the softmaxes' backward: x11 = softmax(gn_b), x21 = softmax(mean x2);
      // dx21 = sum dw x1 = gn_w Sxh + gn_b D (dm2 holds it until then)
      for (int64_t k = 0; k < g; ++k) dm2[k] = prm.gw[k] * Sxh[k] + prm.gb[k] * D[0];
      softmax_over_backward(x11, S1, g, 1, dm1, 1);
      softmax_over_backward(x21, dm2, g, 1, dm2, 1);
      for (int64_t k = 0; k < g; ++k) {
        pgw[k] = x21[k] * Sxh[k];
        pgb[k] = x21[k] * D[0] + dm1[k];
      }
    }
    __syncthreads();
    // the strip sums of dz * x * (the other gate), times gate (1 - gate); dx2
    for (int64_t o = threadIdx.x; o < g * T; o += blockDim.x) {
      const int64_t k = o / T, t = o % T;
      const acc_t* gh = ga + k * T;
      const acc_t cz = rstd[k] * prm.gw[k] * x21[k], m = mu[k], r = rstd[k];
      const int64_t count = t < H ? W : H;
      acc_t sum = 0;
      for (int64_t q = 0; q < count; ++q) {
        const int64_t i = t < H ? t : q, j = t < H ? q : t - H;
        const acc_t xv = static_cast<acc_t>(x[s.x_at(n, k, i, j)]);
        const acc_t xhat = (xv * gh[i] * gh[H + j] - m) * r;
        const acc_t dz = cz * (dw[i * W + j] - D[0] * inv - xhat * Sxh[k] * inv);
        sum += dz * xv * (t < H ? gh[H + j] : gh[i]);
      }
      da[o] = sum * gh[t] * (acc_t(1) - gh[t]);
    }
    for (int64_t e = threadIdx.x; e < g * HW; e += blockDim.x) {
      const int64_t k = e / HW, p = e % HW;
      dx2[s.x2_at(n, k, p / W, p % W)] = static_cast<scalar_t>(x11[k] * dw[p] + dm2[k] * inv);
    }
    __syncthreads();
    // the 1x1 conv's backward: the strips' gradient and the weight's and bias's partials
    for (int64_t o = threadIdx.x; o < g * T; o += blockDim.x) {
      const int64_t m = o / T, t = o % T;
      acc_t sum = 0;
      for (int64_t k = 0; k < g; ++k) sum += prm.w1[k * g + m] * da[k * T + t];
      dst[o] = sum;
    }
    for (int64_t o = threadIdx.x; o < g * g + g; o += blockDim.x) {
      const int64_t k = o < g * g ? o / g : o - g * g, m = o % g;
      acc_t sum = 0;
      for (int64_t t = 0; t < T; ++t) sum += da[k * T + t] * (o < g * g ? st[m * T + t] : acc_t(1));
      if (o < g * g)
        pw1[o] = sum;
      else
        pb1[k] = sum;
    }
    __syncthreads();
    // dx = dy s + dz gh gw + dstrip_h / W + dstrip_w / H
    for (int64_t e = threadIdx.x; e < g * HW; e += blockDim.x) {
      const int64_t k = e / HW, p = e % HW, i = p / W, j = p % W;
      const acc_t* gh = ga + k * T;
      const int64_t o = s.x_at(n, k, i, j);
      const acc_t xhat = (static_cast<acc_t>(x[o]) * gh[i] * gh[H + j] - mu[k]) * rstd[k];
      const acc_t dz = rstd[k] * prm.gw[k] * x21[k] * (dw[p] - D[0] * inv - xhat * Sxh[k] * inv);
      dx[o] = static_cast<scalar_t>(static_cast<acc_t>(dy[o]) * sp[p] + dz * gh[i] * gh[H + j] +
                                    dst[k * T + i] / static_cast<acc_t>(W) +
                                    dst[k * T + H + j] / static_cast<acc_t>(H));
    }
  }
}

// ema_backward's outputs: dx, dx2 and the parameter gradients, each its own
// tensor (not views of one), from their concatenation (dw1, db1, dgn_w, dgn_b).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ema_parameter_grads(const at::Tensor& total, const at::Tensor& dx, const at::Tensor& dx2,
                    const at::Tensor& w1, int64_t g) {
  const auto part = [&](int64_t start, int64_t length) { return total.narrow(0, start, length).clone(); };
  return {dx, dx2, part(0, g * g).view(w1.sizes()), part(g * g, g), part(g * g + g, g),
          part(g * g + 2 * g, g)};
}

unsigned int ema_grid(int64_t N) {
  return static_cast<unsigned int>(std::min<int64_t>(N, AK_MAX_GRID_STRIDE_BLOCKS));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ema_forward_cuda(
    const at::Tensor& x, const at::Tensor& x2, const at::Tensor& w1,
    const c10::optional<at::Tensor>& b1, const c10::optional<at::Tensor>& gn_w,
    const c10::optional<at::Tensor>& gn_b, int64_t groups, double eps) {
  check_ema_inputs(x, x2, groups);
  AK_DEVICE_GUARD(x);
  const EmaGeom s = ema_geom(x, x2, groups);
  const EmaSmallParams prms = ema_small_params(x, w1, b1, gn_w, gn_b, s.g);
  const at::Tensor &w = prms.w1, &bias = prms.b1, &gw = prms.gn_w, &gb = prms.gn_b;
  at::Tensor y = empty_output_like(x);
  const std::vector<at::Tensor> saved = ema_empty_saved(x, groups);
  const at::Tensor &strips = saved[0], &gates = saved[1], &stats = saved[2], &smap = saved[3];
  if (x.numel() == 0) return {y, strips, gates, stats, smap};
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "ema_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EmaParams<acc_t> prm{w.data_ptr<acc_t>(), data_or_null<acc_t>(bias),
                               gw.data_ptr<acc_t>(), gb.data_ptr<acc_t>()};
    AK_LAUNCH(ema_grid(s.N), kEmaThreads, 0, stream, ema_forward_kernel<scalar_t, acc_t>)(
        s, x.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), prm, static_cast<acc_t>(eps),
        y.data_ptr<scalar_t>(), strips.data_ptr<acc_t>(), gates.data_ptr<acc_t>(),
        stats.data_ptr<acc_t>(), smap.data_ptr<acc_t>());
    AK_LAUNCH_CHECK();
  });
  return {y, strips, gates, stats, smap};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ema_backward_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& x2,
                  const at::Tensor& w1, const c10::optional<at::Tensor>& gn_w,
                  const c10::optional<at::Tensor>& gn_b, const at::Tensor& strips,
                  const at::Tensor& gates, const at::Tensor& stats, const at::Tensor& smap,
                  int64_t groups) {
  check_ema_backward(dy, x, x2, groups, {strips, gates, stats, smap});
  AK_DEVICE_GUARD(x);
  const EmaGeom s = ema_geom(x, x2, groups);
  const EmaSmallParams prms = ema_small_params(x, w1, c10::nullopt, gn_w, gn_b, s.g);
  const at::Tensor &w = prms.w1, &gw = prms.gn_w, &gb = prms.gn_b;
  const auto acc = x.options().dtype(accumulate_type(x));
  at::Tensor dx = empty_output_like(x);
  at::Tensor dx2 = at::empty_like(x2);
  const int64_t P = s.g * s.g + 3 * s.g;
  if (x.numel() == 0) return ema_parameter_grads(at::zeros({P}, acc), dx, dx2, w1, s.g);
  const EmaScratch layout{s.HW(), s.g, s.T()};
  at::Tensor scratch = at::empty({s.N, layout.size()}, acc);
  at::Tensor partials = at::empty({s.N, P}, acc);
  const cudaStream_t stream = AK_CURRENT_STREAM();
  AK_DISPATCH(x, "ema_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EmaParams<acc_t> prm{w.data_ptr<acc_t>(), nullptr, gw.data_ptr<acc_t>(),
                               gb.data_ptr<acc_t>()};
    AK_LAUNCH(ema_grid(s.N), kEmaThreads, 0, stream, ema_backward_kernel<scalar_t, acc_t>)(
        s, dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), prm,
        strips.data_ptr<acc_t>(), gates.data_ptr<acc_t>(), stats.data_ptr<acc_t>(),
        smap.data_ptr<acc_t>(), dx.data_ptr<scalar_t>(), dx2.data_ptr<scalar_t>(),
        scratch.data_ptr<acc_t>(), partials.data_ptr<acc_t>());
    AK_LAUNCH_CHECK();
  });
  return ema_parameter_grads(at::sum(partials, 0), dx, dx2, w1, s.g);  // the groups' partials
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, AK_DISPATCH_KEY, m) { AK_EMA_OPS(AK_IMPL, _cuda) }

}  // namespace attnkernels
