"""Coordinate Attention operators: the composite forward ops, their autograd,
and the fakes of the passes.

The composite forward runs the strip pool over x (one read: the mean over W
per (n, c, h) and over H per (n, c, w)), the gate network on the strips (1x1
conv, BatchNorm over both strips, activation, a 1x1 conv and a gate per
strip), and the apply pass (read x, write y). It saves x, the strips and
conv1's small (N, R, H + W) output. Its backward recomputes the per-strip
convs from it and runs the gate network's backward by hand (no
torch.func.vjp), with one reduction pass over (dy, x) before it and the dx
pass (reads dy only) after: forward 3 passes over x-sized tensors, backward 3.

Two ops share the schema, the fake and the autograd: ``attnkernels::coord_forward``
(C++, csrc/composite/coord.cpp: the compiled passes of the CPU and CUDA
backends, the gate network in C++ with the same ATen and attnkernels ops as
the functions below, so the same bits) and ``attnkernels::coord_forward_triton``
(here: the Triton passes ``attnkernels::coord_*_triton``, which serve without
the compiled extension). See ops/cbam.py for why.

The ops are functional: in BatchNorm training mode they return the batch mean
and unbiased variance, and the caller updates the running statistics.
"""
import enum
from typing import List

import torch

from .._core.layers import activation, gate
from .._core.modes import Activation, Gate, name_of
from .._core.ops import (BN_BATCH, BN_NONE, BN_RUNNING, activation_backward,  # noqa: F401
                         gate_backward, like_x, normalise_backward, normalise_saving, pass_fakes,
                         passes_of, register_composite, stats_dtype, y_backward)
from .._core.gate_matmul import matmul

_ACT_NAMES = {int(m): name_of(Activation, m) for m in Activation}
_GATE_NAMES = {int(m): name_of(Gate, m) for m in Gate}


class Config(enum.IntEnum):
    """Where each entry sits in the op's ``config`` (csrc/composite/coord.cpp's Config):
    [act, gate, bn (BN_NONE, BN_BATCH, BN_RUNNING), skip,
    save (1: return what the backward reads; 0: no backward will run, return
    mh, mw, z and zn empty and free them before y is allocated: 14 of the
    78 MB inference peak at 128x2048x7x7)]
    """
    ACT = 0
    GATE = 1
    BN = 2
    SKIP = 3
    SAVE = 4


def strip_conv(s, w, b):
    """A 1x1 conv over strips: (N, in, T) -> (N, out, T), w @ s per sample."""
    z = matmul(w.to(s.dtype), s)
    return z if b is None else z.add_(b.to(s.dtype)[:, None])


def strip_conv_backward(grad, s, w, b):
    """(d s, d w, d b) of ``strip_conv``, the parameter gradients in their dtypes."""
    ds = matmul(w.to(s.dtype).t(), grad)
    # sum over (n, t) of grad[n, :, t] s[n, :, t]^T: one (O, N*T) @ (N*T, I) product
    dw = matmul(grad.transpose(0, 1).reshape(grad.shape[1], -1),
                s.transpose(1, 2).reshape(-1, s.shape[1])).to(w.dtype)
    return ds, dw, None if b is None else grad.sum((0, 2)).to(b.dtype)


def coord_gates(mh, mw, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                eps: float):
    """(ah (N, C, H), aw (N, C, W), z, zn, save_mean, save_invstd, batch mean,
    batch variance) from the strip means: z = conv1 over both strips (N, R,
    H + W), zn its BatchNorm (over both strips together); BatchNorm's saved and
    batch statistics (empty unless it uses batch statistics)."""
    z = strip_conv(torch.cat([mh, mw], dim=2), w1, b1)
    zn, *bn_saved = normalise_saving(z, config[Config.BN], bn_w, bn_b, bn_mean, bn_var, eps)
    ah, aw, _, _ = strip_gates(zn, mh.shape[2], wh, bh, ww, bw, config)
    return (ah, aw, z, zn, *bn_saved)


def strip_gates(zn, H: int, wh, bh, ww, bw, config: List[int]):
    """(ah, aw, th, tw): the gates of the per-strip 1x1 convs th, tw of act(zn).
    The backward recomputes them from zn (two GEMMs) rather than keep th and tw,
    which are as large as the strips (2/7 of x on ResNet's last stage)."""
    a_h, a_w = activation(zn, _ACT_NAMES[config[Config.ACT]]).split([H, zn.shape[2] - H], dim=2)
    th, tw = strip_conv(a_h, wh, bh), strip_conv(a_w, ww, bw)
    name = _GATE_NAMES[config[Config.GATE]]
    return gate(th, name), gate(tw, name), th, tw


def coord_gates_backward(dah, daw, ah, aw, th, tw, mh, mw, z, zn, save_mean, save_invstd, w1, b1,
                         wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                         eps: float):
    """(d mh, d mw, d w1, d b1, d wh, d bh, d ww, d bw, d bn_w, d bn_b) of
    ``coord_gates``."""
    name, act = _GATE_NAMES[config[Config.GATE]], _ACT_NAMES[config[Config.ACT]]
    H = mh.shape[2]
    a = activation(zn, act)
    a_h, a_w = a.split([H, mw.shape[2]], dim=2)
    da_h, dwh, dbh = strip_conv_backward(gate_backward(dah, th, ah, name), a_h, wh, bh)
    da_w, dww, dbw = strip_conv_backward(gate_backward(daw, tw, aw, name), a_w, ww, bw)
    dzn = activation_backward(torch.cat([da_h, da_w], dim=2), zn, a, act)
    dz, dbn_w, dbn_b = normalise_backward(dzn, z, config[Config.BN], bn_w, bn_b, bn_mean, bn_var,
                                          save_mean, save_invstd, eps)
    ds, dw1, db1 = strip_conv_backward(dz, torch.cat([mh, mw], dim=2), w1, b1)
    dmh, dmw = ds[:, :, :H], ds[:, :, H:]
    return dmh, dmw, dw1, db1, dwh, dbh, dww, dbw, dbn_w, dbn_b


# ---------------------------------------------------------------- passes per backend

def passes(backend: str):
    """The four passes of ``backend``: (pool, apply, backward_reduce, backward_apply)."""
    return passes_of(PASS_FAKES, backend)

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


PASS_FAKES = pass_fakes("coord", pool_fake, apply_fake, backward_reduce_fake, backward_apply_fake)


# ---------------------------------------------------------------- the composite op

def forward_fake(x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps):
    n = w1.shape[0] if config[Config.BN] == BN_BATCH else 0
    acc = stats_dtype(x)
    N, C, H, W = x.shape
    R = w1.shape[0]
    saved = bool(config[Config.SAVE])
    empty = (lambda shape: x.new_empty(shape if saved else (0,), dtype=acc))  # noqa: E731
    strips = pool_fake(x) if saved else (empty(()), empty(()))
    z = empty((N, R, H + W) if config[Config.BN] != BN_NONE else (0,))
    zn = empty((N, R, H + W))
    return (torch.empty_like(x), *(x.new_empty((n,), dtype=acc) for _ in range(2)),
            *strips, z, zn, *(x.new_empty((n,), dtype=acc) for _ in range(2)))


@y_backward
def backward(ctx, dy, *_unused):
    (x, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var,
     mh, mw, z, zn, save_mean, save_invstd) = ctx.saved_tensors
    config, eps, backend = ctx.params
    _, _, backward_reduce, backward_apply = passes(backend)
    H, W = x.shape[2], x.shape[3]
    dy = like_x(dy, x)
    with torch.autocast(x.device.type, enabled=False):
        ah, aw, th, tw = strip_gates(zn, H, wh, bh, ww, bw, config)
        dah, daw = backward_reduce(dy, x, ah, aw)
        dmh, dmw, *param_grads = coord_gates_backward(
            dah, daw, ah, aw, th, tw, mh, mw, zn if config[Config.BN] == BN_NONE else z, zn, save_mean,
            save_invstd, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps)
        dx = backward_apply(dy, ah, aw, (dmh / W).contiguous(), (dmw / H).contiguous(),
                            bool(config[Config.SKIP]))
    return (dx, *param_grads, None, None, None, None)


SAVED_OUTPUTS = slice(3, None)  # the outputs the backward reads (after y and the batch statistics)


def register() -> None:
    """Fakes for the compiled Coordinate Attention passes and the fake and
    autograd of the native composite (once the extension is loaded)."""
    register_composite("coord", PASS_FAKES, forward_fake, backward, SAVED_OUTPUTS, Config.SAVE)
