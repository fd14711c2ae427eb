// A sigmoid and an exp the compiler vectorises, for the CPU passes that apply
// a gate per element (SimAM, NAM) or a softmax over a plane (CoT). Internal
// to csrc/cpu/ (internal linkage).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common/gate_math.h"
#include "isa.h"

namespace attnkernels {
namespace {

// exp(x) for x in [-87, 87], Cephes' expf: range
// reduction by ln 2 in two parts, a degree-6 polynomial, 2^n put in the
// exponent bits.
ATTNKERNELS_INLINE float exp_in_range(float x) {
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln 2) in t's low bits
  const float n = t - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t two_n = (std::bit_cast<int32_t>(t) - 0x4B400000 + 127) << 23;  // 2^n
  return p * std::bit_cast<float>(two_n);
}

constexpr int32_t kBits87 = 0x42AE0000;  // 87.0f

// z's bits with its magnitude clamped to 87 (a select without a branch).
ATTNKERNELS_INLINE float clamp87(int32_t zb, int32_t inside) {
  return std::bit_cast<float>((zb & inside) | (((zb & INT32_MIN) | kBits87) & ~inside));
}

// sigmoid(z), written so that the compiler vectorises the loops that call it
// (std::exp is a library call per element that no loop vectorises: it made
// SimAM's passes compute-bound). For float, exp(-z) is exp_in_range; s is
// within 2.5 ulp of the float64 value for every float z >= -87 (checked exhaustively), and z is
// clamped to [-87, 87], where exp(-z) stays normal (beyond, s is 1, or below
// 2e-38). NaN passes through. The selects are bit masks: a float
// compare may trap on NaN, so the compiler would keep it a branch.
// Double keeps std::exp (float64 runs are for checking).
ATTNKERNELS_INLINE float fast_sigmoid(float z) {
  const int32_t zb = std::bit_cast<int32_t>(z), mag = zb & 0x7FFFFFFF;
  const int32_t inside = -static_cast<int32_t>(mag < kBits87);  // all ones or zero
  const float s = 1.0f / (1.0f + exp_in_range(-clamp87(zb, inside)));
  const int32_t nan = -static_cast<int32_t>(mag > 0x7F800000);
  return std::bit_cast<float>((zb & nan) | (std::bit_cast<int32_t>(s) & ~nan));  // NaN stays
}

// exp(x) for x <= 87 (a softmax's x - max), vectorisable: exp_in_range, 0
// below -87 (where the float64 value is under 1.7e-38) and for -inf, NaN
// for NaN.
ATTNKERNELS_INLINE float fast_exp(float x) {
  const int32_t xb = std::bit_cast<int32_t>(x), mag = xb & 0x7FFFFFFF;
  const int32_t inside = -static_cast<int32_t>(mag < kBits87);
  const int32_t e = std::bit_cast<int32_t>(exp_in_range(clamp87(xb, inside)));
  const int32_t under = -static_cast<int32_t>((xb < 0) & (mag >= kBits87) & (mag <= 0x7F800000));
  const int32_t nan = -static_cast<int32_t>(mag > 0x7F800000);
  return std::bit_cast<float>((xb & nan) | (e & ~under & ~nan));
}

template <typename T>
ATTNKERNELS_INLINE T fast_exp(T x) {
  return std::exp(x);
}

template <typename T>
ATTNKERNELS_INLINE T fast_sigmoid(T z) {
  return sigmoid(z);
}

}  // namespace
}  // namespace attnkernels
