// The CPU outputs (empty_output_like, csrc/common/outputs.h), on transparent huge pages.
//
// A fresh x-sized tensor comes from mmap and is faulted in page by page as the
// kernel writes it: at 4 KB pages that costs more than the writing (x.clone()
// of 16x256x56x56 fp32: 26.5 ms, 11.2 ms on 2 MB pages; bench/results/
// floors-amd-thp-2026-11-23). Where the kernel's THP mode is "madvise" (the
// usual default) only advised ranges get huge pages, so the outputs are
// advised before they are written. This is PyTorch's THP_MEM_ALLOC_ENABLE=1,
// for our outputs only; ATTNKERNELS_HUGE_PAGES=0 turns it off.
#include <ATen/ops/empty_like.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../common/outputs.h"

namespace attnkernels {
namespace {

constexpr std::uintptr_t kHugePage = std::uintptr_t(2) << 20;

bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ATTNKERNELS_HUGE_PAGES");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

// Advises the whole 2 MB pages inside [data, data + nbytes). The allocator's
// pointer is only 64-byte aligned, so the partial pages at both ends stay on
// 4 KB pages. A refusal (a kernel without THP) changes nothing but speed, so
// it is ignored.
void advise_huge_pages(void* data, std::size_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + kHugePage - 1) / kHugePage * kHugePage;
  const std::uintptr_t last = (begin + nbytes) / kHugePage * kHugePage;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)data;
  (void)nbytes;
#endif
}

}  // namespace

at::Tensor empty_output_like(const at::Tensor& t) {
  at::Tensor out = at::empty_like(t);
  if (out.is_cpu() && out.nbytes() >= 2 * kHugePage && huge_pages_enabled())
    advise_huge_pages(out.data_ptr(), out.nbytes());
  return out;
}

}  // namespace attnkernels
