// CoT attention: its operator schemas and what they compute. The attnkernels
// namespace is opened in csrc/ops.cpp. The CPU and CUDA kernels register
// themselves (cpu/, cuda/); fakes and autograd come from attnkernels/cot/op.py.
// The module's convolutions and BatchNorms, and the averaged last 1x1 conv that
// gives att, stay with the library.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // Per (n, c) over the H*W positions: max = max of att (NaN in att makes the
  // plane's outputs NaN through the sum), w = exp(att - max) * inv_sum with
  // inv_sum = 1 / sum exp(att - max); y = k1 + w * v. att, v and k1 alike in
  // shape, dtype, device and (dense) memory format; max and inv_sum are (N, C)
  // in the accumulate dtype, all the backward reads besides att, v and dy
  // (NaN for an empty H*W). The backward, with g = dy * v and
  // r = sum_hw w g per (n, c):
  //   datt = w (g - r), dv = dy w   (dk1 = dy, no kernel).
  m.def("cot_forward(Tensor att, Tensor v, Tensor k1) -> (Tensor y, Tensor max, Tensor inv_sum)");
  m.def("cot_backward(Tensor dy, Tensor att, Tensor v, Tensor max, Tensor inv_sum) -> "
        "(Tensor datt, Tensor dv)");
}
