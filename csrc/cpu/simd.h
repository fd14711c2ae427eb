// Four-lane vectors (GCC/Clang vector extensions) for the float fast paths of
// the CPU passes: selects and NaN-propagating maxima, where the
// auto-vectoriser gives up. They compile to whatever the build targets (SSE
// on x86-64, NEON on AArch64). And the software prefetch every streaming
// pass uses. Internal to csrc/cpu/.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace attnkernels {
namespace {

typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

// The dtype whose passes take the f4 fast paths.
template <typename scalar_t>
constexpr bool kFloat = std::is_same_v<scalar_t, float>;

// Unaligned accesses through element-typed vectors, not memcpy: a memcpy store
// may alias anything, so the compiler reloads every loop bound and captured
// scalar after it; a vector of float aliases only float.
typedef float f4u __attribute__((vector_size(16), aligned(4)));
typedef int32_t i4u __attribute__((vector_size(16), aligned(4)));

inline f4 load4(const float* p) { return *reinterpret_cast<const f4u*>(p); }
inline i4 load4(const int32_t* p) { return *reinterpret_cast<const i4u*>(p); }
inline void store4(float* p, f4 v) { *reinterpret_cast<f4u*>(p) = v; }
inline void store4(int32_t* p, i4 v) { *reinterpret_cast<i4u*>(p) = v; }

inline f4 splat4(float v) { return f4{v, v, v, v}; }
inline i4 splat4(int32_t v) { return i4{v, v, v, v}; }
inline i4 iota4(int32_t v) { return i4{v, v + 1, v + 2, v + 3}; }

// max that propagates NaN like torch.amax, lane by lane.
inline f4 max_nan4(f4 m, f4 v) { return ((v > m) | (v != v)) ? v : m; }

// max_nan4 without the NaN: one maxps. Equal to max_nan4 wherever no v is NaN
// (signed zeros included: the same comparison picks the same operand); a NaN
// v is dropped. Passes that use it also sum the same elements, and a NaN sum
// (which any NaN element makes) sends them back over their input with
// max_nan4 (max4<true>).
inline f4 max_fast4(f4 m, f4 v) { return v > m ? v : m; }

template <bool kExact>
inline f4 max4(f4 m, f4 v) {
  if constexpr (kExact)
    return max_nan4(m, v);
  else
    return max_fast4(m, v);
}

// pass(std::false_type{}) takes the cheap max; if sums[0, n), which any NaN
// input makes NaN, hold a NaN, pass(std::true_type{}) runs again with the
// exact one. Only float inputs take the cheap path (their passes have f4 loops).
template <typename scalar_t, typename Pass, typename acc_t>
inline void cheap_then_exact_max(const Pass& pass, const acc_t* sums, int64_t n);

// Whether any of p[0, n) is NaN.
inline bool any_nan(const float* p, int64_t n) {
  i4 hit = splat4(0);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const f4 v = load4(p + i);
    hit |= (v != v);
  }
  bool r = (hit[0] | hit[1] | hit[2] | hit[3]) != 0;
  for (; i < n; ++i) r |= p[i] != p[i];
  return r;
}

inline float hsum4(f4 v) { return ((v[0] + v[1]) + v[2]) + v[3]; }

// is_max lane by lane: v equals the max m, or both are NaN.
inline i4 is_max4(f4 v, f4 m) { return (v == m) | ((v != v) & (m != m)); }

// First-tie tracking four indices at a time: least4 keeps, per lane, the least
// index whose lane was hit (INT32_MAX where none); least_index gives the
// least over the lanes, -1 if none.
inline i4 least4(i4 least, i4 hit, i4 index) {
  const i4 cand = hit ? index : splat4(std::numeric_limits<int32_t>::max());
  return cand < least ? cand : least;
}
inline int32_t least_index(i4 least) {
  const int32_t m = std::min(std::min(least[0], least[1]), std::min(least[2], least[3]));
  return m == std::numeric_limits<int32_t>::max() ? -1 : m;
}

// Software prefetch for the streaming passes. One core reading one sequential
// stream from DRAM with SSE loads gets a third of the bandwidth a prefetching
// loop gets (measured on a Xeon with 2 cores: 5.5 vs 18-20 GB/s for the
// channel pool); the hardware prefetcher alone does not run far enough ahead.
// Prefetching never faults, so reading past the end of a row or tensor is fine.
constexpr int64_t kPrefetchBytes = 4096;

template <typename T>
inline void prefetch_ahead(const T* p) {
  __builtin_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes);
}

template <typename scalar_t, typename Pass, typename acc_t>
inline void cheap_then_exact_max(const Pass& pass, const acc_t* sums, int64_t n) {
  pass(std::false_type{});
  if constexpr (std::is_same_v<scalar_t, float>)
    if (any_nan(sums, n)) pass(std::true_type{});
}

// The cache lines of the n elements at p.
template <typename T>
inline void prefetch_span(const T* p, int64_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t l = a & ~uintptr_t(63); l < a + n * sizeof(T); l += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(l));
}

// The cache lines of the n elements at p, kPrefetchBytes ahead: for loops over
// rows too short to prefetch inside (a row of W).
template <typename T>
inline void prefetch_span_ahead(const T* p, int64_t n) {
  prefetch_span(reinterpret_cast<const char*>(p) + kPrefetchBytes, n * sizeof(T));
}

// For a strided stream of rows of n elements (a channel block of channels_last
// x, one row per pixel): how many rows ahead to prefetch, so that about
// kPrefetchBytes of the stream is in flight.
template <typename T>
inline int64_t rows_ahead(int64_t n) {
  return std::max<int64_t>(1, kPrefetchBytes / std::max<int64_t>(1, n * sizeof(T)));
}

// The software prefetch of one pass: on when it streams a tensor too large
// to be cache-resident (from DRAM the hardware prefetcher alone does not run
// far enough ahead: a lone SSE stream per core got a third of the bandwidth on
// a Xeon), off otherwise (there the prefetches only cost: 10-40% of a pass at
// 1x256x56x56 on the AMD EPYC, bench.passes). A fixed threshold: the caches
// the OS reports are not the ones a core shares (an EPYC reports its whole
// 256 MB of L3 through sysconf, 32 MB per core complex through sysfs).
constexpr int64_t kStreamFromMemoryBytes = int64_t(16) << 20;

struct Prefetch {
  bool on;
  explicit Prefetch(int64_t stream_bytes) : on(stream_bytes > kStreamFromMemoryBytes) {}
  template <typename T>
  void ahead(const T* p) const {
    if (on) prefetch_ahead(p);
  }
  template <typename T>
  void span(const T* p, int64_t n) const {
    if (on) prefetch_span(p, n);
  }
  template <typename T>
  void span_ahead(const T* p, int64_t n) const {
    if (on) prefetch_span_ahead(p, n);
  }
};

}  // namespace
}  // namespace attnkernels
