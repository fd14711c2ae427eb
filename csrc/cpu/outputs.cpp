// The CPU outputs (empty_output_like, csrc/common/outputs.h): large ones on
// transparent huge pages, and their memory kept for the next output of the
// same size.
//
// A fresh x-sized tensor comes from mmap and is faulted in page by page as the
// kernel writes it: at 4 KB pages that costs more than the writing (x.clone()
// of 16x256x56x56 fp32: 26.5 ms, 11.2 ms on 2 MB pages; bench/results/
// floors-amd-thp-2026-11-23). Where the kernel's THP mode is "madvise" (the
// usual default) only advised ranges get huge pages, so the outputs are
// advised before they are written. This is PyTorch's THP_MEM_ALLOC_ENABLE=1,
// for our outputs only; ATTNKERNELS_HUGE_PAGES=0 turns it off.
//
// Even on 2 MB pages the kernel zeroes every fresh page (and may compact
// memory to find them: seen 60 ms of system time per 51 MB output in a fresh
// process). A training or inference loop asks for the same output sizes every
// step, so a large output's memory, once its tensor is freed, waits in a
// bounded pool (ATTNKERNELS_CPU_OUTPUT_CACHE_MB, default 256; 0: none) for the
// next output of exactly its size, as PyTorch's CUDA caching allocator does.
// The profiler sees what tensors hold, not what waits in the pool.
#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Allocator.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__)
#include <pthread.h>
#endif

#include "../common/outputs.h"

namespace attnkernels {
namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::strtoll(v, nullptr, 10) : fallback;
}

bool huge_pages_enabled() {
  static const bool enabled = env_int("ATTNKERNELS_HUGE_PAGES", 1) != 0;
  return enabled;
}

// Advises the whole 2 MB pages inside [data, data + nbytes). A refusal (a
// kernel without THP) changes nothing but speed, so it is ignored.
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

// The outputs of 4 MB and up: 2 MB-aligned blocks (every page of them huge
// where advised), each kept after its tensor dies while the pool's free
// blocks stay within the limit; the oldest free block goes first.
class OutputPool final : public c10::Allocator {
 public:
  explicit OutputPool(std::size_t limit) : limit_(limit) {}

  static OutputPool& instance();

  c10::DataPtr allocate(std::size_t nbytes) override {
    void* data = take(nbytes);
    if (!data) data = fresh(nbytes);
    report(data, static_cast<int64_t>(nbytes));
    return {data, new Block{data, nbytes}, &OutputPool::give_back, c10::Device(c10::kCPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Block {
    void* data;
    std::size_t nbytes;
  };

  static void give_back(void* ctx) {
    Block* block = static_cast<Block*>(ctx);
    instance().keep(block->data, block->nbytes);
    delete block;
  }

  static std::size_t rounded(std::size_t nbytes) {
    return (nbytes + kHugePage - 1) / kHugePage * kHugePage;
  }

  static void* fresh(std::size_t nbytes) {
    const std::size_t size = rounded(nbytes);
    void* data = std::aligned_alloc(kHugePage, size);
    if (!data) throw std::bad_alloc();
    if (huge_pages_enabled()) advise_huge_pages(data, size);
    return data;
  }

  void* take(std::size_t nbytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second != nbytes) continue;
      void* data = it->first;
      free_bytes_ -= rounded(nbytes);
      free_.erase(it);
      return data;
    }
    return nullptr;
  }

  void keep(void* data, std::size_t nbytes) {
    report(data, -static_cast<int64_t>(nbytes));
    std::list<std::pair<void*, std::size_t>> dropped;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      free_.emplace_back(data, nbytes);
      free_bytes_ += rounded(nbytes);  // what the block holds
      while (free_bytes_ > limit_) {  // the block just freed too, if it alone is over
        free_bytes_ -= rounded(free_.front().second);
        dropped.splice(dropped.end(), free_, free_.begin());
      }
    }
    for (auto& block : dropped) std::free(block.first);
  }

  // The profiler's memory events, as PyTorch's CPU allocator reports them.
  void report(void* data, int64_t delta) {
    const int64_t in_use = in_use_.fetch_add(delta) + delta;
    c10::reportMemoryUsageToProfiler(data, delta, static_cast<std::size_t>(in_use),
                                     static_cast<std::size_t>(in_use), c10::Device(c10::kCPU));
  }

  const std::size_t limit_;
  std::mutex mutex_;
  std::list<std::pair<void*, std::size_t>> free_;  // oldest first
  std::size_t free_bytes_ = 0;
  std::atomic<int64_t> in_use_{0};  // the bytes tensors hold, apart from the lock
};

OutputPool& OutputPool::instance() {
  // Never destroyed: tensors freed while Python shuts down still give back to it.
  static OutputPool* pool = [] {
    auto* made = new OutputPool(
        static_cast<std::size_t>(std::max<int64_t>(0, env_int("ATTNKERNELS_CPU_OUTPUT_CACHE_MB", 256)))
        << 20);
#if defined(__unix__)
    // fork (DataLoader workers) while another thread holds the lock would leave
    // the child's pool locked for good: hold it across the fork, release it on both sides
    pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                   [] { instance().mutex_.unlock(); });
#endif
    return made;
  }();
  return *pool;
}

}  // namespace

at::Tensor empty_output_like(const at::Tensor& t) {
  if (!t.is_cpu() || t.nbytes() < 2 * kHugePage || !t.is_non_overlapping_and_dense())
    return at::empty_like(t);
  // at::empty_like's strides (a dense t keeps its own), memory from the pool
  static c10::Allocator* pool = &OutputPool::instance();
  return at::Tensor(at::detail::empty_strided_generic(
      t.sizes(), t.strides(), pool, c10::DispatchKeySet(c10::DispatchKey::CPU), t.scalar_type()));
}

}  // namespace attnkernels
