// Every operator schema of the attnkernels namespace, in one place. The CPU
// and CUDA implementations register themselves per file (cpu/<family>.cpp,
// cuda/<family>.cu); fake tensors and autograd are registered from Python
// (attnkernels/<family>/op.py).
#include <torch/library.h>

TORCH_LIBRARY(attnkernels, m) {
  // Squeeze-and-Excitation. pool: 0 avg, 1 avg_max; act: 0 identity, 1 relu,
  // 2 silu, 3 hardswish; gate: 0 sigmoid, 1 hard_sigmoid. pooled/xmax are the
  // per-(n, c) statistics kept for backward (xmax is empty for avg); dz and dh
  // are the per-sample gradients of the gate network's pre-activations, from
  // which Python forms the weight gradients.
  m.def(
      "se_forward(Tensor x, Tensor w1, Tensor? b1, Tensor? w2, Tensor? b2, int pool, int act, "
      "int gate) -> (Tensor y, Tensor pooled, Tensor xmax)");
  m.def(
      "se_backward(Tensor dy, Tensor x, Tensor pooled, Tensor xmax, Tensor w1, Tensor? b1, "
      "Tensor? w2, Tensor? b2, int pool, int act, int gate) -> (Tensor dx, Tensor dz, Tensor dh)");

  // Efficient Channel Attention: weight is the conv1d kernel (k,), k odd; bias
  // is (1,) or None; circular selects circular padding over channels (timm
  // CecaModule) instead of zeros; gate as above. pooled is the per-(n, c) mean
  // kept for backward; dz the gradient of the gate's pre-activation, from which
  // Python forms the weight gradients.
  m.def(
      "eca_forward(Tensor x, Tensor weight, Tensor? bias, bool circular, int gate) "
      "-> (Tensor y, Tensor pooled)");
  m.def(
      "eca_backward(Tensor dy, Tensor x, Tensor pooled, Tensor weight, Tensor? bias, "
      "bool circular, int gate) -> (Tensor dx, Tensor dz)");

  // CBAM: the passes over x; the gate networks (shared MLP, kxk conv,
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

  // Coordinate Attention: the passes over x; the gate network (1x1 conv,
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

  // Triplet Attention: the passes over x; the three gate networks (kxk conv,
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

  // The gate networks' small convolutions (CPU only; elsewhere F.conv2d):
  // same-padded (k / 2), stride 1, no bias, k odd, float32 or float64,
  // contiguous. gate_conv2d: out[n, o] = sum_i conv(input[n, i], weight[o, i]);
  // gate_conv2d_weight_grad: its weight gradient (C_out, C_in, k, k) for grad.
  m.def("gate_conv2d(Tensor input, Tensor weight) -> Tensor");
  m.def("gate_conv2d_weight_grad(Tensor grad, Tensor input, int kernel_size) -> Tensor");

  // The gate networks' matrix products (CPU only; elsewhere torch.matmul):
  // a @ b for a (M, K) or (B, M, K) and b (K, N) or (B, K, N), a 2-D operand
  // shared by every batch entry, float32 or float64, any strides; the result
  // is contiguous and bitwise independent of the thread count.
  m.def("gate_matmul(Tensor a, Tensor b) -> Tensor");
}

#ifdef ATTNKERNELS_PYTHON_MODULE
#include <Python.h>
#include "attnkernels_build_info.h"  // written by setup.py: what this build holds
// `import attnkernels._C` loads this library and so runs the registrations
// above; the module holds no op, only what the build was made with
// (`python -m attnkernels --info` shows it).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  const std::pair<const char*, const char*> info[] = {
      {"built_with_torch", ATTNKERNELS_BUILD_TORCH},
      {"cuda_architectures", ATTNKERNELS_BUILD_CUDA_ARCHS},
      {"built_with_cuda", ATTNKERNELS_BUILD_CUDA},
      {"sanitize", ATTNKERNELS_BUILD_SANITIZE},
      {"debug", ATTNKERNELS_BUILD_DEBUG}};
  for (const auto& [name, value] : info) {
    if (PyModule_AddStringConstant(module, name, value) < 0) {
      Py_DECREF(module);
      return nullptr;
    }
  }
  return module;
}
#endif  // ATTNKERNELS_PYTHON_MODULE
