// Scalar activations and gates of the tiny gate networks, and their
// derivatives, shared by the CPU and CUDA kernels (codes in modes.h).
#pragma once
#include <cmath>
#include <cstdint>

#include "modes.h"

#if defined(__CUDACC__)
#define AK_HD __host__ __device__ __forceinline__
#else
#define AK_HD inline
#endif

namespace attnkernels {

template <typename T>
AK_HD T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

// "v < 0 ? 0 : v" rather than "v > 0 ? v : 0": NaN propagates, as in torch.
template <typename T>
AK_HD T activation_forward(T h, int act) {
  switch (act) {
    case kReLU: return h < T(0) ? T(0) : h;
    case kSiLU: return h * sigmoid(h);
    case kHardswish: {
      T r = h + T(3);
      r = r < T(0) ? T(0) : (r > T(6) ? T(6) : r);
      return h * r / T(6);
    }
    default: return h;
  }
}

// d activation / dh, with torch's conventions at the kinks.
template <typename T>
AK_HD T activation_grad(T h, int act) {
  switch (act) {
    case kReLU: return h > T(0) ? T(1) : T(0);
    case kSiLU: {
      T s = sigmoid(h);
      return s * (T(1) + h * (T(1) - s));
    }
    case kHardswish:
      return h < T(-3) ? T(0) : (h <= T(3) ? (T(2) * h + T(3)) / T(6) : T(1));
    default: return T(1);
  }
}

template <typename T>
AK_HD T gate_forward(T z, int gate) {
  if (gate == kHardSigmoid) {
    T r = z + T(3);
    r = r < T(0) ? T(0) : (r > T(6) ? T(6) : r);
    return r / T(6);
  }
  return sigmoid(z);
}

template <typename T>
AK_HD T gate_grad(T z, int gate) {
  if (gate == kHardSigmoid) return (z > T(-3) && z < T(3)) ? T(1) / T(6) : T(0);
  T g = sigmoid(z);
  return g * (T(1) - g);
}

// max that propagates NaN like torch.amax.
template <typename T>
AK_HD T max_nan(T m, T v) {
  return (v != v || v > m) ? v : m;
}

// v is where the max m is: equal to it, or a NaN where the max is NaN (as
// torch.max(dim) points its index at the first NaN).
template <typename T>
AK_HD bool is_max(T v, T m) {
  return v == m || (v != v && m != m);
}

// a[k * astep] = softmax over the K values l[k * step], the max
// (NaN-propagating) subtracted first, as torch.softmax.
template <typename T>
AK_HD void softmax_over(const T* l, int64_t K, int64_t step, T* a, int64_t astep) {
  T m = l[0];
  for (int64_t k = 1; k < K; ++k) m = max_nan(m, l[k * step]);
  T sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    a[k * astep] = std::exp(l[k * step] - m);
    sum += a[k * astep];
  }
  for (int64_t k = 0; k < K; ++k) a[k * astep] /= sum;
}

// dlogits_k = a_k (g_k - sum_j a_j g_j): g_k at g[k * step], a_k and dl_k at
// [k * astep].
template <typename T>
AK_HD void softmax_over_backward(const T* a, const T* g, int64_t K, int64_t step, T* dl,
                                  int64_t astep) {
  T dot = 0;
  for (int64_t k = 0; k < K; ++k) dot += a[k * astep] * g[k * step];
  for (int64_t k = 0; k < K; ++k) dl[k * astep] = a[k * astep] * (g[k * step] - dot);
}

}  // namespace attnkernels
