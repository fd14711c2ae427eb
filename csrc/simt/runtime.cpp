// The emulator's one-definition parts: its context switch (x86-64); the record
// of the kernels it launched (at process exit the names go to the file
// ATTNKERNELS_SIMT_LAUNCHED names, one per line, for the coverage check of
// tests/test_cuda_emulated.py); and a CPU allocator that fences every tensor.
#define ATTNKERNELS_SIMT
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../cuda/simt.h"

namespace {

struct WriteLaunchedAtExit {
  ~WriteLaunchedAtExit() {
    const char* path = std::getenv("ATTNKERNELS_SIMT_LAUNCHED");
    if (!path) return;
    // one append of the whole list: pytest-xdist's workers exit together
    std::string lines;
    for (const std::string& name : attnkernels::simt::launched()) lines += name + "\n";
    const int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return;
    for (size_t done = 0; done < lines.size();) {
      const ssize_t n = ::write(fd, lines.data() + done, lines.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }
} write_launched_at_exit;

// Global memory, bounds-checked: while this library is loaded every CPU tensor
// (the kernels' inputs, outputs and workspaces) is allocated between guard bands
// of kGuardByte (wild values: 3.4e38, or NaN in half), and its own bytes start as
// kFillByte (NaN). A kernel that reads past a tensor's end or reads memory nobody
// wrote gets those and fails the parity tests; one that writes past either end
// is reported when the tensor is freed, and the process aborts (a deleter
// cannot throw).
class FencedCPUAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kGuard = 64;  // also c10's CPU alignment

  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    const size_t total = kGuard + (n + kGuard - 1) / kGuard * kGuard + kGuard;
    auto* raw = static_cast<unsigned char*>(std::aligned_alloc(kGuard, total));
    if (!raw) throw std::bad_alloc();
    std::memset(raw, attnkernels::simt::kGuardByte, total);
    std::memset(raw + kGuard, attnkernels::simt::kFillByte, n);
    std::memcpy(raw, &n, sizeof(n));  // the size, in the front guard's first bytes
    void* data = raw + kGuard;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static void release(void* data) {
    if (!data) return;
    unsigned char* raw = static_cast<unsigned char*>(data) - kGuard;
    size_t n;
    std::memcpy(&n, raw, sizeof(n));
    const size_t total = kGuard + (n + kGuard - 1) / kGuard * kGuard + kGuard;
    for (size_t i = sizeof(n); i < total; ++i) {
      if (i == kGuard) i += n;  // the tensor's own bytes
      if (i < total && raw[i] != attnkernels::simt::kGuardByte) {
        std::fprintf(stderr,
                     "simt: a write outside a tensor's memory: byte %lld from the start of a "
                     "%zu-byte tensor changed\n",
                     static_cast<long long>(i) - static_cast<long long>(kGuard), n);
        std::abort();
      }
    }
    std::free(raw);
  }
};

FencedCPUAllocator fenced_cpu_allocator;

struct InstallFencedAllocator {
  InstallFencedAllocator() { c10::SetCPUAllocator(&fenced_cpu_allocator, /*priority=*/1); }
} install_fenced_allocator;

}  // namespace

#if defined(__x86_64__)
// void ak_simt_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers, saves the stack pointer, loads the other fiber's and pops its.
// (pushsection/popsection: the compiler's own sections go on unchanged after it)
asm(R"(
  .pushsection .text
  .globl ak_simt_switch
  .type ak_simt_switch, @function
ak_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ak_simt_switch, .-ak_simt_switch
  .popsection
  .pushsection .note.GNU-stack,"",@progbits
  .popsection
)");
#endif
