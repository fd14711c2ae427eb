// Coordinate Attention: its operator schemas and what they compute. The
// attnkernels namespace is opened in csrc/ops.cpp; the mode codes are
// csrc/common/modes.h's. The CPU and CUDA kernels register themselves
// (cpu/, cuda/); fakes and autograd come from attnkernels/coord/op.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(attnkernels, m) {
  // The passes over x; the gate network (1x1 conv,
  // BatchNorm, activation, two 1x1 convs, gates) runs between them
  // (csrc/composite/coord.cpp, attnkernels/coord/op.py). mh (N, C, H) is the mean over W, mw (N, C, W)
  // the mean over H; ah (N, C, H) and aw (N, C, W) are the gates, all in the
  // accumulate dtype. y = x * aw * ah (+ x with skip). The backward reduction
  // reads (dy, x) once for dah = sum_w dy * x * aw and daw = sum_h dy * x * ah;
  // gh (N, C, H) and gw (N, C, W) are what each element receives from the
  // strip means (d mean / count), and dx = dy * aw * ah + gh + gw (+ dy).
  // coord_forward: the native composite (csrc/composite/coord.cpp) of the two
  // forward passes and the gate network between them; config and outputs as
  // for the Triton composite coord_forward_triton (attnkernels/coord/triton.py).
  m.def(
      "coord_forward(Tensor x, Tensor w1, Tensor? b1, Tensor wh, Tensor? bh, Tensor ww, "
      "Tensor? bw, Tensor? bn_w, Tensor? bn_b, Tensor? bn_mean, Tensor? bn_var, int[] config, "
      "float eps) -> (Tensor y, Tensor batch_mean, Tensor batch_var, Tensor mh, Tensor mw, "
      "Tensor z, Tensor zn, Tensor save_mean, Tensor save_invstd)");
  m.def("coord_pool(Tensor x) -> (Tensor mh, Tensor mw)");
  m.def("coord_apply(Tensor x, Tensor ah, Tensor aw, bool skip) -> Tensor");
  m.def("coord_backward_reduce(Tensor dy, Tensor x, Tensor ah, Tensor aw) -> (Tensor dah, Tensor daw)");
  m.def(
      "coord_backward_apply(Tensor dy, Tensor ah, Tensor aw, Tensor gh, Tensor gw, bool skip) "
      "-> Tensor");
}
