// The gate networks' small convolutions on the CPU (semantics in csrc/ops.cpp):
// a same-padded, stride-1 kxk conv between few channels (CBAM's and Triplet's
// 2 -> 1 maps, and its input gradient 1 -> 2), and its weight gradient.
// oneDNN runs these one-output-channel convs at a fraction of its speed
// (31 ns per output of a 7x7 2 -> 1 conv on 2048x7 planes here); these loops
// are plain row axpys and dot products that the compiler vectorises along the
// columns, so callers give them planes with the longer side as columns.
// Every output is formed by one task in a fixed order: results do not depend
// on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"

namespace attnkernels {
namespace {

constexpr int kLanes = 16;  // independent partial sums of a dot product

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

// out[n, o] = sum_i conv(in[n, i], w[o, i]), zero padding k / 2: one task per
// output row, kxk axpys of the input rows into it, in double: without FMA
// (baseline x86-64) fp32 sums of k * k * C_in products round twice per term,
// and the gate's BatchNorm gradients showed it against PyTorch's conv.
template <typename T>
void conv_kernel(const at::Tensor& input, const at::Tensor& weight, at::Tensor& out) {
  const int64_t N = input.size(0), CI = input.size(1), R = input.size(2), S = input.size(3);
  const int64_t CO = weight.size(0), k = weight.size(2), p = k / 2;
  const T* in = input.data_ptr<T>();
  const T* w = weight.data_ptr<T>();
  T* o = out.data_ptr<T>();
  at::parallel_for(0, N * CO * R, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, S * k)),
                   [&](int64_t t0, int64_t t1) {
    std::vector<double> row_acc(S);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t y = t % R, n = t / (CO * R), co = (t / R) % CO;
      double* __restrict__ acc = row_acc.data();
      std::fill(acc, acc + S, 0.0);
      for (int64_t ci = 0; ci < CI; ++ci)
        for (int64_t ky = 0; ky < k; ++ky) {
          const int64_t r = y + ky - p;
          if (r < 0 || r >= R) continue;
          const T* __restrict__ row = in + ((n * CI + ci) * R + r) * S;
          const T* wk = w + ((co * CI + ci) * k + ky) * k;
          for (int64_t kx = 0; kx < k; ++kx) {
            const double wv = wk[kx];
            const int64_t shift = kx - p;  // acc[x] += wv * row[x + shift]
            const int64_t x0 = std::max<int64_t>(0, -shift), x1 = std::min(S, S - shift);
            for (int64_t x = x0; x < x1; ++x) acc[x] += wv * static_cast<double>(row[x + shift]);
          }
        }
      T* __restrict__ out_row = o + t * S;
      for (int64_t x = 0; x < S; ++x) out_row[x] = static_cast<T>(acc[x]);
    }
  });
}

// dw[o, i, ky, kx] = sum_{n, y, x} grad[n, o, y, x] * in[n, i, y + ky - p, x + kx - p]:
// one task per weight tap, its sum over (n, y) rows in order (in double for
// float: there are N * rows of them), each row's dot product in kLanes lanes.
template <typename T>
void weight_grad_kernel(const at::Tensor& grad, const at::Tensor& input, at::Tensor& dw) {
  const int64_t N = input.size(0), CI = input.size(1), R = input.size(2), S = input.size(3);
  const int64_t CO = dw.size(0), k = dw.size(2), p = k / 2;
  const T* g = grad.data_ptr<T>();
  const T* in = input.data_ptr<T>();
  T* d = dw.data_ptr<T>();
  at::parallel_for(0, CO * CI * k * k, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t kx = t % k, ky = (t / k) % k, ci = (t / (k * k)) % CI, co = t / (CI * k * k);
      const int64_t shift = kx - p, x0 = std::max<int64_t>(0, -shift),
                    x1 = std::min(S, S - shift);
      double total = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t y = 0; y < R; ++y) {
          const int64_t r = y + ky - p;
          if (r < 0 || r >= R) continue;
          const T* __restrict__ gr = g + ((n * CO + co) * R + y) * S;
          const T* __restrict__ row = in + ((n * CI + ci) * R + r) * S;
          T lane[kLanes] = {};
          int64_t x = x0;
          for (; x + kLanes <= x1; x += kLanes)
            for (int l = 0; l < kLanes; ++l) lane[l] += gr[x + l] * row[x + l + shift];
          T s = 0;
          for (int l = 0; l < kLanes; ++l) s += lane[l];
          for (; x < x1; ++x) s += gr[x] * row[x + shift];
          total += s;
        }
      d[t] = static_cast<T>(total);
    }
  });
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
