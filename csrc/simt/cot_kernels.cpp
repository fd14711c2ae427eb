// The CUDA kernels of csrc/cuda/cot.cu compiled for the CPU SIMT emulator
// (csrc/cuda/simt.h); built only by tools/build_emulated.py, never by setup.py.
#define ATTNKERNELS_SIMT
#include "../cuda/cot.cu"
