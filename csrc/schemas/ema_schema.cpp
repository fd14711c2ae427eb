// EMA (Efficient Multi-scale Attention): its operator schemas and what they
// compute. The attnkernels namespace is opened in csrc/ops.cpp. The CPU
// kernels register themselves (cpu/); fakes and autograd come from
// attnkernels/ema/op.py. The 3x3 convolution branch stays with the library:
// x2 = conv3x3(x.reshape(B * G, g, H, W)) is an input.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // Per group (b, G): x_g (g = C / groups channels of x), x2_g = x2[b * G + G].
  //   strips (B*G, g, H + W): the mean of x_g over W (H of them), then over H;
  //   a = w1 (g, g) @ strips + b1, gates = sigmoid(a) (gh | gw);
  //   z = x_g * gh * gw, mu and rstd = 1 / sqrt(var + eps) per channel;
  //   x1 = gn_w * (z - mu) * rstd + gn_b; x11 = softmax over channels of gn_b
  //   (the mean of x1 over H*W is gn_b exactly), x21 = softmax of mean_hw x2;
  //   s = sigmoid(x11 . x2 + x21 . x1) (B*G, H, W); y = x_g * s.
  // stats (B*G, 4, g): mu, rstd, x11, x21. strips, gates, stats and s are in
  // the accumulate dtype; they are what ema_backward reads (with x and x2).
  m.def(
      "ema_forward(Tensor x, Tensor x2, Tensor w1, Tensor? b1, Tensor? gn_w, Tensor? gn_b, "
      "int groups, float eps) -> (Tensor y, Tensor strips, Tensor gates, Tensor stats, "
      "Tensor s)");
  // dx (the direct, GroupNorm and strip-pool paths), dx2 (for conv3x3's
  // backward), and the parameters' gradients in the accumulate dtype:
  // dw1 (g, g), db1, dgn_w, dgn_b (g), summed over the groups in order.
  m.def(
      "ema_backward(Tensor dy, Tensor x, Tensor x2, Tensor w1, Tensor? gn_w, Tensor? gn_b, "
      "Tensor strips, Tensor gates, Tensor stats, Tensor s, int groups) -> (Tensor dx, "
      "Tensor dx2, Tensor dw1, Tensor db1, Tensor dgn_w, Tensor dgn_b)");
}
