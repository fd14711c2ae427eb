// The gate networks' matrix products on the CPU (semantics in csrc/ops.cpp).
// MKL's sgemm cuts its work by the thread count, and on some CPUs its results
// change with it, even for a 12x7 by 7x24 product (seen on an AMD EPYC with
// MKL 2024.2, AVX2 kernels). Here the output's columns are cut into blocks of
// a fixed width and each block is one at::mm with BLAS held to one thread, so
// a product's bits depend on its shapes only, never on the thread count.
// K is cut too, into fixed chunks whose partial products add up in float64:
// one thread summing all K terms of an output in float32 rounded several
// times more than MKL's threads, which split K between them (at K = 4096,
// Coordinate Attention's strips over 4096 channels).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"

// MKL's per-thread thread count, its C entry point (mkl_service.h maps
// mkl_set_num_threads_local to it; the lowercase symbol is the Fortran one,
// which takes a pointer). libtorch_cpu exports it where torch was built with
// MKL. Weak: a torch without MKL leaves it null, and at::mm then runs
// single-threaded inside at::parallel_for's region anyway, unless that region
// has one task.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace attnkernels {
namespace {

constexpr int64_t kBlockCols = 64;
constexpr int64_t kChunk = 256;     // K terms per partial product, at least
constexpr int64_t kMaxChunks = 64;  // partial products per output, at most

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
  const int64_t blocks = ceil_div(N, kBlockCols);
  const int64_t chunk = std::max(kChunk, ceil_div(K, kMaxChunks)), chunks = ceil_div(K, chunk);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gate_matmul_cpu", [&] {
    at::parallel_for(0, B * blocks, 1, [&](int64_t t0, int64_t t1) {
      OneBlasThread one;
      std::vector<double> acc;
      at::Tensor part;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t s = t / blocks, n0 = (t % blocks) * kBlockCols;
        const int64_t width = std::min(kBlockCols, N - n0);
        const at::Tensor as = a.dim() == 3 ? a.select(0, s) : a;
        const at::Tensor bs = (b.dim() == 3 ? b.select(0, s) : b).narrow(1, n0, width);
        at::Tensor os = (batched ? out.select(0, s) : out).narrow(1, n0, width);
        if (chunks == 1) {
          at::cpu::mm_out(os, as, bs);  // the CPU kernel itself: no autograd, no redispatch
          continue;
        }
        acc.assign(M * width, 0.0);
        if (!part.defined() || part.size(1) != width) part = at::empty({M, width}, a.options());
        const scalar_t* p = part.data_ptr<scalar_t>();
        for (int64_t k0 = 0; k0 < K; k0 += chunk) {
          const int64_t len = std::min(chunk, K - k0);
          at::cpu::mm_out(part, as.narrow(1, k0, len), bs.narrow(0, k0, len));
          for (int64_t i = 0; i < M * width; ++i) acc[i] += static_cast<double>(p[i]);
        }
        scalar_t* o = os.data_ptr<scalar_t>();  // row stride N
        for (int64_t m = 0; m < M; ++m)
          for (int64_t j = 0; j < width; ++j) o[m * N + j] = static_cast<scalar_t>(acc[m * width + j]);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(attnkernels, CPU, m) { m.impl("gate_matmul", &gate_matmul_cpu); }

}  // namespace attnkernels
