// The gate networks' matrix products on the CPU (semantics in csrc/ops.cpp).
// MKL's sgemm cuts its work by the thread count, and on some CPUs its results
// change with it, even for a 12x7 by 7x24 product (seen on an AMD EPYC with
// MKL 2024.2, AVX2 kernels). Here each product is cut into tiles of a fixed
// size (rows x columns x a chunk of K), each tile one BLAS gemm held to one
// thread, so a product's bits depend on its shapes only, never on the
// thread count. The K chunks' partial products add up in float64: one thread
// summing all K terms of an output in float32 rounded several times more than
// MKL's threads, which split K between them (at K = 4096, Coordinate
// Attention's strips over 4096 channels). A shared 2-D operand makes a batch
// of narrow products one product: Coordinate Attention's 1x1 convs over
// strips of 7 columns per sample ran at a tenth of BLAS speed one by one.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <type_traits>
#include <vector>

#include "../common/checks.h"

// MKL's per-thread thread count, its C entry point (mkl_service.h maps
// mkl_set_num_threads_local to it; the lowercase symbol is the Fortran one,
// which takes a pointer). libtorch_cpu exports it where torch was built with
// MKL. Weak: a torch without MKL leaves it null, and at::mm then runs
// single-threaded inside at::parallel_for's region anyway, unless that region
// has one task.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

// BLAS's own gemm, the Fortran interface with 32-bit ints that PyTorch's
// BlasKernel.cpp declares too, exported by libtorch_cpu where torch was built
// with MKL: a tile costs one call and no tensor views (the views of a tile
// cost microseconds, as much as the product of an 8 x 256 by 256 x 64 tile).
// Weak: a torch without them leaves them null, and the tiles go through
// at::cpu::mm_out.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));
extern "C" void dgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const double* alpha, const double* a, const int* lda,
                       const double* b, const int* ldb, const double* beta, double* c,
                       const int* ldc) __attribute__((weak));

namespace attnkernels {
namespace {

constexpr int64_t kBlockRows = 256;
constexpr int64_t kBlockCols = 64;
constexpr int64_t kChunk = 256;     // K terms per partial product, at least
constexpr int64_t kMaxChunks = 64;  // partial products per output, at most
// A batch with a shared 2-D a and fewer columns than this per product is one
// product, b's columns side by side: MKL ran (2048 x 64) @ (64 x 7) at 2
// GFLOP/s. Wider ones are not: the copies in and out cost more than they gain.
constexpr int64_t kFoldBelow = 32;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Holds BLAS to one thread on this thread while alive.
class OneBlasThread {
 public:
  OneBlasThread() : previous_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~OneBlasThread() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int previous_;  // 0: MKL's global setting
};

// The sanitizer build (tools/sanitize.sh) takes the at::cpu::mm_out path
// even where BLAS's symbols exist, so that path runs under its tests too.
#ifdef ATTNKERNELS_PORTABLE_GEMM
constexpr bool kPortableGemm = true;
#else
constexpr bool kPortableGemm = false;
#endif

template <typename scalar_t>
bool blas_gemm();
template <>
bool blas_gemm<float>() { return !kPortableGemm && sgemm_ != nullptr; }
template <>
bool blas_gemm<double>() { return !kPortableGemm && dgemm_ != nullptr; }

// How BLAS reads a (r x c) matrix with strides (sr, sc) in place: by rows
// ("N" for its transpose in column-major terms) or by columns ("T"), with
// leading dimension ld; ld 0: neither works. A dimension of size 1 takes any
// stride (a transposed (1, n) matrix, or a (24, 1) slice with strides (1, 12),
// is still readable), and BLAS wants ld at least the other size.
struct BlasLayout {
  bool by_rows;
  int64_t ld;
};
BlasLayout blas_layout(int64_t r, int64_t c, int64_t sr, int64_t sc) {
  if ((c == 1 || sc == 1) && (r == 1 || sr >= std::max<int64_t>(1, c)))
    return {true, r == 1 ? std::max<int64_t>(1, c) : sr};
  if ((r == 1 || sr == 1) && (c == 1 || sc >= std::max<int64_t>(1, r)))
    return {false, c == 1 ? std::max<int64_t>(1, r) : sc};
  return {true, 0};
}
BlasLayout blas_layout(const at::Tensor& t) {  // of every t[s]
  return blas_layout(t.size(1), t.size(2), t.stride(1), t.stride(2));
}

// A view of t that BLAS reads in place: t itself where its strides allow, or
// a contiguous copy, of one matrix only where t repeats it (stride 0 over the
// batch, a shared a expanded), not of every repetition.
at::Tensor blas_readable(const at::Tensor& t) {
  if (blas_layout(t).ld) return t;
  if (t.stride(0) == 0) return t.select(0, 0).contiguous().unsqueeze(0).expand(t.sizes());
  return t.contiguous();
}

// The (rows x len) @ (len x cols) tile of a[s] @ b[s] at (m0, k0) and (k0, n0),
// written to c (row stride ldc), by one BLAS gemm. BLAS is column-major: it
// computes c^T = b^T a^T, each operand as stored ("N") or transposed ("T").
template <typename scalar_t>
void gemm_tile(const at::Tensor& a, const at::Tensor& b, int64_t s, int64_t m0, int64_t n0,
               int64_t k0, int64_t rows, int64_t cols, int64_t len, scalar_t* c, int64_t ldc) {
  const scalar_t* ap = a.data_ptr<scalar_t>() + s * a.stride(0) + m0 * a.stride(1) + k0 * a.stride(2);
  const scalar_t* bp = b.data_ptr<scalar_t>() + s * b.stride(0) + k0 * b.stride(1) + n0 * b.stride(2);
  const BlasLayout la = blas_layout(a), lb = blas_layout(b);
  const char tb = lb.by_rows ? 'N' : 'T', ta = la.by_rows ? 'N' : 'T';
  const int m = static_cast<int>(cols), n = static_cast<int>(rows), k = static_cast<int>(len);
  const int ldb = static_cast<int>(lb.ld), lda = static_cast<int>(la.ld);
  const int ldo = static_cast<int>(ldc);
  const scalar_t one = 1, zero = 0;
  if constexpr (std::is_same_v<scalar_t, float>)
    sgemm_(&tb, &ta, &m, &n, &k, &one, bp, &ldb, ap, &lda, &zero, c, &ldo);
  else
    dgemm_(&tb, &ta, &m, &n, &k, &one, bp, &ldb, ap, &lda, &zero, c, &ldo);
}

// Where tile t of an (M, N) product lies: rows [m0, m0 + rows), columns
// [n0, n0 + cols).
struct Tile {
  int64_t m0, n0, rows, cols;
};
Tile tile_at(int64_t t, int64_t M, int64_t N) {
  const int64_t col_blocks = ceil_div(N, kBlockCols);
  const int64_t m0 = t / col_blocks * kBlockRows, n0 = t % col_blocks * kBlockCols;
  return {m0, n0, std::min(kBlockRows, M - m0), std::min(kBlockCols, N - n0)};
}

// out[s] = a[s] @ b[s] for s < B (a, b: (B, M, K), (B, K, N), any strides;
// out: contiguous (B, M, N)), in tiles of kBlockRows rows x kBlockCols
// columns of one product. Each chunk of K is one product of a tile: with one
// chunk it is the tile's result; with several the partial products are
// summed in chunk order in float64. A task is a tile, or, when there are
// fewer tiles than threads, one chunk of a tile (its partial product kept,
// the sums then a second pass): the same products and sums either way.
template <typename scalar_t>
void batched_product(const at::Tensor& a_in, const at::Tensor& b_in, at::Tensor& out) {
  const int64_t B = a_in.size(0), M = a_in.size(1), K = a_in.size(2), N = b_in.size(2);
  const bool use_blas = blas_gemm<scalar_t>() &&
                        std::max({M, N, K, a_in.stride(1), a_in.stride(2), b_in.stride(1),
                                  b_in.stride(2)}) < INT_MAX;
  const at::Tensor a = use_blas ? blas_readable(a_in) : a_in;
  const at::Tensor b = use_blas ? blas_readable(b_in) : b_in;
  const int64_t tiles = ceil_div(M, kBlockRows) * ceil_div(N, kBlockCols);
  const int64_t chunk = std::max(kChunk, ceil_div(K, kMaxChunks)), chunks = ceil_div(K, chunk);
  const bool split_k = chunks > 1 && B * tiles < at::get_num_threads();
  // the product of chunk c of tile `tile` of a[s] and b[s], written to dst
  // (row stride ldc)
  auto tile_product = [&](scalar_t* dst, int64_t ldc, int64_t s, const Tile& tile, int64_t c) {
    const int64_t k0 = c * chunk, len = std::min(chunk, K - k0);
    if (use_blas) {
      gemm_tile(a, b, s, tile.m0, tile.n0, k0, tile.rows, tile.cols, len, dst, ldc);
      return;
    }
    at::Tensor d = at::from_blob(dst, {tile.rows, tile.cols}, {ldc, 1}, out.options());
    // the CPU kernel itself: no autograd, no redispatch
    at::cpu::mm_out(d, a.select(0, s).narrow(0, tile.m0, tile.rows).narrow(1, k0, len),
                    b.select(0, s).narrow(0, k0, len).narrow(1, tile.n0, tile.cols));
  };
  scalar_t* o = out.data_ptr<scalar_t>();
  if (!split_k) {
    at::parallel_for(0, B * tiles, 1, [&](int64_t t0, int64_t t1) {
      OneBlasThread one;
      at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: the workers' too
      std::vector<scalar_t> part;
      std::vector<double> acc;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t s = t / tiles;
        const Tile tile = tile_at(t % tiles, M, N);
        scalar_t* dst = o + (s * M + tile.m0) * N + tile.n0;
        if (chunks == 1) {
          tile_product(dst, N, s, tile, 0);
          continue;
        }
        part.resize(tile.rows * tile.cols);
        acc.assign(tile.rows * tile.cols, 0.0);
        for (int64_t c = 0; c < chunks; ++c) {
          tile_product(part.data(), tile.cols, s, tile, c);
          for (size_t i = 0; i < acc.size(); ++i) acc[i] += static_cast<double>(part[i]);
        }
        for (int64_t i = 0; i < tile.rows; ++i)
          for (int64_t j = 0; j < tile.cols; ++j)
            dst[i * N + j] = static_cast<scalar_t>(acc[i * tile.cols + j]);
      }
    });
    return;
  }
  at::Tensor partials = at::empty({B, chunks, M, N}, out.options());
  scalar_t* p = partials.data_ptr<scalar_t>();
  at::parallel_for(0, B * tiles * chunks, 1, [&](int64_t t0, int64_t t1) {
    OneBlasThread one;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t s = t / (tiles * chunks), c = t % chunks;
      const Tile tile = tile_at(t / chunks % tiles, M, N);
      tile_product(p + ((s * chunks + c) * M + tile.m0) * N + tile.n0, N, s, tile, c);
    }
  });
  const int64_t grain = std::max<int64_t>(1, 4096 / (N * chunks));  // small sums: no threads
  at::parallel_for(0, B * M, grain, [&](int64_t r0, int64_t r1) {
    std::vector<double> acc(N);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = r / M, m = r % M;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c = 0; c < chunks; ++c) {
        const scalar_t* row = p + ((s * chunks + c) * M + m) * N;
        for (int64_t j = 0; j < N; ++j) acc[j] += static_cast<double>(row[j]);
      }
      for (int64_t j = 0; j < N; ++j) o[r * N + j] = static_cast<scalar_t>(acc[j]);
    }
  });
}

at::Tensor gate_matmul_cpu(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3),
              "a and b must be 2-D or 3-D (batched), got ", a.dim(), "-D and ", b.dim(), "-D");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble),
              "a and b must both be float32 or both float64, got ", a.scalar_type(), " and ",
              b.scalar_type());
  check_same_device(a, b, "b");
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // the views below record nothing
  const bool batched = a.dim() == 3 || b.dim() == 3;
  const int64_t B = a.dim() == 3 ? a.size(0) : (b.dim() == 3 ? b.size(0) : 1);
  TORCH_CHECK(a.dim() == 2 || b.dim() == 2 || a.size(0) == b.size(0),
              "batch sizes differ: ", a.size(0), " and ", b.size(0));
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  TORCH_CHECK(b.size(-2) == K, "a (..., ", M, ", ", K, ") and b (..., ", b.size(-2), ", ", N,
              ") cannot be multiplied");
  at::Tensor out = batched ? at::empty({B, M, N}, a.options()) : at::empty({M, N}, a.options());
  if (out.numel() == 0) return out;
  if (K == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gate_matmul_cpu", [&] {
    if (a.dim() == 3 && b.dim() == 3) {
      batched_product<scalar_t>(a, b, out);
    } else if (b.dim() == 3 && N >= kFoldBelow) {
      batched_product<scalar_t>(a.unsqueeze(0).expand({B, M, K}), b, out);
    } else if (b.dim() == 3) {
      // a @ [b[0] ... b[B-1]]: b's columns side by side (a copy of b), one product
      at::Tensor wide = at::empty({1, M, B * N}, a.options());
      batched_product<scalar_t>(a.unsqueeze(0), b.permute({1, 0, 2}).reshape({1, K, B * N}),
                                wide);
      out.copy_(wide.view({M, B, N}).permute({1, 0, 2}));
    } else if (a.dim() == 3) {
      // [a[0]; ...; a[B-1]] @ b: a's rows stacked (a view where a's strides allow)
      at::Tensor tall = out.view({1, B * M, N});
      batched_product<scalar_t>(a.reshape({1, B * M, K}), b.unsqueeze(0), tall);
    } else {
      at::Tensor flat = out.unsqueeze(0);
      batched_product<scalar_t>(a.unsqueeze(0), b.unsqueeze(0), flat);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { m.impl("gate_matmul", &gate_matmul_cpu); }

}  // namespace attnkernels
