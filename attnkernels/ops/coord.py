"""Coordinate Attention operators: the composite forward op, its autograd, and
the fakes of the passes.

``attnkernels::coord_forward`` runs the strip pool over x (one read: the mean
over W per (n, c, h) and over H per (n, c, w)), the gate network in PyTorch on
the strips (1x1 conv, BatchNorm over both strips, activation, a 1x1 conv and a
gate per strip), and the apply pass (read x, write y). It saves x and the
strips only. Its backward recomputes the gate network from the strips under
``torch.func.vjp``, with one reduction pass over (dy, x) before it and the dx
pass (reads dy only) after: forward 3 passes over x-sized tensors, backward 3.

The op is functional: in BatchNorm training mode it returns the batch mean
and unbiased variance, and the caller updates the running statistics. The
passes come from the backend: the compiled ``attnkernels::coord_*`` ops (CPU,
CUDA) or their Triton twins (``attnkernels::coord_*_triton``).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..reference._layers import activation, gate
from ._common import (BN_BATCH, BN_NONE, BN_RUNNING, batch_stats, like_x, normalise,  # noqa: F401
                      stats_dtype, vjp_of)

_ACT_NAMES = {0: "identity", 1: "relu", 2: "silu", 3: "hardswish"}
_GATE_NAMES = {0: "sigmoid", 1: "hard_sigmoid"}
# config: [act, gate, bn (BN_NONE, BN_BATCH, BN_RUNNING), skip]
_ACT, _GATE, _BN, _SKIP = range(4)


def _strip_conv(s, w, b):
    """A 1x1 conv over a strip: (N, in, T) -> (N, out, T), as one (N*T, in) x (in, out) GEMM."""
    z = F.linear(s.transpose(1, 2), w.to(s.dtype), None if b is None else b.to(s.dtype))
    return z.transpose(1, 2).contiguous()


def coord_gates(mh, mw, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                eps: float):
    """(ah (N, C, H), aw (N, C, W)) from the strip means."""
    z = _strip_conv(torch.cat([mh, mw], dim=2), w1, b1)
    return coord_gates_of(z, mh.shape[2], wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps)


def coord_gates_of(z, H: int, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                   eps: float):
    """(ah, aw) from conv1's output z (N, R, H + W): act(BN(z)), BatchNorm over
    both strips together, then a 1x1 conv and the gate per strip."""
    y = activation(normalise(z, config[_BN], bn_w, bn_b, bn_mean, bn_var, eps),
                   _ACT_NAMES[config[_ACT]])
    y_h, y_w = y.split([H, z.shape[2] - H], dim=2)
    name = _GATE_NAMES[config[_GATE]]
    return gate(_strip_conv(y_h, wh, bh), name), gate(_strip_conv(y_w, ww, bw), name)


# ---------------------------------------------------------------- passes per backend

def passes(backend: str):
    """The four passes of ``backend``: (pool, apply, backward_reduce, backward_apply)."""
    ops = torch.ops.attnkernels
    if backend == "triton":
        from ..triton import coord  # noqa: F401  (registers the *_triton ops)

        return (ops.coord_pool_triton, ops.coord_apply_triton, ops.coord_backward_reduce_triton,
                ops.coord_backward_apply_triton)
    return ops.coord_pool, ops.coord_apply, ops.coord_backward_reduce, ops.coord_backward_apply


def _strip(x, length):
    return x.new_empty((x.shape[0], x.shape[1], length), dtype=stats_dtype(x))


def pool_fake(x):
    return _strip(x, x.shape[2]), _strip(x, x.shape[3])


def apply_fake(x, ah, aw, skip):
    return torch.empty_like(x)


def backward_reduce_fake(dy, x, ah, aw):
    return torch.empty_like(ah), torch.empty_like(aw)


def backward_apply_fake(dy, ah, aw, gh, gw, skip):
    return torch.empty_like(dy)


PASS_FAKES = {
    "coord_pool": pool_fake,
    "coord_apply": apply_fake,
    "coord_backward_reduce": backward_reduce_fake,
    "coord_backward_apply": backward_apply_fake,
}


# ---------------------------------------------------------------- the composite op

@torch.library.custom_op("attnkernels::coord_forward", mutates_args=())
def coord_forward(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                  wh: torch.Tensor, bh: Optional[torch.Tensor], ww: torch.Tensor,
                  bw: Optional[torch.Tensor], bn_w: Optional[torch.Tensor],
                  bn_b: Optional[torch.Tensor], bn_mean: Optional[torch.Tensor],
                  bn_var: Optional[torch.Tensor], config: List[int], eps: float, backend: str
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor]:
    """(y, mh, mw, bn_mean, bn_var_unbiased); the last two are the batch
    statistics of conv1's output over both strips (empty unless config's
    BatchNorm uses batch statistics)."""
    pool, apply = passes(backend)[:2]
    with torch.autocast(x.device.type, enabled=False):
        mh, mw = pool(x)
        z = _strip_conv(torch.cat([mh, mw], dim=2), w1, b1)
        ah, aw = coord_gates_of(z, x.shape[2], wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var,
                                config, eps)
        stats = batch_stats(z) if config[_BN] == BN_BATCH else tuple(
            x.new_empty((0,), dtype=stats_dtype(x)) for _ in range(2))
        return (apply(x, ah.contiguous(), aw.contiguous(), bool(config[_SKIP])), mh, mw, *stats)


@coord_forward.register_fake
def _coord_forward_fake(x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps,
                        backend):
    n = w1.shape[0] if config[_BN] == BN_BATCH else 0
    acc = stats_dtype(x)
    return (torch.empty_like(x), *pool_fake(x), x.new_empty((n,), dtype=acc),
            x.new_empty((n,), dtype=acc))


def _setup_context(ctx, inputs, output):
    x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps, backend = inputs
    _, mh, mw, _, _ = output
    ctx.save_for_backward(x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, mh, mw)
    ctx.params = (list(config), eps, backend)


def _backward(ctx, dy, *_unused):
    x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, mh, mw = ctx.saved_tensors
    config, eps, backend = ctx.params
    _, _, backward_reduce, backward_apply = passes(backend)
    H, W = x.shape[2], x.shape[3]
    dy = like_x(dy, x)
    with torch.autocast(x.device.type, enabled=False):
        (ah, aw), gates_vjp = vjp_of(
            lambda *a: coord_gates(*a, bn_mean, bn_var, config, eps),
            [mh, mw, w1, b1, wh, bh, ww, bw, bn_w, bn_b])
        ah, aw = ah.contiguous(), aw.contiguous()
        dah, daw = backward_reduce(dy, x, ah, aw)
        dmh, dmw, *param_grads = gates_vjp((dah, daw))
        dx = backward_apply(dy, ah, aw, (dmh / W).contiguous(), (dmw / H).contiguous(),
                            bool(config[_SKIP]))
    return (dx, *param_grads, None, None, None, None, None)


coord_forward.register_autograd(_backward, setup_context=_setup_context)


def register() -> None:
    """Fakes for the compiled Coordinate Attention passes (once the extension is loaded)."""
    for name, fake in PASS_FAKES.items():
        torch.library.register_fake(f"attnkernels::{name}")(fake)
