// The emulator's one-definition parts: its context switch (x86-64), and the
// record of the kernels it launched: at process exit the names go to the file
// ATTNKERNELS_SIMT_LAUNCHED names (one per line), for the coverage check of
// tests/test_cuda_emulated.py.
#define ATTNKERNELS_SIMT
#include <cstdio>
#include <cstdlib>

#include "../cuda/simt.h"

namespace {

struct WriteLaunchedAtExit {
  ~WriteLaunchedAtExit() {
    const char* path = std::getenv("ATTNKERNELS_SIMT_LAUNCHED");
    if (!path) return;
    if (FILE* f = std::fopen(path, "a")) {
      for (const std::string& name : attnkernels::simt::launched()) std::fprintf(f, "%s\n", name.c_str());
      std::fclose(f);
    }
  }
} write_launched_at_exit;

}  // namespace

#if defined(__x86_64__)
// void ak_simt_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers, saves the stack pointer, loads the other fiber's and pops its.
asm(R"(
  .text
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
  .section .note.GNU-stack,"",@progbits
)");
#endif
