// Selective Kernel attention: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp. The CPU and CUDA kernels
// register themselves (cpu/, cuda/); fakes and autograd come from
// attnkernels/sk/op.py. The branch convolutions and the gate network between
// the two passes stay with the library.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // s[b, c] = mean over H*W of sum_k branches[k][b, c]: (B, C) in the
  // branches' dtype, summed in the accumulate dtype and rounded once. 1 to 8
  // branches, alike in shape, dtype, device and (dense) memory format.
  m.def("sk_pool(Tensor[] branches) -> Tensor");
  // a = softmax over k of logits (B, K, C) (in the accumulate dtype);
  // y = sum_k a[b, k, c] * branches[k][b, c]. The backward:
  //   dbranches[k] = a_k dy, g_k = sum_hw dy * branches[k],
  //   dlogits_k = a_k (g_k - sum_j a_j g_j) (in logits' dtype).
  m.def("sk_forward(Tensor[] branches, Tensor logits) -> Tensor");
  m.def("sk_backward(Tensor dy, Tensor[] branches, Tensor logits) -> (Tensor[], Tensor)");
}
