// Every operator schema of the attnkernels namespace, in one place. The CPU
// and CUDA implementations register themselves per file (cpu/<family>.cpp,
// cuda/<family>.cu); fake tensors and autograd are registered from Python
// (attnkernels/ops/<family>.py).
#include <torch/library.h>

TORCH_LIBRARY(attnkernels, m) {
  // Squeeze-and-Excitation. pool: 0 avg, 1 avg_max; act: 0 identity, 1 relu,
  // 2 silu, 3 hardswish; gate: 0 sigmoid, 1 hard_sigmoid. pooled/xmax are the
  // per-(n, c) statistics kept for backward (xmax is empty for avg); dz and dh
  // are the per-sample gradients of the gate network's pre-activations, from
  // which Python forms the weight gradients.
  m.def(
      "se_forward(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, int pool, int act, "
      "int gate) -> (Tensor y, Tensor pooled, Tensor xmax)");
  m.def(
      "se_backward(Tensor dy, Tensor x, Tensor pooled, Tensor xmax, Tensor w1, Tensor? b1, "
      "Tensor? w2, Tensor? b2, int pool, int act, int gate) -> (Tensor dx, Tensor dz, Tensor dh)");

  // Efficient Channel Attention: weight is the conv1d kernel (k,), k odd; bias
  // is (1,) or None; circular selects circular padding over channels (timm
  // CecaModule) instead of zeros; gate as above. pooled is the per-(n, c) mean
  // kept for backward; dz the gradient of the gate's pre-activation, from which
  // Python forms the weight gradients.
  m.def(
      "eca_forward(Tensor x, Tensor weight, Tensor? bias, bool circular, int gate) "
      "-> (Tensor y, Tensor pooled)");
  m.def(
      "eca_backward(Tensor dy, Tensor x, Tensor pooled, Tensor weight, Tensor? bias, "
      "bool circular, int gate) -> (Tensor dx, Tensor dz)");
}

#ifdef ATTNKERNELS_PYTHON_MODULE
#include <Python.h>
// `import attnkernels._C` loads this library and so runs the registrations
// above; the module itself is empty (no op is reachable only via pybind11).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif  // ATTNKERNELS_PYTHON_MODULE
