// Efficient Channel Attention: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp; the mode codes are
// csrc/common/modes.h's. The CPU and CUDA kernels register themselves
// (cpu/, cuda/); fakes and autograd come from attnkernels/eca/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // weight is the conv1d kernel (k,), k odd; bias is (1,) or None; circular
  // selects circular padding over channels (timm CecaModule) instead of zeros;
  // gate: 0 sigmoid, 1 hard_sigmoid. pooled is the per-(n, c) mean kept for
  // backward; dz the gradient of the gate's pre-activation, from which Python
  // forms the weight gradients.
  m.def(
      "eca_forward(Tensor x, Tensor weight, Tensor? bias, bool circular, int gate) "
      "-> (Tensor y, Tensor pooled)");
  m.def(
      "eca_backward(Tensor dy, Tensor x, Tensor pooled, Tensor weight, Tensor? bias, "
      "bool circular, int gate) -> (Tensor dx, Tensor dz)");
}
