// Squeeze-and-Excitation: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp; the mode codes are
// csrc/common/modes.h's. The CPU and CUDA kernels register themselves
// (cpu/, cuda/); fakes and autograd come from attnkernels/se/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // pool: 0 avg, 1 avg_max; act: 0 identity, 1 relu, 2 silu, 3 hardswish;
  // gate: 0 sigmoid, 1 hard_sigmoid. pooled/xmax are the per-(n, c)
  // statistics kept for backward (xmax is empty for avg); dz and dh are the
  // per-sample gradients of the gate network's pre-activations, from which
  // Python forms the weight gradients.
  m.def(
      "se_forward(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, int pool, int act, "
      "int gate) -> (Tensor y, Tensor pooled, Tensor xmax)");
  m.def(
      "se_backward(Tensor dy, Tensor x, Tensor pooled, Tensor xmax, Tensor w1, Tensor? b1, "
      "Tensor? w2, Tensor? b2, int pool, int act, int gate) -> (Tensor dx, Tensor dz, Tensor dh)");
}
