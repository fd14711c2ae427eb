// A sigmoid the compiler vectorises, for the CPU passes that apply a gate per
// element (SimAM, NAM). Internal to csrc/cpu/ (internal linkage).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common/gate_math.h"
#include "isa.h"

namespace attnkernels {
namespace {

// sigmoid(z), written so that the compiler vectorises the loops that call it
// (std::exp is a library call per element that no loop vectorises: it made
// SimAM's passes compute-bound). For float,
// exp(-z) is Cephes' expf: range reduction by ln 2 in two parts, a degree-6
// polynomial, 2^n put in the exponent bits; s is within 2.5 ulp of the
// float64 value for every float z >= -87 (checked exhaustively), and z is
// clamped to [-87, 87], where exp(-z) stays normal (beyond, s is 1, or below
// 2e-38). NaN passes through. The selects are bit masks: a float
// compare may trap on NaN, so the compiler would keep it a branch.
// Double keeps std::exp (float64 runs are for checking).
ATTNKERNELS_INLINE float fast_sigmoid(float z) {
  const int32_t zb = std::bit_cast<int32_t>(z), mag = zb & 0x7FFFFFFF;
  constexpr int32_t k87 = 0x42AE0000;  // 87.0f
  const int32_t inside = -static_cast<int32_t>(mag < k87);  // all ones or zero: a select without a branch
  const float x = -std::bit_cast<float>((zb & inside) | (((zb & INT32_MIN) | k87) & ~inside));
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
  const float s = 1.0f / (1.0f + p * std::bit_cast<float>(two_n));
  const int32_t nan = -static_cast<int32_t>(mag > 0x7F800000);
  return std::bit_cast<float>((zb & nan) | (std::bit_cast<int32_t>(s) & ~nan));  // NaN stays
}

template <typename T>
ATTNKERNELS_INLINE T fast_sigmoid(T z) {
  return sigmoid(z);
}

}  // namespace
}  // namespace attnkernels
