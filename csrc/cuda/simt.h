// A CPU SIMT emulator for our CUDA kernels: the same kernel source that nvcc
// compiles also compiles with the host compiler (ATTNKERNELS_SIMT defined) and
// runs here, one fiber per CUDA thread, so that CI, which has no GPU, executes
// every kernel. It provides what csrc/cuda/ uses, with CUDA's semantics:
// threadIdx/blockIdx/blockDim/gridDim, __syncthreads() as a real barrier over
// the block, __shfl_down_sync over 32-lane warps (a partial last warp, the
// mask), static and dynamic shared memory (one copy per block, through
// AK_SHARED and AK_DYNAMIC_SHARED) and launches (AK_LAUNCH); csrc/cuda/device.cuh
// maps those onto CUDA or onto this. The scheduler is harsh on purpose, so a race shows as a
// wrong answer: blocks run in a shuffled order, the next thread to run is drawn
// at random at every switch (seed: ATTNKERNELS_SIMT_SEED), shared memory is
// filled with 0xFF bytes (NaN for floats) before each block and fenced by guard
// bands (a read just past its end gives NaN, a write there is an error), and a
// barrier or shuffle that not every thread reaches is an error, not a hang.
// Not modelled: timing, memory coalescing, warp-synchronous code without
// __syncwarp (every thread is its own fiber), atomics (no kernel uses them).
#pragma once
#ifndef ATTNKERNELS_SIMT
#error "csrc/cuda/simt.h is for the host build of the CUDA kernels (ATTNKERNELS_SIMT)"
#endif

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = void*;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

namespace attnkernels::simt {

constexpr int kLanes = 32;
constexpr size_t kStackBytes = 64 * 1024;

enum class State { kReady, kAtBarrier, kAtWarpSync, kDone };

// A fiber's saved context. On x86-64, a stack pointer and the six callee-saved
// registers pushed on its stack (ak_simt_switch, csrc/simt/runtime.cpp): a
// switch costs some nanoseconds where swapcontext makes a system call.
#if defined(__x86_64__)
extern "C" void ak_simt_switch(void** save_sp, void* load_sp);
struct Context {
  void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { ak_simt_switch(&from.sp, to.sp); }
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<void**>(top);
  slot[-1] = nullptr;                           // entry's return address: never used
  slot[-2] = reinterpret_cast<void*>(entry);    // ak_simt_switch's ret jumps here
  for (int i = 3; i <= 8; ++i) slot[-i] = nullptr;  // rbp, rbx, r12-r15
  c.sp = slot - 8;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Thread {
  Context context;
  dim3 index;
  State state = State::kReady;
  unsigned int mask = 0;   // the warp sync's mask
  uint64_t slot = 0;       // a shuffle's value (up to 8 bytes)
  char* stack = nullptr;
};

// Fiber stacks, kept for the next launch on this OS thread (no zero-fill).
inline char* stack_for(size_t thread) {
  static thread_local std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= thread) stacks.emplace_back(new char[kStackBytes]);
  return stacks[thread].get();
}

// One block's execution: its threads, the scheduler's context, its shared memory.
struct Block {
  dim3 index, dim, grid;
  std::vector<Thread> threads;
  Context scheduler;
  int current = 0;
  std::mt19937_64 rng;
  struct SharedRegion {
    void* base;  // a Guarded<T>
    size_t total, data_offset, data_bytes;
    const char* name;
  };
  std::vector<SharedRegion> shared_filled;    // static __shared__ reached in this block
  std::vector<unsigned char> dynamic_shared;  // extern __shared__: guard, launch-sized, guard
  std::function<void()> body;
  std::string error;
};

inline thread_local Block* g_block = nullptr;

inline Block& block() { return *g_block; }
inline Thread& self() { return g_block->threads[g_block->current]; }

// Back to the scheduler; returns when this thread is picked again.
inline void yield_to_scheduler() {
  Block& b = block();
  switch_context(b.threads[b.current].context, b.scheduler);
}

inline void syncthreads() {
  self().state = State::kAtBarrier;
  yield_to_scheduler();
}

// Lanes of the warp that exist (a partial last warp has fewer than 32).
inline int lane_of(int t) { return t % kLanes; }

template <typename T>
T shfl_down(unsigned int mask, T value, unsigned int delta) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type over 8 bytes");
  Block& b = block();
  const int me = b.current, lane = lane_of(me), warp_first = me - lane;
  Thread& t = b.threads[me];
  std::memcpy(&t.slot, &value, sizeof(T));
  t.mask = mask;
  t.state = State::kAtWarpSync;
  yield_to_scheduler();  // every lane of the mask has deposited its value
  T out = value;
  const int src = lane + static_cast<int>(delta);
  if (src < kLanes && (mask >> src & 1u) && warp_first + src < static_cast<int>(b.threads.size()))
    std::memcpy(&out, &b.threads[warp_first + src].slot, sizeof(T));
  t.state = State::kAtWarpSync;
  yield_to_scheduler();  // every lane has read before any slot is written again
  return out;
}

// Shared memory starts as 0xFF bytes (NaN for floats, -1 for ints) and sits
// between two guard bands of 0x7F bytes (3.4e38 in float and bfloat16, NaN in
// half): a read just outside the declared size gets a wild value and fails the
// parity tests; a write there (a NaN computed from such a read included) is
// found when the block ends (check_guards).
constexpr size_t kGuardBytes = 256;
constexpr unsigned char kFillByte = 0xFF, kGuardByte = 0x7F;

template <typename T>
struct Guarded {
  alignas(64) unsigned char front[kGuardBytes];
  T data;
  unsigned char back[kGuardBytes];
};

// Static shared memory (AK_SHARED): a thread_local function-local static, one
// copy per OS thread's running block, filled (guards included) the first time a
// thread of each block reaches its declaration.
template <typename T>
T& shared_region(Guarded<T>& g, const char* name) {
  Block& b = block();
  for (const auto& r : b.shared_filled)
    if (r.base == &g) return g.data;
  std::memset(&g, kGuardByte, sizeof(g));
  std::memset(&g.data, kFillByte, sizeof(T));
  b.shared_filled.push_back({&g, sizeof(g), offsetof(Guarded<T>, data), sizeof(T), name});
  return g.data;
}

// extern __shared__ (AK_DYNAMIC_SHARED): the launch's dynamic shared memory of
// the running block, between guard bands.
template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block().dynamic_shared.data() + kGuardBytes);
}

// A guard byte changed: a write outside the declared size.
inline std::string check_guards(const Block& b) {
  auto outside = [](const unsigned char* p, size_t data_offset, size_t data_bytes, size_t total) {
    for (size_t i = 0; i < total; ++i)
      if ((i < data_offset || i >= data_offset + data_bytes) && p[i] != kGuardByte) return true;
    return false;
  };
  for (const auto& r : b.shared_filled)
    if (outside(static_cast<const unsigned char*>(r.base), r.data_offset, r.data_bytes, r.total))
      return std::string("write outside __shared__ ") + r.name + " (" +
             std::to_string(r.data_bytes) + " bytes)";
  const auto& d = b.dynamic_shared;
  if (outside(d.data(), kGuardBytes, d.size() - 2 * kGuardBytes, d.size()))
    return "write outside the launch's " + std::to_string(d.size() - 2 * kGuardBytes) +
           " bytes of dynamic shared memory";
  return {};
}

inline void thread_entry();

// Runs every thread of the block to completion under the random scheduler.
inline void run_block(Block& b) {
  const size_t n = static_cast<size_t>(b.dim.x) * b.dim.y * b.dim.z;
  b.threads.resize(n);
  size_t t = 0;
  for (unsigned int z = 0; z < b.dim.z; ++z)
    for (unsigned int y = 0; y < b.dim.y; ++y)
      for (unsigned int x = 0; x < b.dim.x; ++x, ++t) {
        Thread& th = b.threads[t];
        th.index = dim3(x, y, z);
        th.state = State::kReady;
        th.stack = stack_for(t);
        make_context(th.context, th.stack, kStackBytes, thread_entry);
      }
  // The threads that can run: a thread leaves the list when picked (it comes back
  // waiting or done) and rejoins when its barrier or shuffle releases it.
  std::vector<int> ready(n);
  for (size_t i = 0; i < n; ++i) ready[i] = static_cast<int>(i);
  auto release = [&](size_t i) {
    b.threads[i].state = State::kReady;
    ready.push_back(static_cast<int>(i));
  };
  // A warp's shuffle completes as soon as every lane its masks name has arrived,
  // so that one warp can run ahead of the others, as on a GPU.
  auto release_warp_if_complete = [&](size_t w) {
    const size_t end = std::min(n, w + kLanes);
    unsigned int mask = 0;
    for (size_t i = w; i < end; ++i)
      if (b.threads[i].state == State::kAtWarpSync) mask |= b.threads[i].mask;
    if (mask == 0) return;
    for (size_t i = w; i < end; ++i)
      if ((mask >> (i - w) & 1u) && b.threads[i].state != State::kAtWarpSync) return;
    for (size_t i = w; i < end; ++i)
      if (b.threads[i].state == State::kAtWarpSync) release(i);
  };
  // Two schedules, drawn per block: any ready thread at random; or warp by warp
  // (the lanes of the last thread's warp first), which runs one warp far ahead
  // of the others between barriers, where a missing barrier shows.
  const bool by_warp = b.rng() & 1u;
  for (;;) {
    if (ready.empty()) {
      // Release every warp whose lanes named in the waiting lanes' masks (and
      // existing: a partial last warp has fewer) all wait at the shuffle.
      bool released = false, any_waiting = false;
      for (size_t w = 0; w < n; w += kLanes) {
        const size_t end = std::min(n, w + kLanes);
        unsigned int mask = 0;
        for (size_t i = w; i < end; ++i)
          if (b.threads[i].state == State::kAtWarpSync) mask |= b.threads[i].mask;
        if (mask == 0) continue;
        any_waiting = true;
        bool all = true;
        for (size_t i = w; i < end; ++i)
          if ((mask >> (i - w) & 1u) && b.threads[i].state != State::kAtWarpSync) all = false;
        if (all) {
          for (size_t i = w; i < end; ++i)
            if (b.threads[i].state == State::kAtWarpSync) release(i);
          released = true;
        }
      }
      if (released) continue;
      size_t at_barrier = 0, done = 0;
      for (const Thread& th : b.threads) {
        at_barrier += th.state == State::kAtBarrier;
        done += th.state == State::kDone;
      }
      if (done == n) return;
      if (at_barrier + done == n && !any_waiting) {
        if (done > 0) {
          b.error = "__syncthreads() not reached by every thread of the block (" +
                    std::to_string(done) + " of " + std::to_string(n) + " had returned)";
          return;
        }
        for (size_t i = 0; i < n; ++i) release(i);
        continue;
      }
      b.error = "deadlock: threads wait at __syncthreads() and at a warp shuffle, or a shuffle "
                "names a lane that returned";
      return;
    }
    size_t pick = std::uniform_int_distribution<size_t>(0, ready.size() - 1)(b.rng);
    if (by_warp) {
      const int warp = b.current / kLanes;
      for (size_t i = 0; i < ready.size(); ++i)
        if (ready[i] / kLanes == warp) {
          pick = i;
          break;
        }
    }
    b.current = ready[pick];
    ready[pick] = ready.back();
    ready.pop_back();
    switch_context(b.scheduler, b.threads[b.current].context);
    if (b.threads[b.current].state == State::kAtWarpSync)
      release_warp_if_complete(b.current - b.current % kLanes);
  }
}

// A fiber's first function: the kernel body, then back to the scheduler for good.
inline void thread_entry() {
  block().body();
  self().state = State::kDone;
  yield_to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

inline uint64_t seed() {
  const char* s = std::getenv("ATTNKERNELS_SIMT_SEED");
  return s ? std::strtoull(s, nullptr, 10) : 0;
}

// Kernels launched, by their mangled-free description (for the coverage check).
inline std::vector<std::string>& launched() {
  static auto* names = new std::vector<std::string>;  // outlives every static destructor
  return *names;
}

// kernel<<<grid, block, shared, stream>>>(args...) on the CPU; ``kernel`` is a
// generic lambda that calls the kernel, so its template arguments are deduced
// from the launch's arguments as nvcc does.
template <typename Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, block_dim;
  size_t shared_bytes;
  const char* name;

  template <typename... Args>
  void operator()(Args&&... args) const {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block_dim.x == 0)
      throw std::runtime_error(std::string("simt: empty launch of ") + name);
    if (static_cast<size_t>(block_dim.x) * block_dim.y * block_dim.z > 1024)
      throw std::runtime_error(std::string("simt: more than 1024 threads per block in ") + name);
    if (grid.y > 65535 || grid.z > 65535)
      throw std::runtime_error(std::string("simt: grid.y or grid.z above 65535 in ") + name);
    if (shared_bytes > 48 * 1024)  // the most a launch gets without an opt-in
      throw std::runtime_error(std::string("simt: over 48 KiB of dynamic shared memory in ") + name);
    auto& seen = launched();
    if (std::find(seen.begin(), seen.end(), name) == seen.end()) seen.emplace_back(name);
    auto bound = std::make_tuple(args...);  // by value, as a launch copies its arguments
    std::vector<dim3> order;
    for (unsigned int z = 0; z < grid.z; ++z)
      for (unsigned int y = 0; y < grid.y; ++y)
        for (unsigned int x = 0; x < grid.x; ++x) order.emplace_back(x, y, z);
    std::mt19937_64 rng(seed() * 0x9E3779B97F4A7C15ull + std::hash<std::string>()(name));
    std::shuffle(order.begin(), order.end(), rng);
    Block b;
    b.dim = block_dim;
    b.grid = grid;
    b.body = [&] { std::apply(kernel, bound); };
    Block* outer = g_block;
    for (const dim3& index : order) {
      b.index = index;
      b.rng.seed(rng());
      b.shared_filled.clear();
      b.dynamic_shared.assign(shared_bytes + 2 * kGuardBytes, kGuardByte);
      std::fill_n(b.dynamic_shared.begin() + kGuardBytes, shared_bytes, kFillByte);
      g_block = &b;
      run_block(b);
      g_block = outer;
      if (b.error.empty()) b.error = check_guards(b);
      if (!b.error.empty()) throw std::runtime_error(std::string("simt: ") + name + ": " + b.error);
    }
  }
};

template <typename Kernel>
Launch<Kernel> launch(Kernel kernel, dim3 grid, dim3 block_dim, size_t shared_bytes, cudaStream_t,
                      const char* name) {
  return Launch<Kernel>{kernel, grid, block_dim, shared_bytes, name};
}

}  // namespace attnkernels::simt

#define threadIdx (::attnkernels::simt::self().index)
#define blockIdx (::attnkernels::simt::block().index)
#define blockDim (::attnkernels::simt::block().dim)
#define gridDim (::attnkernels::simt::block().grid)
#define __syncthreads() ::attnkernels::simt::syncthreads()
#define __shfl_down_sync(mask, value, delta) ::attnkernels::simt::shfl_down(mask, value, delta)
// CUDA's device min and max of two ints (and floats)
using std::max;
using std::min;
#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif
