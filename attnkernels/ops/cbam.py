"""CBAM operators: the composite forward op, its autograd, and the fakes of the passes.

``attnkernels::cbam_forward`` runs three passes over x (channel pool, spatial
pool of x * ca, apply) with the two small gate networks in PyTorch between
them: the shared MLP on the (N, C) channel statistics and the kxk conv (+
BatchNorm) on the (N, 2, H, W) spatial statistics. It saves x and those
statistics only. Its backward recomputes the gate networks from the
statistics under ``torch.func.vjp`` (the spatial conv by hand) and runs three
more passes: a reduction of (dy, x) to the gates' gradients, the spatial
pool's backward (a read of x), and dx. Forward 4 passes over x-sized tensors (3 reads, 1 write), backward 6
(5 reads, 1 write).

The op is functional: in BatchNorm training mode it returns the batch mean
and unbiased variance, and the caller updates the running statistics.
The passes come from the backend: the compiled ``attnkernels::cbam_*`` ops
(CPU, CUDA) or their Triton twins (``attnkernels::cbam_*_triton``).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..reference._layers import activation, gate
from ._common import (BN_BATCH, BN_NONE, BN_RUNNING, batch_stats, like_x, normalise,  # noqa: F401
                      stats_dtype, vjp_of)
from .gate_conv import same_conv2d, same_conv2d_backward

CHANNEL_POOLS = {"avg_max": 0, "mix": 1, "avg": 2, "max": 3}
SPATIAL_INPUTS = {"mean_max": 0, "max_mean": 1, "mix": 2, "none": 3}
_ACT_NAMES = {0: "identity", 1: "relu", 2: "silu", 3: "hardswish"}
_GATE_NAMES = {0: "sigmoid", 1: "hard_sigmoid"}
# config: [channel_pool, act, channel_gate, spatial_input, spatial_gate, bn (BN_NONE,
# BN_BATCH, BN_RUNNING), first_max]
_CHANNEL_POOL, _ACT, _CHANNEL_GATE, _SPATIAL_INPUT, _SPATIAL_GATE, _BN, _FIRST_MAX = range(7)


# ---------------------------------------------------------------- the gate networks

def channel_gate(cmean, cmax, w1, b1, w2, b2, config: List[int]) -> torch.Tensor:
    """ca (N, C) from the channel statistics: gate of the shared MLP of the pools."""
    acc = cmean.dtype

    def mlp(s):
        h = F.linear(s, w1.to(acc), None if b1 is None else b1.to(acc))
        if w2 is None:
            return h
        h = activation(h, _ACT_NAMES[config[_ACT]])
        return F.linear(h, w2.to(acc), None if b2 is None else b2.to(acc))

    pool = config[_CHANNEL_POOL]
    if pool == CHANNEL_POOLS["avg_max"]:
        z = mlp(cmean) + mlp(cmax)
    elif pool == CHANNEL_POOLS["mix"]:
        z = mlp(0.5 * cmean + 0.5 * cmax)
    elif pool == CHANNEL_POOLS["avg"]:
        z = mlp(cmean)
    else:
        z = mlp(cmax)
    return gate(z, _GATE_NAMES[config[_CHANNEL_GATE]])


def spatial_input(smean, smax, config: List[int]) -> torch.Tensor:
    mode = config[_SPATIAL_INPUT]
    if mode == SPATIAL_INPUTS["mean_max"]:
        return torch.stack([smean, smax], 1)
    if mode == SPATIAL_INPUTS["max_mean"]:
        return torch.stack([smax, smean], 1)
    return (0.5 * smean + 0.5 * smax)[:, None]


def spatial_conv(smean, smax, conv_w, conv_b, config: List[int]) -> torch.Tensor:
    """The conv's output (N, 1, H, W), before BatchNorm."""
    return conv_with_bias(spatial_input(smean, smax, config), conv_w, conv_b)


def conv_with_bias(s_in, conv_w, conv_b) -> torch.Tensor:
    q = same_conv2d(s_in, conv_w.to(s_in.dtype))
    return q if conv_b is None else q + conv_b.to(s_in.dtype)


def spatial_gate_of(q, bn_w, bn_b, bn_mean, bn_var, config: List[int], eps: float):
    """sa (N, H, W) from the conv's output q (N, 1, H, W)."""
    q = normalise(q, config[_BN], bn_w, bn_b, bn_mean, bn_var, eps)
    return gate(q, _GATE_NAMES[config[_SPATIAL_GATE]])[:, 0].contiguous()


def _has_spatial(config) -> bool:
    return config[_SPATIAL_INPUT] != SPATIAL_INPUTS["none"]


# ---------------------------------------------------------------- passes per backend

def passes(backend: str):
    """The six passes of ``backend``: (channel_pool, spatial_pool, apply,
    backward_reduce, spatial_pool_backward, backward_apply)."""
    ops = torch.ops.attnkernels
    if backend == "triton":
        from ..triton import cbam  # noqa: F401  (registers the *_triton ops)

        return (ops.cbam_channel_pool_triton, ops.cbam_spatial_pool_triton, ops.cbam_apply_triton,
                ops.cbam_backward_reduce_triton, ops.cbam_spatial_pool_backward_triton,
                ops.cbam_backward_apply_triton)
    return (ops.cbam_channel_pool, ops.cbam_spatial_pool, ops.cbam_apply, ops.cbam_backward_reduce,
            ops.cbam_spatial_pool_backward, ops.cbam_backward_apply)


# ---------------------------------------------------------------- fakes of the passes

def _channel(x):
    return x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x))


def _pixel(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=stats_dtype(x))


def channel_pool_fake(x):
    return _channel(x), _channel(x)


def spatial_pool_fake(x, ca):
    return _pixel(x), _pixel(x)


def apply_fake(x, ca, sa):
    return torch.empty_like(x)


def backward_reduce_fake(dy, x, ca, sa, cmax, smax, first_max):
    return (_channel(x), _pixel(x), _channel(x).to(torch.int32), _pixel(x).to(torch.int32))


def spatial_pool_backward_fake(x, ca, smax, stie, sgmean, sgmax, first_max):
    return _channel(x)


def backward_apply_fake(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean, sgmax,
                        first_max):
    return torch.empty_like(x)


PASS_FAKES = {
    "cbam_channel_pool": channel_pool_fake,
    "cbam_spatial_pool": spatial_pool_fake,
    "cbam_apply": apply_fake,
    "cbam_backward_reduce": backward_reduce_fake,
    "cbam_spatial_pool_backward": spatial_pool_backward_fake,
    "cbam_backward_apply": backward_apply_fake,
}


# ---------------------------------------------------------------- the composite op

@torch.library.custom_op("attnkernels::cbam_forward", mutates_args=())
def cbam_forward(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                 w2: Optional[torch.Tensor], b2: Optional[torch.Tensor],
                 conv_w: Optional[torch.Tensor], conv_b: Optional[torch.Tensor],
                 bn_w: Optional[torch.Tensor], bn_b: Optional[torch.Tensor],
                 bn_mean: Optional[torch.Tensor], bn_var: Optional[torch.Tensor],
                 config: List[int], eps: float, backend: str
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor]:
    """(y, cmean, cmax, smean, smax, bn_mean, bn_var_unbiased); the last two are
    the batch statistics of the spatial conv's output (empty unless config's
    BatchNorm uses batch statistics)."""
    channel_pool, spatial_pool, apply = passes(backend)[:3]
    with torch.autocast(x.device.type, enabled=False):
        cmean, cmax = channel_pool(x)
        ca = channel_gate(cmean, cmax, w1, b1, w2, b2, config)
        if not _has_spatial(config):
            smean, smax = _pixel(x).zero_(), _pixel(x).zero_()
            return (apply(x, ca, torch.ones_like(smean)), cmean, cmax, smean, smax,
                    *_empty_bn_stats(x))
        smean, smax = spatial_pool(x, ca)
        q = spatial_conv(smean, smax, conv_w, conv_b, config)
        sa = spatial_gate_of(q, bn_w, bn_b, bn_mean, bn_var, config, eps)
        stats = batch_stats(q) if config[_BN] == BN_BATCH else _empty_bn_stats(x)
        return (apply(x, ca, sa), cmean, cmax, smean, smax, *stats)


def _empty_bn_stats(x):
    return x.new_empty((0,), dtype=stats_dtype(x)), x.new_empty((0,), dtype=stats_dtype(x))


@cbam_forward.register_fake
def _cbam_forward_fake(x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config,
                       eps, backend):
    n = 1 if config[_BN] == BN_BATCH and _has_spatial(config) else 0
    acc = stats_dtype(x)
    return (torch.empty_like(x), _channel(x), _channel(x), _pixel(x), _pixel(x),
            x.new_empty((n,), dtype=acc), x.new_empty((n,), dtype=acc))


def _setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config, eps, backend = inputs
    _, cmean, cmax, smean, smax, _, _ = output
    ctx.save_for_backward(x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var,
                          cmean, cmax, smean, smax)
    ctx.params = (list(config), eps, backend)


def _backward(ctx, dy, *_unused):
    (x, w1, b1, w2, b2, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var,
     cmean, cmax, smean, smax) = ctx.saved_tensors
    config, eps, backend = ctx.params
    _, _, _, backward_reduce, spatial_pool_backward, backward_apply = passes(backend)
    first = bool(config[_FIRST_MAX])
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    dy = like_x(dy, x)
    with torch.autocast(x.device.type, enabled=False):
        ca, channel_vjp = vjp_of(lambda *a: channel_gate(*a, config), [cmean, cmax, w1, b1, w2, b2])
        spatial = _has_spatial(config)
        if spatial:
            s_in, input_vjp = vjp_of(lambda sm, sx: spatial_input(sm, sx, config), [smean, smax])
            w = conv_w.to(s_in.dtype)
            q = conv_with_bias(s_in, w, conv_b)
            sa, gate_vjp = vjp_of(
                lambda q, bw, bb: spatial_gate_of(q, bw, bb, bn_mean, bn_var, config, eps),
                [q, bn_w, bn_b])
        else:
            sa = torch.ones_like(smean)
        dca, dsa, ctie, stie = backward_reduce(dy, x, ca, sa, cmax, smax, first)
        sgmean, sgmax = torch.zeros_like(smean), torch.zeros_like(smax)
        spatial_grads = [None] * 4
        if spatial:
            # the conv by hand (ops/gate_conv.py), not under vjp
            dq, dbn_w, dbn_b = gate_vjp(dsa)
            d_in, d_w = same_conv2d_backward(dq, s_in, w)
            dsmean, dsmax = input_vjp(d_in)
            spatial_grads = [d_w.to(conv_w.dtype),
                             None if conv_b is None else dq.sum().reshape(1).to(conv_b.dtype),
                             dbn_w, dbn_b]
            sgmean = (dsmean / C).contiguous()
            sgmax = (dsmax if first else dsmax / stie.to(dsmax.dtype)).contiguous()
            dca = dca + spatial_pool_backward(x, ca, smax, stie, sgmean, sgmax, first)
        dcmean, dcmax, *channel_grads = channel_vjp(dca)
        cgmean = (dcmean / HW).contiguous()
        cgmax = (dcmax if first else dcmax / ctie.to(dcmax.dtype)).contiguous()
        dx = backward_apply(dy, x, ca, sa, cmax, ctie, cgmean, cgmax, smax, stie, sgmean, sgmax,
                            first)
    return (dx, *channel_grads, *spatial_grads, None, None, None, None, None)


cbam_forward.register_autograd(_backward, setup_context=_setup_context)


def register() -> None:
    """Fakes for the compiled CBAM passes (once the extension is loaded)."""
    for name, fake in PASS_FAKES.items():
        torch.library.register_fake(f"attnkernels::{name}")(fake)
