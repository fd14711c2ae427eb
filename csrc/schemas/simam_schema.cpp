// SimAM: its operator schemas and what they compute. The attnkernels
// namespace is opened in csrc/ops.cpp. The CPU and CUDA kernels register
// themselves (cpu/, cuda/); fakes and autograd come from attnkernels/simam/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // Per (n, c) over the H*W positions: mean, d = (x - mean)^2 and
  // denom = 4 (sum(d) / (H*W - 1) + e_lambda); y = x * sigmoid(d / denom + 0.5)
  // (NaN for a 1x1 map, as upstream). mean and denom are (N, C) in the
  // accumulate dtype, all the backward reads besides x and dy:
  //   t = dy * x * s (1 - s), A = sum t (x - mean), B = sum t d, a = 1 / denom,
  //   dx = dy * s + (x - mean) (2 a t - 8 a^2 B / (H*W - 1)) - 2 a A / (H*W).
  m.def("simam_forward(Tensor x, float e_lambda) -> (Tensor y, Tensor mean, Tensor denom)");
  m.def("simam_backward(Tensor dy, Tensor x, Tensor mean, Tensor denom) -> Tensor");
}
