// Triplet Attention: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp; the mode codes are
// csrc/common/modes.h's. The CPU and CUDA kernels register themselves
// (cpu/, cuda/); fakes and autograd come from attnkernels/triplet/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // The passes over x; the three gate networks (kxk conv,
  // BatchNorm, sigmoid on [max, mean] maps) run between them
  // (csrc/composite/triplet.cpp, attnkernels/triplet/op.py). A reduction over C gives an (N, H, W) map,
  // over H an (N, C, W) map, over W an (N, C, H) map, in the accumulate dtype.
  //   pool            one read of x: mean and max over C, over H and over W
  //   apply           y = (x s_hw[n,h,w] + x s_cw[n,c,w] + x s_hc[n,c,h]) / 3, or
  //                   (x s_cw + x s_hc) / 2 without spatial (s_hw then unused)
  //   backward_reduce one read of (dy, x): dc, dh, dw, the sums of dy * x over
  //                   C, H and W, and the ties: per map, the index of the first
  //                   element equal to the max (or the first NaN where the max
  //                   is NaN), as torch.max(dim) routes its gradient; -1: none
  //   backward_apply  dx = the same mean of dy's products with the gates
  //                        + per axis: gmean + gmax where the element is the tie
  // g*mean is what each element receives from a mean (d mean / count), g*max
  // what the routed element receives from a max.
  // triplet_forward: the native composite (csrc/composite/triplet.cpp) of the
  // two forward passes and the gate networks between them; config and outputs
  // as for the Triton composite triplet_forward_triton (attnkernels/triplet/triton.py).
  m.def(
      "triplet_forward(Tensor x, Tensor conv_w, Tensor? conv_b, Tensor? bn_w, Tensor? bn_b, "
      "Tensor? bn_mean, Tensor? bn_var, int[] config, float eps) -> (Tensor y, Tensor cmean, "
      "Tensor cmax, Tensor hmean, Tensor hmax, Tensor wmean, Tensor wmax, Tensor q_cw, "
      "Tensor q_hc, Tensor q_hw, Tensor s_hw, Tensor s_cw, Tensor s_hc, Tensor save_mean, "
      "Tensor save_invstd, Tensor batch_mean, Tensor batch_var)");
  m.def(
      "triplet_pool(Tensor x) -> (Tensor cmean, Tensor cmax, Tensor hmean, Tensor hmax, "
      "Tensor wmean, Tensor wmax)");
  m.def("triplet_apply(Tensor x, Tensor s_hw, Tensor s_cw, Tensor s_hc, bool spatial) -> Tensor");
  m.def(
      "triplet_backward_reduce(Tensor dy, Tensor x, Tensor cmax, Tensor hmax, Tensor wmax) "
      "-> (Tensor dc, Tensor dh, Tensor dw, Tensor ctie, Tensor htie, Tensor wtie)");
  m.def(
      "triplet_backward_apply(Tensor dy, Tensor s_hw, Tensor s_cw, Tensor s_hc, bool spatial, "
      "Tensor ctie, Tensor cgmean, Tensor cgmax, Tensor htie, Tensor hgmean, Tensor hgmax, "
      "Tensor wtie, Tensor wgmean, Tensor wgmax) -> Tensor");
}
