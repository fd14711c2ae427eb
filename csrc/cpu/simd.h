// Four-lane vectors (GCC/Clang vector extensions) for the float fast paths of
// the CPU passes: selects and NaN-propagating maxima, where the
// auto-vectoriser gives up. They compile to whatever the build targets (SSE
// on x86-64, NEON on AArch64). Internal to csrc/cpu/.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

namespace attnkernels {
namespace {

typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline i4 load4(const int32_t* p) {
  i4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store4(float* p, f4 v) { std::memcpy(p, &v, sizeof v); }
inline void store4(int32_t* p, i4 v) { std::memcpy(p, &v, sizeof v); }

inline f4 splat4(float v) { return f4{v, v, v, v}; }
inline i4 splat4(int32_t v) { return i4{v, v, v, v}; }
inline i4 iota4(int32_t v) { return i4{v, v + 1, v + 2, v + 3}; }

// max that propagates NaN like torch.amax, lane by lane.
inline f4 max_nan4(f4 m, f4 v) { return ((v > m) | (v != v)) ? v : m; }

inline float hsum4(f4 v) { return ((v[0] + v[1]) + v[2]) + v[3]; }

}  // namespace
}  // namespace attnkernels
