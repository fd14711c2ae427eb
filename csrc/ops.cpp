// The attnkernels operator namespace and the schemas of the ops every family
// shares (the gate networks' convolutions and matrix products). Each family's
// schemas, with what its ops compute, are in schemas/<family>_schema.cpp; the CPU
// and CUDA implementations register themselves per file (cpu/, cuda/); fake
// tensors and autograd are registered from Python (attnkernels/<family>/op.py).
#include <torch/library.h>

TORCH_LIBRARY(attnkernels, m) {
  // The gate networks' small convolutions (CPU only; elsewhere F.conv2d):
  // same-padded (k / 2), stride 1, no bias, k odd, float32 or float64,
  // contiguous. gate_conv2d: out[n, o] = sum_i conv(input[n, i], weight[o, i]);
  // gate_conv2d_weight_grad: its weight gradient (C_out, C_in, k, k) for grad.
  m.def("gate_conv2d(Tensor input, Tensor weight) -> Tensor");
  m.def("gate_conv2d_weight_grad(Tensor grad, Tensor input, int kernel_size) -> Tensor");

  // The gate networks' matrix products (CPU only; elsewhere torch.matmul):
  // a @ b for a (M, K) or (B, M, K) and b (K, N) or (B, K, N), a 2-D operand
  // shared by every batch entry, float32 or float64, any strides; the result
  // is contiguous and bitwise independent of the thread count.
  m.def("gate_matmul(Tensor a, Tensor b) -> Tensor");
}

#ifdef ATTNKERNELS_PYTHON_MODULE
#include <Python.h>
#include "attnkernels_build_info.h"  // written by setup.py: what this build holds
// `import attnkernels._C` loads this library and so runs the registrations
// above; the module holds no op, only what the build was made with
// (`python -m attnkernels --info` shows it).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  const std::pair<const char*, const char*> info[] = {
      {"built_with_torch", ATTNKERNELS_BUILD_TORCH},
      {"cuda_architectures", ATTNKERNELS_BUILD_CUDA_ARCHS},
      {"built_with_cuda", ATTNKERNELS_BUILD_CUDA},
      {"sanitize", ATTNKERNELS_BUILD_SANITIZE},
      {"debug", ATTNKERNELS_BUILD_DEBUG}};
  for (const auto& [name, value] : info) {
    if (PyModule_AddStringConstant(module, name, value) < 0) {
      Py_DECREF(module);
      return nullptr;
    }
  }
  return module;
}
#endif  // ATTNKERNELS_PYTHON_MODULE
