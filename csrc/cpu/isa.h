// Runtime choice of a wider instruction set for the CPU kernels that are
// compute-bound (the gate convolutions, SimAM's per-element sigmoid). The
// extension itself is built for the baseline of its target (SSE2 on x86-64),
// so it runs on any machine; a kernel body written once as an always-inline
// template is instantiated a second time inside an ATTNKERNELS_TARGET_AVX2
// function and picked when the CPU and the OS support AVX2. Only AVX2 is
// enabled, not FMA: the compiler cannot contract a * b + c, so both
// instantiations round every operation alike and give the same bits (each
// output lane sums its terms in the same order whatever the vector width).
// ATTNKERNELS_CPU_BASELINE=1 in the environment (read once) keeps the
// baseline code, to test exactly that. Internal to csrc/cpu/.
#pragma once
#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__)
#define ATTNKERNELS_HAVE_AVX2_CLONES 1
#define ATTNKERNELS_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define ATTNKERNELS_HAVE_AVX2_CLONES 0
#define ATTNKERNELS_TARGET_AVX2
#endif

#define ATTNKERNELS_INLINE inline __attribute__((always_inline))
// On a lambda, after its parameter list: inlined wherever it is called.
#define ATTNKERNELS_INLINE_LAMBDA __attribute__((always_inline))

namespace attnkernels {
namespace {

inline bool use_avx2() {
#if ATTNKERNELS_HAVE_AVX2_CLONES
  static const bool enabled = [] {
    const char* baseline = std::getenv("ATTNKERNELS_CPU_BASELINE");
    if (baseline != nullptr && std::strcmp(baseline, "") != 0 && std::strcmp(baseline, "0") != 0)
      return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return enabled;
#else
  return false;
#endif
}

#if ATTNKERNELS_HAVE_AVX2_CLONES
template <typename Body>
ATTNKERNELS_TARGET_AVX2 void run_avx2(const Body& body) {
  body();
}
#endif

// body() compiled for AVX2 and run so where the CPU has it, else for the
// baseline. body is a lambda marked ATTNKERNELS_INLINE_LAMBDA whose callees
// are ATTNKERNELS_INLINE: inlined into the AVX2 function, they are vectorised
// for it.
template <typename Body>
ATTNKERNELS_INLINE void with_widest_isa(const Body& body) {
#if ATTNKERNELS_HAVE_AVX2_CLONES
  if (use_avx2()) {
    run_avx2(body);
    return;
  }
#endif
  body();
}

}  // namespace
}  // namespace attnkernels
