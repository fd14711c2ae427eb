// CBAM: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp; the mode codes are
// csrc/common/modes.h's. The CPU and CUDA kernels register themselves
// (cpu/, cuda/); fakes and autograd come from attnkernels/cbam/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // The passes over x; the gate networks (shared MLP, kxk conv,
  // BatchNorm) run between them (csrc/composite/cbam.cpp, attnkernels/cbam/op.py).
  // ca is the channel gate (N, C), sa the spatial gate (N, H, W), both in the
  // accumulate dtype; u = x * ca is never materialised.
  //   channel_pool          mean and max over H*W per (n, c)
  //   spatial_pool          mean and max over C of u per (n, h, w)
  //   apply                 y = x * ca * sa
  //   backward_reduce       one read of dy and x: dca = sum_hw dy * x * sa,
  //                         dsa = sum_c dy * x * ca, and where the maxima are
  //   spatial_pool_backward dca through the spatial statistics:
  //                         sum_hw x * (sgmean + sgmax where u is routed the max)
  //   backward_apply        dx = ca * (dy * sa + sgmean + sgmax where routed)
  //                              + cgmean + cgmax where routed
  // g*mean is the gradient each element receives from a mean (d mean / count),
  // g*max what a routed maximal element receives. first_max: a max routes its
  // gradient to the first maximal element (max_pool2d, torch.max(dim)); else
  // to every maximal element (amax; g*max is then already divided by the
  // count). The *tie tensors (int32) hold that first index (-1: none) or the count.
  // cbam_forward: the native composite (csrc/composite/cbam.cpp) of the three
  // forward passes and the gate networks between them; config and outputs as
  // for the Triton composite cbam_forward_triton (attnkernels/cbam/triton.py).
  m.def(
      "cbam_forward(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, Tensor? conv_w, "
      "Tensor? conv_b, Tensor? bn_w, Tensor? bn_b, Tensor? bn_mean, Tensor? bn_var, int[] config, "
      "float eps) -> (Tensor y, Tensor batch_mean, Tensor batch_var, Tensor cmean, Tensor cmax, "
      "Tensor h, Tensor z, Tensor ca, Tensor smean, Tensor smax, Tensor sa, Tensor q, Tensor qn, "
      "Tensor save_mean, Tensor save_invstd)");
  m.def("cbam_channel_pool(Tensor x) -> (Tensor mean, Tensor max)");
  m.def("cbam_spatial_pool(Tensor x, Tensor ca) -> (Tensor mean, Tensor max)");
  m.def("cbam_apply(Tensor x, Tensor ca, Tensor sa) -> Tensor");
  m.def(
      "cbam_backward_reduce(Tensor dy, Tensor x, Tensor ca, Tensor sa, Tensor cmax, Tensor smax, "
      "bool first_max) -> (Tensor dca, Tensor dsa, Tensor ctie, Tensor stie)");
  m.def(
      "cbam_spatial_pool_backward(Tensor x, Tensor ca, Tensor smax, Tensor stie, Tensor sgmean, "
      "Tensor sgmax, bool first_max) -> Tensor");
  m.def(
      "cbam_backward_apply(Tensor dy, Tensor x, Tensor ca, Tensor sa, Tensor cmax, Tensor ctie, "
      "Tensor cgmean, Tensor cgmax, Tensor smax, Tensor stie, Tensor sgmean, Tensor sgmax, "
      "bool first_max) -> Tensor");
}
