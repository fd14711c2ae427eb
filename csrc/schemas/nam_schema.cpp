// NAM's channel attention: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp. The CPU and CUDA kernels
// register themselves (cpu/, cuda/); fakes and autograd come from
// attnkernels/nam/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // Per channel: a BatchNorm (gamma = weight, beta = bias) with the batch's
  // statistics over (N, H, W), or with running_mean and running_var when
  // given; w = |gamma| / sum |gamma| (no gradient flows through w);
  // y = x * sigmoid(w * bn(x)). mean and invstd (C,) are what normalised, in
  // the accumulate dtype; var is the batch's unbiased variance (C,) for the
  // running update, or (0,) with running statistics. The op does not update
  // the running statistics (attnkernels/nam/functional.py does).
  m.def(
      "nam_forward(Tensor x, Tensor weight, Tensor bias, Tensor? running_mean, "
      "Tensor? running_var, float eps) -> (Tensor y, Tensor mean, Tensor invstd, Tensor var)");
  // With g = dy * x * s (1 - s), S1 = sum g, S2 = sum g (x - mean) per channel:
  // dweight = w invstd S2, dbias = w S1, dx = dy s + a g - k2 (x - mean) - k3
  // (a = invstd gamma w; k2, k3 from S2, S1 with batch statistics, else 0).
  m.def(
      "nam_backward(Tensor dy, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor invstd, bool batch) -> (Tensor dx, Tensor dweight, Tensor dbias)");
}
