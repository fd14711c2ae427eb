// The gate networks' small convolutions on the CPU (semantics in csrc/ops.cpp):
// a same-padded, stride-1 kxk conv between few channels (CBAM's and Triplet's
// 2 -> 1 maps, and its input gradient 1 -> 2), and its weight gradient.
// oneDNN runs these one-output-channel convs at a fraction of its speed
// (31 ns per output of a 7x7 2 -> 1 conv on 2048x7 planes here); these
// kernels work on tiles of a zero-padded copy of the input, vectorised along
// the columns, so callers give them planes with the longer side as columns.
// Every output is formed by one task in a fixed order: results do not depend
// on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/checks.h"
#include "isa.h"

namespace attnkernels {
namespace {


void check_conv_args(const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK(input.dim() == 4 && input.is_contiguous(),
              "input must be a contiguous (N, C_in, rows, cols) tensor, got ", input.sizes(), " ",
              input.strides());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous() && weight.size(1) == input.size(1) &&
                  weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1,
              "weight must be a contiguous (C_out, ", input.size(1),
              ", k, k) tensor with k odd, got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "weight must be ",
              input.scalar_type(), " like input, got ", weight.scalar_type());
  check_same_device(input, weight, "weight");
}

// out[n, o] = sum_i conv(in[n, i], w[o, i]), zero padding k / 2, in double:
// without FMA (baseline x86-64) fp32 sums of k * k * C_in products round twice
// per term, and the gate's BatchNorm gradients showed it against PyTorch's
// conv. A task is a tile of kTileRows x kTileCols outputs of one sample, every
// output channel: its input rows are read once into a zero-padded double
// buffer (so the taps need no bounds checks), and the outputs are summed in
// registers, a chunk of columns at a time, over every tap in the order (ci,
// ky, kx). Every output is that same sum whatever the chunk width or the
// instruction set, so the results do not depend on either.
constexpr int64_t kTileRows = 8;
constexpr int64_t kTileCols = 256;

// Vectors of doubles of the width the instruction set holds in one register:
// a wider generic vector is split badly on SSE2.
template <int kLanes>
struct DoubleVec;
template <>
struct DoubleVec<2> {
  typedef double type __attribute__((vector_size(16)));
};
template <>
struct DoubleVec<4> {
  typedef double type __attribute__((vector_size(32)));
};

struct ConvTile {
  int64_t CI, CO, k;     // channels and kernel size
  int64_t rows, cols;    // the outputs of this tile
  int64_t buf_rows, buf_cols;  // rows + k - 1, cols + k - 1
};

// The tile's inputs: buf[ci][r][c] = in[n, ci, y0 + r - p, x0 + c - p], zero
// outside the plane.
template <typename T>
void fill_tile(const T* in, int64_t R, int64_t S, int64_t p, int64_t y0, int64_t x0,
               const ConvTile& t, double* buf) {
  for (int64_t ci = 0; ci < t.CI; ++ci)
    for (int64_t r = 0; r < t.buf_rows; ++r) {
      double* dst = buf + (ci * t.buf_rows + r) * t.buf_cols;
      const int64_t src_r = y0 + r - p;
      if (src_r < 0 || src_r >= R) {
        std::fill(dst, dst + t.buf_cols, 0.0);
        continue;
      }
      // columns c of the plane's [0, S): c0 <= c < c1
      const int64_t c0 = std::min(t.buf_cols, std::max<int64_t>(0, p - x0));
      const int64_t c1 = std::max(c0, std::min(t.buf_cols, S - x0 + p));
      const T* src = in + (ci * R + src_r) * S + x0 - p;
      std::fill(dst, dst + c0, 0.0);
      for (int64_t c = c0; c < c1; ++c) dst[c] = static_cast<double>(src[c]);
      std::fill(dst + c1, dst + t.buf_cols, 0.0);
    }
}

// The output tiles of an (N, CI, R, S) input: tasks of kTileRows x kTileCols
// outputs of one sample, numbered sample-major.
struct Tiling {
  int64_t R, S, row_tiles, col_tiles, tasks;
  explicit Tiling(const at::Tensor& input)
      : R(input.size(2)), S(input.size(3)), row_tiles((R + kTileRows - 1) / kTileRows),
        col_tiles((S + kTileCols - 1) / kTileCols), tasks(input.size(0) * row_tiles * col_tiles) {}
};

// Runs body(task, n, y0, x0, tile, buf) for every tile, in parallel, with buf
// holding the tile's inputs (fill_tile) for a k x k kernel with CO outputs.
template <typename T, typename Body>
void for_each_tile(const at::Tensor& input, const Tiling& g, int64_t CO, int64_t k,
                   const Body& body) {
  const int64_t CI = input.size(1), R = g.R, S = g.S;
  const T* in = input.data_ptr<T>();
  at::parallel_for(0, g.tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<double> buf(CI * (kTileRows + k - 1) * (std::min(S, kTileCols) + k - 1));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t n = task / (g.row_tiles * g.col_tiles);
      const int64_t y0 = (task / g.col_tiles) % g.row_tiles * kTileRows;
      const int64_t x0 = task % g.col_tiles * kTileCols;
      ConvTile t{CI, CO, k, std::min(kTileRows, R - y0), std::min(kTileCols, S - x0), 0, 0};
      t.buf_rows = t.rows + k - 1;
      t.buf_cols = t.cols + k - 1;
      fill_tile(in + n * CI * R * S, R, S, k / 2, y0, x0, t, buf.data());
      body(task, n, y0, x0, t, buf.data());
    }
  });
}

// Outputs [x, x + L * kVecs) of tile row y into out_row: kVecs vectors of L
// sums held in registers over every tap, in order. K: the kernel size when
// known at compile time (the kx loop unrolls), else 0.
template <int L, int kVecs, int K, typename T>
ATTNKERNELS_INLINE void conv_chunk(const double* __restrict__ buf, const double* __restrict__ w,
                                   const ConvTile& t, int64_t y, int64_t x,
                                   T* __restrict__ out_row) {
  typedef typename DoubleVec<L>::type V;
  const int64_t k = K ? K : t.k;
  V acc[kVecs];
  for (int j = 0; j < kVecs; ++j) acc[j] = V{};
  for (int64_t ci = 0; ci < t.CI; ++ci)
    for (int64_t ky = 0; ky < k; ++ky) {
      const double* src = buf + (ci * t.buf_rows + y + ky) * t.buf_cols + x;
      const double* wk = w + (ci * k + ky) * k;
      for (int64_t kx = 0; kx < k; ++kx) {
        const V wv = V{} + wk[kx];
        for (int j = 0; j < kVecs; ++j) {
          V v;
          std::memcpy(&v, src + kx + L * j, sizeof v);
          acc[j] += wv * v;
        }
      }
    }
  for (int j = 0; j < kVecs; ++j)
    for (int l = 0; l < L; ++l) out_row[x + L * j + l] = static_cast<T>(acc[j][l]);
}

// The tile's outputs of output channel co (w: its CI x k x k weights) from
// buf, into out (row stride S). The register chunk: kVecs vectors of L
// columns.
template <int L, int kVecs, int K, typename T>
ATTNKERNELS_INLINE void conv_tile_k(const double* buf, const double* w, const ConvTile& t,
                                    T* out, int64_t S) {
  for (int64_t y = 0; y < t.rows; ++y) {
    T* out_row = out + y * S;
    int64_t x = 0;
    for (; x + L * kVecs <= t.cols; x += L * kVecs)
      conv_chunk<L, kVecs, K>(buf, w, t, y, x, out_row);
    // then half and quarter chunks: a vector of sums alone waits on its
    // additions' latency (a row of 56 columns at AVX2's 4 lanes: 32, then
    // 16 + 8 instead of six single vectors)
    if constexpr (kVecs >= 4)
      for (; x + L * (kVecs / 2) <= t.cols; x += L * (kVecs / 2))
        conv_chunk<L, kVecs / 2, K>(buf, w, t, y, x, out_row);
    if constexpr (kVecs >= 8)
      for (; x + L * (kVecs / 4) <= t.cols; x += L * (kVecs / 4))
        conv_chunk<L, kVecs / 4, K>(buf, w, t, y, x, out_row);
    for (; x + L <= t.cols; x += L) conv_chunk<L, 1, K>(buf, w, t, y, x, out_row);
    for (; x < t.cols; ++x) {  // the last columns one by one, the same sums
      double s = 0;
      for (int64_t ci = 0; ci < t.CI; ++ci)
        for (int64_t ky = 0; ky < t.k; ++ky)
          for (int64_t kx = 0; kx < t.k; ++kx)
            s += w[(ci * t.k + ky) * t.k + kx] *
                 buf[(ci * t.buf_rows + y + ky) * t.buf_cols + x + kx];
      out_row[x] = static_cast<T>(s);
    }
  }
}

// conv_tile_k for the gates' kernel sizes 7 and 3, and any other.
template <int L, int kVecs, typename T>
ATTNKERNELS_INLINE void conv_tile(const double* buf, const double* w, const ConvTile& t,
                                  T* out, int64_t S) {
  if (t.k == 7)
    conv_tile_k<L, kVecs, 7>(buf, w, t, out, S);
  else if (t.k == 3)
    conv_tile_k<L, kVecs, 3>(buf, w, t, out, S);
  else
    conv_tile_k<L, kVecs, 0>(buf, w, t, out, S);
}

template <typename T>
void conv_tile_baseline(const double* buf, const double* w, const ConvTile& t, T* out,
                        int64_t S) {
  conv_tile<2, 8>(buf, w, t, out, S);
}

#if ATTNKERNELS_HAVE_AVX2_CLONES
template <typename T>
ATTNKERNELS_TARGET_AVX2 void conv_tile_avx2(const double* buf, const double* w,
                                            const ConvTile& t, T* out, int64_t S) {
  conv_tile<4, 8>(buf, w, t, out, S);
}
#endif

template <typename T>
void conv_kernel(const at::Tensor& input, const at::Tensor& weight, at::Tensor& out) {
  const Tiling tiling(input);
  const int64_t CI = input.size(1), R = tiling.R, S = tiling.S;
  const int64_t CO = weight.size(0), k = weight.size(2);
  T* o = out.data_ptr<T>();
  const T* w_in = weight.data_ptr<T>();
  const std::vector<double> w64(w_in, w_in + CO * CI * k * k);
  const double* w = w64.data();
  const bool avx2 = use_avx2();
  for_each_tile<T>(input, tiling, CO, k,
                   [&](int64_t, int64_t n, int64_t y0, int64_t x0, const ConvTile& t,
                       const double* buf) {
    for (int64_t co = 0; co < CO; ++co) {
      T* out_tile = o + ((n * CO + co) * R + y0) * S + x0;
      const double* w_co = w + co * CI * k * k;
#if ATTNKERNELS_HAVE_AVX2_CLONES
      if (avx2) {
        conv_tile_avx2(buf, w_co, t, out_tile, S);
        continue;
      }
#endif
      conv_tile_baseline(buf, w_co, t, out_tile, S);
    }
  });
  (void)avx2;
}

// dw[o, i, ky, kx] = sum_{n, y, x} grad[n, o, y, x] * in[n, i, y + ky - p, x + kx - p].
// A task is a tile of kTileRows x kTileCols positions (y, x) of one sample,
// its inputs read once into the conv's zero-padded double buffer. Per task and
// tap the products are summed in double, in kWgLanes lanes (x mod 4) over the
// tile's rows in order, the lanes then as (l0 + l1) + (l2 + l3), plus the last
// cols % 4 columns; dw is the sum of the tasks' partial sums in task order.
// The same sums whatever the instruction set. Rows of zero padding are
// skipped; columns of it are multiplied like any input (as PyTorch's im2col
// weight gradient does), so a non-finite gradient at a plane's left or right
// edge reaches every tap of its rows.
constexpr int kWgLanes = 4;

// taps[j] for kx = kx0 + j, j < KW, of input channel ci and row ky, from the
// tile's buffer and g (the tile's gradient rows of one output channel, row
// stride S), over the tile rows [y_lo, y_hi) whose input row is in the plane.
template <int L, int KW, typename T>
ATTNKERNELS_INLINE void weight_grad_taps(const double* __restrict__ buf,
                                         const T* __restrict__ g, const ConvTile& t, int64_t S,
                                         int64_t ci, int64_t ky, int64_t kx0, int64_t y_lo,
                                         int64_t y_hi, double* __restrict__ taps) {
  typedef typename DoubleVec<L>::type V;
  constexpr int H = kWgLanes / L;  // vectors per lane group
  V acc[KW][H];
  for (int j = 0; j < KW; ++j)
    for (int h = 0; h < H; ++h) acc[j][h] = V{};
  double tail[KW] = {};
  const int64_t cols4 = t.cols / kWgLanes * kWgLanes;
  for (int64_t y = y_lo; y < y_hi; ++y) {
    const T* gr = g + y * S;
    const double* br = buf + (ci * t.buf_rows + y + ky) * t.buf_cols + kx0;
    for (int64_t x = 0; x < cols4; x += kWgLanes) {
      double gd[kWgLanes];
      for (int l = 0; l < kWgLanes; ++l) gd[l] = static_cast<double>(gr[x + l]);
      V gv[H];
      std::memcpy(gv, gd, sizeof gd);
      for (int j = 0; j < KW; ++j)
        for (int h = 0; h < H; ++h) {
          V v;
          std::memcpy(&v, br + x + j + L * h, sizeof v);
          acc[j][h] += gv[h] * v;
        }
    }
    for (int64_t x = cols4; x < t.cols; ++x)
      for (int j = 0; j < KW; ++j) tail[j] += static_cast<double>(gr[x]) * br[x + j];
  }
  for (int j = 0; j < KW; ++j) {
    double l[kWgLanes];
    std::memcpy(l, acc[j], sizeof l);
    taps[j] = ((l[0] + l[1]) + (l[2] + l[3])) + tail[j];
  }
}

// The tile's partial sums of every tap (partial: CO x CI x k x k) from its
// buffer and g (grad at (n, 0, y0, x0), plane R x S).
template <int L, typename T>
ATTNKERNELS_INLINE void weight_grad_tile(const double* buf, const T* g, const ConvTile& t,
                                         int64_t R, int64_t S, int64_t y0, double* partial) {
  const int64_t k = t.k, p = k / 2;
  for (int64_t co = 0; co < t.CO; ++co)
    for (int64_t ci = 0; ci < t.CI; ++ci)
      for (int64_t ky = 0; ky < k; ++ky) {
        // tile row y reads plane row y0 + y + ky - p: the padding rows add nothing
        const int64_t y_lo = std::min(t.rows, std::max<int64_t>(0, p - ky - y0));
        const int64_t y_hi = std::max(y_lo, std::min(t.rows, R + p - ky - y0));
        const T* g_co = g + co * R * S;
        double* taps = partial + ((co * t.CI + ci) * k + ky) * k;
        if (k == 7)
          weight_grad_taps<L, 7>(buf, g_co, t, S, ci, ky, 0, y_lo, y_hi, taps);
        else if (k == 3)
          weight_grad_taps<L, 3>(buf, g_co, t, S, ci, ky, 0, y_lo, y_hi, taps);
        else
          for (int64_t kx = 0; kx < k; ++kx)
            weight_grad_taps<L, 1>(buf, g_co, t, S, ci, ky, kx, y_lo, y_hi, taps + kx);
      }
}

template <typename T>
void weight_grad_tile_baseline(const double* buf, const T* g, const ConvTile& t, int64_t R,
                               int64_t S, int64_t y0, double* partial) {
  weight_grad_tile<2>(buf, g, t, R, S, y0, partial);
}

#if ATTNKERNELS_HAVE_AVX2_CLONES
template <typename T>
ATTNKERNELS_TARGET_AVX2 void weight_grad_tile_avx2(const double* buf, const T* g,
                                                   const ConvTile& t, int64_t R, int64_t S,
                                                   int64_t y0, double* partial) {
  weight_grad_tile<4>(buf, g, t, R, S, y0, partial);
}
#endif

template <typename T>
void weight_grad_kernel(const at::Tensor& grad, const at::Tensor& input, at::Tensor& dw) {
  const Tiling tiling(input);
  const int64_t CI = input.size(1), R = tiling.R, S = tiling.S;
  const int64_t CO = dw.size(0), k = dw.size(2), taps = CO * CI * k * k, tasks = tiling.tasks;
  const T* g = grad.data_ptr<T>();
  std::vector<double> partials(tasks * taps);
  const bool avx2 = use_avx2();
  for_each_tile<T>(input, tiling, CO, k,
                   [&](int64_t task, int64_t n, int64_t y0, int64_t x0, const ConvTile& t,
                       const double* buf) {
    const T* g_tile = g + (n * CO * R + y0) * S + x0;
    double* partial = partials.data() + task * taps;
#if ATTNKERNELS_HAVE_AVX2_CLONES
    if (avx2) {
      weight_grad_tile_avx2(buf, g_tile, t, R, S, y0, partial);
      return;
    }
#endif
    weight_grad_tile_baseline(buf, g_tile, t, R, S, y0, partial);
  });
  (void)avx2;
  T* d = dw.data_ptr<T>();
  for (int64_t tap = 0; tap < taps; ++tap) {
    double total = 0;
    for (int64_t task = 0; task < tasks; ++task) total += partials[task * taps + tap];
    d[tap] = static_cast<T>(total);
  }
}

at::Tensor gate_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight) {
  check_conv_args(input, weight);
  at::Tensor out = at::empty({input.size(0), weight.size(0), input.size(2), input.size(3)},
                             input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gate_conv2d_cpu",
                             [&] { conv_kernel<scalar_t>(input, weight, out); });
  return out;
}

at::Tensor gate_conv2d_weight_grad_cpu(const at::Tensor& grad, const at::Tensor& input,
                                       int64_t kernel_size) {
  TORCH_CHECK(kernel_size > 0 && kernel_size % 2 == 1, "kernel_size must be odd, got ",
              kernel_size);
  const at::Tensor probe = at::empty({1, input.size(1), kernel_size, kernel_size},
                                     input.options());
  check_conv_args(input, probe);
  TORCH_CHECK(grad.dim() == 4 && grad.is_contiguous() && grad.size(0) == input.size(0) &&
                  grad.size(2) == input.size(2) && grad.size(3) == input.size(3) &&
                  grad.scalar_type() == input.scalar_type(),
              "grad must be a contiguous (N, C_out, rows, cols) ", input.scalar_type(),
              " tensor matching input ", input.sizes(), ", got ", grad.sizes());
  at::Tensor dw = at::zeros({grad.size(1), input.size(1), kernel_size, kernel_size},
                            input.options());
  if (input.numel() == 0) return dw;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gate_conv2d_weight_grad_cpu",
                             [&] { weight_grad_kernel<scalar_t>(grad, input, dw); });
  return dw;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) {
  m.impl("gate_conv2d", &gate_conv2d_cpu);
  m.impl("gate_conv2d_weight_grad", &gate_conv2d_weight_grad_cpu);
}

}  // namespace attnkernels
