"""Helpers shared by every family's operator registration."""
import functools

from typing import Callable, Dict

import torch

from .gate_matmul import matmul
from .modes import BatchNormMode


def stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the per-(n, c) statistics the ops keep: fp32, or fp64 for fp64 input."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def like_x(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy in x's memory format. The kernels index dy and x alike; a gradient that
    arrives in the other format is converted here, once (documented limit)."""
    fmt = torch.channels_last if (not x.is_contiguous()
                                  and x.is_contiguous(memory_format=torch.channels_last)) \
        else torch.contiguous_format
    return dy.contiguous(memory_format=fmt)


def only_y_differentiable(ctx, output) -> None:
    """In setup_context: the op's outputs after y (statistics and intermediates
    kept for the backward) are not differentiable, and the backward receives
    None, not zeros, for them. Autograd's default fills a zero tensor for every
    output without a gradient (on Triplet Attention at 16x256x56x56, 12
    map-sized zeros, 7.7 MB alive while dx is allocated)."""
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def composite_setup_context(backend: str, saved_outputs: slice, save_flag=None):
    """The autograd setup_context of a composite forward op (inputs: the
    tensors, then config and eps): saves every tensor input and
    ``output[saved_outputs]``, the rest of what the backward reads; ctx.params
    is (config, eps, backend), backend naming the passes the backward runs.
    save_flag: the index in config of the op's save entry (1: those outputs
    are returned; 0: empty, as no backward was expected), if it has one."""

    def setup_context(ctx, inputs, output):
        *tensors, config, eps = inputs
        if save_flag is not None and not config[save_flag]:
            raise RuntimeError(
                "an attnkernels composite forward ran with save=0 in its config under "
                "autograd: its backward would have nothing to read; pass save=1 wherever "
                "grad mode is on and an input requires grad")
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(*tensors, *output[saved_outputs])
        ctx.params = (list(config), eps, backend)

    return setup_context


def y_backward(backward):
    """Decorates a backward ``(ctx, dy, *other_output_grads)`` of an op set up
    with ``only_y_differentiable``: an undefined (None) gradient of y, which
    that setting lets through (gradcheck sends one), gives no gradient for any
    input without calling it."""

    @functools.wraps(backward)
    def wrapped(ctx, dy, *rest):
        if dy is None:
            return (None,) * len(ctx.needs_input_grad)
        return backward(ctx, dy, *rest)

    return wrapped


def autograd_records(tensors) -> bool:
    """Whether autograd records an op on these arguments (torch.library's
    condition for running the op's autograd): grad mode on and some tensor
    requiring grad (a list argument's tensors included)."""
    flat = (u for t in tensors for u in (t if isinstance(t, (list, tuple)) else (t,)))
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in flat)


def call_forward(op, tensors, *rest):
    """``op(*tensors, *rest)``. Where autograd will not record it (see
    ``autograd_records``) and no compiler traces, straight to the kernels
    under the autograd key: torch.library's autograd kernel would redispatch
    there itself, after a round trip through Python and a second parse of the
    arguments (about 25 us of a 450 us CBAM forward at batch 1 on the CPU)."""
    if torch.compiler.is_compiling() or autograd_records(tensors):
        return op(*tensors, *rest)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*tensors, *rest)


def composite_forward_op(package: str, backend: str):
    """The composite forward op of the family in ``package`` (e.g.
    "attnkernels.cbam") for ``backend``: the native (C++) one, or for "triton"
    the Python one on the Triton passes, which the family's triton.py registers
    (the caller imports it). Both take the same arguments."""
    family = package.rsplit(".", 1)[-1]
    suffix = "_triton" if backend == "triton" else ""
    return getattr(torch.ops.attnkernels, f"{family}_forward{suffix}").default


def pass_fakes(family: str, *fakes) -> Dict[str, Callable]:
    """{"<family>_<pass>": fake} of the fakes of a family's passes over x, each
    named ``<pass>_fake``, in the order the family's ``passes`` lists them."""
    return {f"{family}_{fake.__name__[:-len('_fake')]}": fake for fake in fakes}


def passes_of(fakes: Dict[str, Callable], backend: str):
    """The ops of the passes named in ``fakes`` (see pass_fakes) for ``backend``:
    the compiled ones, or for "triton" their Triton twins (``<name>_triton``)."""
    suffix = "_triton" if backend == "triton" else ""
    return tuple(getattr(torch.ops.attnkernels, name + suffix) for name in fakes)


def register_composite(family: str, fakes: Dict[str, Callable], forward_fake, backward,
                       saved_outputs: slice, save_flag=None, backend: str = "native") -> None:
    """The fakes of a family's passes and the fake and autograd of its composite
    forward op, for the compiled ops (once the extension is loaded) or, with
    backend="triton", for the Triton ones (``*_triton``); arguments of the
    autograd's setup as for ``composite_setup_context``."""
    suffix = "_triton" if backend == "triton" else ""
    for name, fake in fakes.items():
        torch.library.register_fake(f"attnkernels::{name}{suffix}")(fake)
    op = f"attnkernels::{family}_forward{suffix}"
    torch.library.register_fake(op)(forward_fake)
    torch.library.register_autograd(
        op, backward, setup_context=composite_setup_context(backend, saved_outputs, save_flag))


def register_forward_backward(family: str, forward_fake, backward_fake, make_autograd,
                              backend: str = "native") -> None:
    """The fakes of a family's ``<family>_forward`` and ``<family>_backward``
    ops and the forward's autograd, ``make_autograd(backward op)`` giving
    (setup_context, backward): for the compiled ops (once the extension is
    loaded) or, with backend="triton", for their Triton twins (``*_triton``)."""
    suffix = "_triton" if backend == "triton" else ""
    forward, backward_name = f"{family}_forward{suffix}", f"{family}_backward{suffix}"
    torch.library.register_fake(f"attnkernels::{forward}")(forward_fake)
    torch.library.register_fake(f"attnkernels::{backward_name}")(backward_fake)
    setup_context, backward = make_autograd(getattr(torch.ops.attnkernels, backward_name))
    torch.library.register_autograd(f"attnkernels::{forward}", backward,
                                    setup_context=setup_context)


# ---------------------------------------------------------------- gate pieces, backward by hand
# The gate networks' backward, written out with the same aten backward ops
# eager autograd calls (so the rounding is eager's), from intermediates the
# forward saved: torch.func.vjp cost about 1.5 ms of Python per module call
# (measured on CBAM's small MLP), more than the passes over x on late stages.

def activation_backward(grad: torch.Tensor, h: torch.Tensor, a: torch.Tensor,
                        name: str) -> torch.Tensor:
    """d h of ``a = activation(h, name)`` for the output gradient grad."""
    if name == "identity":
        return grad
    if name == "relu":
        return torch.ops.aten.threshold_backward(grad, a, 0)
    if name == "silu":
        return torch.ops.aten.silu_backward(grad, h)
    if name == "hardswish":
        return torch.ops.aten.hardswish_backward(grad, h)
    raise ValueError(f"unknown activation {name!r}")


def gate_backward(grad: torch.Tensor, z: torch.Tensor, g: torch.Tensor, name: str) -> torch.Tensor:
    """d z of ``g = gate(z, name)`` for the output gradient grad."""
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, g)
    if name == "hard_sigmoid":
        return torch.ops.aten.hardsigmoid_backward(grad, z)
    raise ValueError(f"unknown gate {name!r}")


def linear_backward(grad: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor,
                    has_bias: bool):
    """(d inp, d weight, d bias or None) of ``F.linear(inp, weight, bias)`` on 2-D inp."""
    return (matmul(grad, weight), matmul(grad.t(), inp), grad.sum(0) if has_bias else None)


# How a gate network's BatchNorm normalises (the ``bn`` entry of an op's config).
BN_NONE, BN_BATCH, BN_RUNNING = (int(m) for m in BatchNormMode)


def normalise(z: torch.Tensor, mode: int, weight, bias, running_mean, running_var,
              eps: float) -> torch.Tensor:
    """BatchNorm of z (N, C, ...) in z's dtype: with the batch statistics
    (BN_BATCH), the running ones (BN_RUNNING), or not at all (BN_NONE). Never
    updates running statistics: the caller does, from ``batch_stats``."""
    if mode == BN_NONE:
        return z
    acc = z.dtype
    w = None if weight is None else weight.to(acc)
    b = None if bias is None else bias.to(acc)
    if mode == BN_BATCH:
        return torch.nn.functional.batch_norm(z, None, None, w, b, True, 0.0, eps)
    return torch.nn.functional.batch_norm(z, running_mean.to(acc), running_var.to(acc), w, b,
                                          False, 0.0, eps)


def normalise_saving(z: torch.Tensor, mode: int, weight, bias, running_mean, running_var,
                     eps: float):
    """``normalise`` that also returns what ``normalise_backward`` needs and, for
    BN_BATCH, the batch statistics: (out, save_mean, save_invstd, batch mean,
    unbiased batch variance), all from one native_batch_norm (fresh running
    buffers at momentum 1 come out as the batch's statistics). The last four are
    empty unless mode is BN_BATCH. An empty z (native_batch_norm refuses it)
    takes F.batch_norm's path for it, with zeros for statistics: callers leave
    running statistics alone on an empty batch, as F.batch_norm does."""
    width = z.shape[1]
    if mode != BN_BATCH or z.numel() == 0:
        return (normalise(z, mode, weight, bias, running_mean, running_var, eps),
                *(z.new_zeros((width if mode == BN_BATCH else 0,)) for _ in range(4)))
    mean = torch.zeros(width, dtype=z.dtype, device=z.device)
    var = torch.ones(width, dtype=z.dtype, device=z.device)
    out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        z, None if weight is None else weight.to(z.dtype),
        None if bias is None else bias.to(z.dtype), mean, var, True, 1.0, eps)
    return out, save_mean, save_invstd, mean, var


def normalise_backward(grad: torch.Tensor, z: torch.Tensor, mode: int, weight, bias,
                       running_mean, running_var, save_mean, save_invstd, eps: float):
    """(d z, d weight, d bias) of ``normalise_saving``; the parameter gradients in
    the parameters' dtypes (None where a parameter is None or mode is BN_NONE)."""
    if mode == BN_NONE:
        return grad, None, None
    if z.numel() == 0:  # native_batch_norm_backward divides by zero on it
        return (torch.zeros_like(grad), None if weight is None else torch.zeros_like(weight),
                None if bias is None else torch.zeros_like(bias))
    acc = z.dtype
    w = None if weight is None else weight.to(acc)
    train = mode == BN_BATCH
    if not train:  # read from the running statistics; CUDA's kernel asserts these are defined
        save_mean = save_invstd = z.new_empty((0,))
    dz, dw, db = torch.ops.aten.native_batch_norm_backward(
        grad, z, w, None if train else running_mean.to(acc),
        None if train else running_var.to(acc), save_mean, save_invstd, train, eps,
        [True, weight is not None, bias is not None])
    return (dz, None if weight is None else dw.to(weight.dtype),
            None if bias is None else db.to(bias.dtype))
