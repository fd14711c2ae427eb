"""CBAM operators: the composite forward ops, their autograd, and the fakes of the passes.

The composite forward runs three passes over x (channel pool, spatial pool of
x * ca, apply) with the two small gate networks between them: the shared MLP
on the (N, C) channel statistics and the kxk conv (+ BatchNorm) on the
(N, 2, H, W) spatial statistics. It saves x, those statistics and the gate
networks' small intermediates. Its backward runs the gate networks' backward
by hand from them (nothing recomputed) and three more passes: a reduction of
(dy, x) to the gates' gradients, the spatial pool's backward (a read of x),
and dx. Forward 4 passes over x-sized tensors (3 reads, 1 write), backward 6
(5 reads, 1 write).

Two ops share the schema, the fake and the autograd: ``attnkernels::cbam_forward``
(C++, csrc/composite/cbam.cpp: the compiled passes of the CPU and CUDA
backends, the gate networks in C++ with the same ATen ops as the functions
below, so the same bits; at batch 1 their Python chain cost more than the
passes) and ``attnkernels::cbam_forward_triton`` (here: the Triton passes
``attnkernels::cbam_*_triton``, which serve without the compiled extension).
The backward, in Python, serves both.

The ops are functional: in BatchNorm training mode they return the batch mean
and unbiased variance, and the caller updates the running statistics.
"""
import enum
from typing import List

import torch

from .._core.layers import activation, gate
from .._core.modes import Activation, Gate, name_of
from .._core.ops import (BN_BATCH, BN_NONE, BN_RUNNING, activation_backward,  # noqa: F401
                         gate_backward, like_x, linear_backward, normalise_backward,
                         normalise_saving, pass_fakes, passes_of, register_composite, stats_dtype,
                         y_backward)
from .._core.gate_conv import same_conv2d, same_conv2d_backward
from .._core.gate_matmul import linear, sum_all

CHANNEL_POOLS = {"avg_max": 0, "mix": 1, "avg": 2, "max": 3, "none": 4}  # none: no channel gate
SPATIAL_INPUTS = {"mean_max": 0, "max_mean": 1, "mix": 2, "none": 3}
_ACT_NAMES = {int(m): name_of(Activation, m) for m in Activation}
_GATE_NAMES = {int(m): name_of(Gate, m) for m in Gate}


class Config(enum.IntEnum):
    """Where each entry sits in the op's ``config`` (csrc/composite/cbam.cpp's Config):
    [channel_pool, act, channel_gate, spatial_input, spatial_gate, bn (BN_NONE,
    BN_BATCH, BN_RUNNING), first_max]
    """
    CHANNEL_POOL = 0
    ACT = 1
    CHANNEL_GATE = 2
    SPATIAL_INPUT = 3
    SPATIAL_GATE = 4
    BN = 5
    FIRST_MAX = 6


# ---------------------------------------------------------------- the gate networks
# Forward and backward by hand: the forward returns the intermediates the
# backward needs (all per-(n, c) or per-(n, h, w): small), so nothing is
# recomputed and no torch.func.vjp runs (see _common.activation_backward).

def _mlp_input(cmean, cmax, config: List[int]) -> torch.Tensor:
    """The rows the shared MLP runs on: both pools stacked (2N, C) for avg_max,
    so that one GEMM per layer serves both; else (N, C)."""
    pool = config[Config.CHANNEL_POOL]
    if pool == CHANNEL_POOLS["avg_max"]:
        return torch.cat([cmean, cmax])
    if pool == CHANNEL_POOLS["mix"]:
        return 0.5 * cmean + 0.5 * cmax
    return cmean if pool == CHANNEL_POOLS["avg"] else cmax


def _bias(b, acc):
    return None if b is None else b.to(acc)


def channel_gate(cmean, cmax, w1, b1, w2, b2, config: List[int]):
    """(ca, h, z): the gate ca (N, C) of the summed shared MLP of the pools, the
    MLP's first-layer output h (rows, R) and the gate's input z (N, C)."""
    acc = cmean.dtype
    h = linear(_mlp_input(cmean, cmax, config), w1.to(acc), _bias(b1, acc))
    if w2 is None:
        z = h
    else:
        z = linear(activation(h, _ACT_NAMES[config[Config.ACT]]), w2.to(acc), _bias(b2, acc))
    if config[Config.CHANNEL_POOL] == CHANNEL_POOLS["avg_max"]:
        n = cmean.shape[0]
        z = z[:n] + z[n:]
    return gate(z, _GATE_NAMES[config[Config.CHANNEL_GATE]]), h, z


def channel_gate_backward(dca, cmean, cmax, h, z, ca, w1, b1, w2, b2, config: List[int]):
    """(d cmean, d cmax, d w1, d b1, d w2, d b2) of ``channel_gate`` (ca: its gate)."""
    acc = z.dtype
    name = _GATE_NAMES[config[Config.CHANNEL_GATE]]
    dz = gate_backward(dca, z, ca, name)
    pool = config[Config.CHANNEL_POOL]
    if pool == CHANNEL_POOLS["avg_max"]:
        dz = torch.cat([dz, dz])
    dw2 = db2 = None
    if w2 is None:
        dh = dz
    else:
        act = _ACT_NAMES[config[Config.ACT]]
        a = activation(h, act)
        da, dw2, db2 = linear_backward(dz, a, w2.to(acc), b2 is not None)
        dh = activation_backward(da, h, a, act)
    ds, dw1, db1 = linear_backward(dh, _mlp_input(cmean, cmax, config), w1.to(acc),
                                   b1 is not None)
    if pool == CHANNEL_POOLS["avg_max"]:
        n = cmean.shape[0]
        dcmean, dcmax = ds[:n], ds[n:]
    elif pool == CHANNEL_POOLS["mix"]:
        dcmean = dcmax = 0.5 * ds
    elif pool == CHANNEL_POOLS["avg"]:
        dcmean, dcmax = ds, torch.zeros_like(ds)
    else:
        dcmean, dcmax = torch.zeros_like(ds), ds
    return (dcmean, dcmax, *(None if g is None else g.to(p.dtype)
                             for g, p in ((dw1, w1), (db1, b1), (dw2, w2), (db2, b2))))


def spatial_input(smean, smax, config: List[int]) -> torch.Tensor:
    mode = config[Config.SPATIAL_INPUT]
    if mode == SPATIAL_INPUTS["mean_max"]:
        return torch.stack([smean, smax], 1)
    if mode == SPATIAL_INPUTS["max_mean"]:
        return torch.stack([smax, smean], 1)
    return (0.5 * smean + 0.5 * smax)[:, None]


def spatial_input_backward(d_in, config: List[int]):
    """(d smean, d smax) of ``spatial_input``."""
    mode = config[Config.SPATIAL_INPUT]
    if mode == SPATIAL_INPUTS["mean_max"]:
        return d_in[:, 0], d_in[:, 1]
    if mode == SPATIAL_INPUTS["max_mean"]:
        return d_in[:, 1], d_in[:, 0]
    d = 0.5 * d_in[:, 0]
    return d, d


def conv_with_bias(s_in, conv_w, conv_b) -> torch.Tensor:
    q = same_conv2d(s_in, conv_w.to(s_in.dtype))
    return q if conv_b is None else q + conv_b.to(s_in.dtype)


def spatial_gate(smean, smax, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                 eps: float):
    """(sa (N, H, W), q, qn, save_mean, save_invstd, batch mean, batch variance):
    the gate of the (BatchNorm of the) conv over the spatial statistics, the
    conv's output q (N, 1, H, W) and the gate's input qn, and BatchNorm's saved
    and batch statistics (empty unless it uses batch statistics)."""
    q = conv_with_bias(spatial_input(smean, smax, config), conv_w, conv_b)
    qn, *bn_saved = normalise_saving(q, config[Config.BN], bn_w, bn_b, bn_mean, bn_var, eps)
    sa = gate(qn, _GATE_NAMES[config[Config.SPATIAL_GATE]])[:, 0].contiguous()
    return (sa, q, qn, *bn_saved)


def spatial_gate_backward(dsa, sa, smean, smax, q, qn, save_mean, save_invstd, conv_w, conv_b,
                          bn_w, bn_b, bn_mean, bn_var, config: List[int], eps: float):
    """(d smean, d smax, d conv_w, d conv_b, d bn_w, d bn_b) of ``spatial_gate``."""
    name = _GATE_NAMES[config[Config.SPATIAL_GATE]]
    dqn = gate_backward(dsa[:, None], qn, sa[:, None], name)
    dq, dbn_w, dbn_b = normalise_backward(dqn, q, config[Config.BN], bn_w, bn_b, bn_mean, bn_var,
                                          save_mean, save_invstd, eps)
    s_in = spatial_input(smean, smax, config)
    d_in, d_w = same_conv2d_backward(dq, s_in, conv_w.to(s_in.dtype))
    dsmean, dsmax = spatial_input_backward(d_in, config)
    return (dsmean, dsmax, d_w.to(conv_w.dtype),
            None if conv_b is None else sum_all(dq).reshape(1).to(conv_b.dtype), dbn_w, dbn_b)


def has_spatial(config) -> bool:
    return config[Config.SPATIAL_INPUT] != SPATIAL_INPUTS["none"]


def has_channel(config) -> bool:
    return config[Config.CHANNEL_POOL] != CHANNEL_POOLS["none"]


def without_channel_gate(x):
    """(cmean, cmax, h, z, ca) of a CBAM without channel gate (ultralytics'
    SpatialAttention alone): ca = 1, the rest zeros (the backward's channel
    terms then vanish) or empty; distinct tensors, as outputs may not alias."""
    return (_channel(x).zero_(), _channel(x).zero_(), empty_stats(x), _channel(x).zero_(),
            _channel(x).fill_(1))


# ---------------------------------------------------------------- passes per backend

def passes(backend: str):
    """The six passes of ``backend``: (channel_pool, spatial_pool, apply,
    backward_reduce, spatial_pool_backward, backward_apply)."""
    return passes_of(PASS_FAKES, backend)

# ---------------------------------------------------------------- fakes of the passes

def _channel(x):
    return x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x))


def pixel_stats(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=stats_dtype(x))


def channel_pool_fake(x):
    return _channel(x), _channel(x)


def spatial_pool_fake(x, ca):
    return pixel_stats(x), pixel_stats(x)


def apply_fake(x, ca, sa):
    return torch.empty_like(x)


def backward_reduce_fake(dy, x, ca, sa, cmax, smax, first_max):
    return (_channel(x), pixel_stats(x), _channel(x).to(torch.int32), pixel_stats(x).to(torch.int32))


def spatial_pool_backward_fake(x, ca, smax, stie, sgmean, sgmax, first_max):
    return _channel(x)


def backward_apply_fake(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean, sgmax,
                        first_max):
    return torch.empty_like(x)


PASS_FAKES = pass_fakes("cbam", channel_pool_fake, spatial_pool_fake, apply_fake, backward_reduce_fake, spatial_pool_backward_fake, backward_apply_fake)


# ---------------------------------------------------------------- the composite op

def empty_stats(x):
    return x.new_empty((0,), dtype=stats_dtype(x))


def forward_fake(x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config, eps):
    acc = stats_dtype(x)
    spatial = has_spatial(config)
    n = 1 if config[Config.BN] == BN_BATCH and spatial else 0
    rows = 2 * x.shape[0] if config[Config.CHANNEL_POOL] == CHANNEL_POOLS["avg_max"] else x.shape[0]
    h = x.new_empty((rows, w1.shape[0]), dtype=acc) if w2 is not None else empty_stats(x)

    def pixel4(present):
        return x.new_empty((x.shape[0], 1, x.shape[2], x.shape[3]), dtype=acc) if present \
            else empty_stats(x)

    bn = [x.new_empty((n,), dtype=acc) for _ in range(4)]
    return (torch.empty_like(x), bn[0], bn[1], _channel(x), _channel(x), h, _channel(x),
            _channel(x), pixel_stats(x), pixel_stats(x), pixel_stats(x),
            pixel4(spatial and config[Config.BN] != BN_NONE), pixel4(spatial), bn[2], bn[3])


@y_backward
def backward(ctx, dy, *_unused):
    (x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var,
     cmean, cmax, h, z, ca, smean, smax, sa, q, qn, save_mean, save_invstd) = ctx.saved_tensors
    config, eps, backend = ctx.params
    _, _, _, backward_reduce, spatial_pool_backward, backward_apply = passes(backend)
    first = bool(config[Config.FIRST_MAX])
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    dy = like_x(dy, x)
    with torch.autocast(x.device.type, enabled=False):
        # ca is the forward's, never recomputed here: torch.compile would put its own
        # kernel for the gate in this backward, an ulp off the forward's, and the
        # comparisons with cmax and smax would no longer find the maxima.
        dca, dsa, ctie, stie = backward_reduce(dy, x, ca, sa, cmax, smax, first)
        sgmean, sgmax = torch.zeros_like(smean), torch.zeros_like(smax)
        spatial_grads, channel_grads = [None] * 4, [None] * 4
        if has_spatial(config):
            dsmean, dsmax, *spatial_grads = spatial_gate_backward(
                dsa, sa, smean, smax, q, qn, save_mean, save_invstd, conv_w, conv_b, bn_w, bn_b,
                bn_mean, bn_var, config, eps)
            sgmean = (dsmean / C).contiguous()
            sgmax = (dsmax if first else dsmax / stie.to(dsmax.dtype)).contiguous()
            if has_channel(config):  # dca through the spatial statistics: only a channel gate needs it
                dca = dca + spatial_pool_backward(x, ca, smax, stie, sgmean, sgmax, first)
        if has_channel(config):
            dcmean, dcmax, *channel_grads = channel_gate_backward(dca, cmean, cmax, h, z, ca, w1,
                                                                  b1, w2, b2, config)
            cgmean = (dcmean / HW).contiguous()
            cgmax = (dcmax if first else dcmax / ctie.to(dcmax.dtype)).contiguous()
        else:  # ca = 1: no channel terms (cmax is zeros, so no element is "routed" a real max)
            cgmean, cgmax = torch.zeros_like(cmean), torch.zeros_like(cmax)
        dx = backward_apply(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean, sgmax,
                            first)
    return (dx, *channel_grads, *spatial_grads, None, None, None, None)


SAVED_OUTPUTS = slice(3, None)  # the outputs the backward reads (after y and the batch statistics)


def register() -> None:
    """Fakes for the compiled CBAM passes and the fake and autograd of the
    native composite (once the extension is loaded)."""
    register_composite("cbam", PASS_FAKES, forward_fake, backward, SAVED_OUTPUTS)
