// Scalar activations and gates of the tiny gate networks, and their
// derivatives, shared by the CPU and CUDA kernels (codes in modes.h).
#pragma once
#include <cmath>

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

}  // namespace attnkernels
