"""Triplet Attention operators: the composite forward ops, their autograd, and
the fakes of the passes.

The composite forward runs the pool pass over x (one read: max and mean over
C, over H and over W), the three gate networks on the pooled maps (kxk conv,
BatchNorm, sigmoid per branch), and the apply pass (read x, write y). It saves
x and pooled-map-sized tensors only: the maps, and each branch's conv output,
gate and BatchNorm statistics (recomputing them cost the backward about 6 ms
of 66 at 16x256x56x56 on the CPU). Its backward runs the gate networks'
backward by hand (the convs in ops/gate_conv.py; BatchNorm and the sigmoid
with the aten backward ops eager autograd calls, no torch.func.vjp), with one
reduction pass over (dy, x) before it (the sums of dy * x per map and where
the maxima are) and the dx pass (reads dy only) after: forward 3 passes over
x-sized tensors (2 reads, 1 write), backward 4 (3 reads, 1 write) on the CPU.
x is never permuted or copied.

Two ops share the schema, the fake and the autograd: ``attnkernels::triplet_forward``
(C++, csrc/composite/triplet.cpp: the compiled passes of the CPU and CUDA
backends, the gate networks in C++ with the same ATen and attnkernels ops as
the functions below, so the same bits) and ``attnkernels::triplet_forward_triton``
(here: the Triton passes ``attnkernels::triplet_*_triton``, which serve
without the compiled extension). See ops/cbam.py for why.

Branches are stacked in the upstream order (cw, hc, hw): conv weights
(G, 2, k, k), per-branch BatchNorm parameters (G,), G = 3, or 2 without the
spatial (hw) branch. The ops are functional: in BatchNorm training mode they
return the batch mean and unbiased variance per branch, and the caller
updates the running statistics.
"""
import enum
from typing import List

import torch

from .._core.ops import (BN_BATCH, BN_NONE, BN_RUNNING, like_x, normalise_backward,  # noqa: F401
                         normalise_saving, pass_fakes, passes_of, register_composite, stats_dtype,
                         y_backward)
from .._core.gate_conv import same_conv2d, same_conv2d_backward
from .._core.gate_matmul import sum_all


class Config(enum.IntEnum):
    """Where each entry sits in the op's ``config`` (csrc/composite/triplet.cpp's Config):
    [bn (BN_NONE, BN_BATCH, BN_RUNNING), spatial (1: the hw branch, 0: no_spatial),
    save (1: return what the backward reads; 0: no backward will run, return
    those outputs empty and free them early: a third of the inference peak
    at 128x2048x7x7, where each pooled map is a seventh of x)]
    """
    BN = 0
    SPATIAL = 1
    SAVE = 2


CW, HC, HW = range(3)  # branch order in the stacked parameters


def scale_of(config: List[int]) -> float:
    """The mean over branches, as upstream writes it: 1/3 or 1/2."""
    return 1 / 3 if config[Config.SPATIAL] else 1 / 2


def branch_inputs(maps, config: List[int]) -> List[torch.Tensor]:
    """Each branch's conv input (N, 2, rows, cols) from the pooled maps (cmean,
    cmax, hmean, hmax, wmean, wmax): [max, mean] in the plane upstream
    convolves, (C, W) for cw, (H, C) for hc, (H, W) for hw."""
    cmean, cmax, hmean, hmax, wmean, wmax = maps
    inputs = [stack_planes(hmax, hmean), stack_planes(wmax, wmean).transpose(2, 3)]
    if config[Config.SPATIAL]:
        inputs.append(stack_planes(cmax, cmean))
    return inputs


def stack_planes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a, b] (N, R, S) as (N, 2, R, S), laid out with the longer side
    contiguous: the gate conv works on that orientation (ops/gate_conv.py), so
    it needs no second copy."""
    if a.shape[2] >= a.shape[1]:
        return torch.stack([a, b], 1)
    return torch.stack([a.transpose(1, 2), b.transpose(1, 2)], 1).transpose(2, 3)


def branch_convs(inputs, conv_w, conv_b) -> List[torch.Tensor]:
    """Each branch's conv output (N, 1, rows, cols), before BatchNorm."""
    acc = inputs[0].dtype
    qs = [same_conv2d(t, conv_w[g:g + 1].to(acc)) for g, t in enumerate(inputs)]
    if conv_b is not None:
        qs = [q + conv_b[g].to(acc) for g, q in enumerate(qs)]
    return qs


def _part(t, g):
    return None if t is None else t[g:g + 1]


def branch_gates(qs, bn_w, bn_b, bn_mean, bn_var, config: List[int], eps: float):
    """Per branch, from its conv output q: (s, save_mean, save_invstd, batch mean,
    batch variance), s = sigmoid(BatchNorm(q)) (N, 1, rows, cols); the
    statistics as ``normalise_saving`` gives them."""
    out = []
    for g, q in enumerate(qs):
        qn, *stats = normalise_saving(q, config[Config.BN], _part(bn_w, g), _part(bn_b, g),
                                      _part(bn_mean, g), _part(bn_var, g), eps)
        out.append((torch.sigmoid(qn), *stats))
    return out


def gates_of(branches, like, config: List[int]):
    """((s_hw (N, H, W), s_cw (N, C, W), s_hc (N, C, H)), batch statistics) from
    ``branch_gates``; s_hw is zero without the spatial branch. like: a (N, H,
    W) map. The batch statistics (per branch mean and unbiased variance) are
    empty unless BatchNorm uses them."""
    s = [b[0][:, 0] for b in branches]
    s_cw = s[CW].contiguous()
    s_hc = s[HC].transpose(1, 2).contiguous()
    s_hw = s[HW].contiguous() if config[Config.SPATIAL] else torch.zeros_like(like)
    if config[Config.BN] == BN_BATCH:
        batch = torch.cat([b[3] for b in branches]), torch.cat([b[4] for b in branches])
    else:
        batch = _empty_bn_stats(like)
    return (s_hw, s_cw, s_hc), batch


def branch_gates_backward(ds, qs, branches, bn_w, bn_b, bn_mean, bn_var, config: List[int],
                          eps: float):
    """(d qs, d bn_w, d bn_b) of ``branch_gates`` for the gates' gradients ds
    (each (N, rows, cols), in its branch's plane), by hand: sigmoid and
    BatchNorm backward as eager autograd runs them."""
    dqs, dws, dbs = [], [], []
    for g, (q, (s, save_mean, save_invstd, _, _)) in enumerate(zip(qs, branches)):
        # dense in the plane's (rows, cols) order, as autograd's select_backward
        # hands it on: BatchNorm's backward sums in the gradient's layout
        dqn = torch.ops.aten.sigmoid_backward(ds[g][:, None].contiguous(), s)
        dq, dw, db = normalise_backward(dqn, q, config[Config.BN], _part(bn_w, g), _part(bn_b, g),
                                        _part(bn_mean, g), _part(bn_var, g), save_mean,
                                        save_invstd, eps)
        dqs.append(dq)
        dws.append(dw)
        dbs.append(db)
    return (dqs, None if bn_w is None else torch.cat(dws),
            None if bn_b is None else torch.cat(dbs))


# ---------------------------------------------------------------- passes per backend

def passes(backend: str):
    """The four passes of ``backend``: (pool, apply, backward_reduce, backward_apply)."""
    return passes_of(PASS_FAKES, backend)

# ---------------------------------------------------------------- fakes of the passes

def _maps(x, dtype=None):
    """Empty (over C, over H, over W) maps of x: (N, H, W), (N, C, W), (N, C, H)."""
    n, c, h, w = x.shape
    dtype = dtype or stats_dtype(x)
    return (x.new_empty((n, h, w), dtype=dtype), x.new_empty((n, c, w), dtype=dtype),
            x.new_empty((n, c, h), dtype=dtype))


def pool_fake(x):
    c, h, w = _maps(x)
    return c, torch.empty_like(c), h, torch.empty_like(h), w, torch.empty_like(w)


def apply_fake(x, s_hw, s_cw, s_hc, spatial):
    return torch.empty_like(x)


def backward_reduce_fake(dy, x, cmax, hmax, wmax):
    return (*_maps(x), *_maps(x, torch.int32))


def backward_apply_fake(dy, s_hw, s_cw, s_hc, spatial, ctie, cgmean, cgmax, htie, hgmean, hgmax,
                        wtie, wgmean, wgmax):
    return torch.empty_like(dy)


PASS_FAKES = pass_fakes("triplet", pool_fake, apply_fake, backward_reduce_fake, backward_apply_fake)


# ---------------------------------------------------------------- the composite op

def _empty_bn_stats(x):
    return x.new_empty((0,), dtype=stats_dtype(x)), x.new_empty((0,), dtype=stats_dtype(x))


def forward_fake(x, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config, eps):
    n = conv_w.shape[0] if config[Config.BN] == BN_BATCH else 0
    acc = stats_dtype(x)
    s_hw, s_cw, s_hc = _maps(x)
    N, C, H, W = x.shape
    saved = bool(config[Config.SAVE])
    empty = (lambda shape: x.new_empty(shape if saved else (0,), dtype=acc))  # noqa: E731
    maps = pool_fake(x) if saved else tuple(empty(()) for _ in range(6))
    q_cw, q_hc = empty((N, 1, C, W)), empty((N, 1, H, C))
    q_hw = empty((N, 1, H, W) if config[Config.SPATIAL] else (0,))
    return (torch.empty_like(x), *maps, q_cw, q_hc, q_hw, s_hw, s_cw, s_hc,
            *(x.new_empty((n,), dtype=acc) for _ in range(4)))


@y_backward
def backward(ctx, dy, *_unused):
    x, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, *saved = ctx.saved_tensors
    maps, (q_cw, q_hc, q_hw, s_hw, s_cw, s_hc, save_mean, save_invstd) = saved[:6], saved[6:]
    config, eps, backend = ctx.params
    _, _, backward_reduce, backward_apply = passes(backend)
    scale = scale_of(config)
    _, C, H, W = x.shape
    dy = like_x(dy, x)
    with torch.autocast(x.device.type, enabled=False):
        inputs = branch_inputs(maps, config)
        G = len(inputs)
        qs = [q_cw, q_hc, q_hw][:G]
        # each branch's gate in its plane, (N, 1, rows, cols), as branch_gates gave it
        s_planes = [s_cw[:, None], s_hc.transpose(1, 2)[:, None], s_hw[:, None]]
        branches = [(s_planes[g], _part(save_mean, g), _part(save_invstd, g), None, None)
                    for g in range(G)]
        dc, dh, dw, ctie, htie, wtie = backward_reduce(dy, x, maps[1], maps[3], maps[5])
        # the gates' gradients in their branches' planes (cw, hc, hw)
        ds = [dh * scale, (dw * scale).transpose(1, 2), dc * scale][:G]
        dqs, dbn_w, dbn_b = branch_gates_backward(ds, qs, branches, bn_w, bn_b, bn_mean, bn_var,
                                                  config, eps)
        w = conv_w.to(qs[0].dtype)
        d_in, d_w = zip(*(same_conv2d_backward(dq, t, w[g:g + 1])
                          for g, (dq, t) in enumerate(zip(dqs, inputs))))
        dconv_w = torch.cat(d_w).to(conv_w.dtype)
        dconv_b = None if conv_b is None else torch.stack(
            [sum_all(dq) for dq in dqs]).to(conv_b.dtype)
        (dhmax, dhmean), (dwmax, dwmean) = d_in[CW].unbind(1), d_in[HC].transpose(2, 3).unbind(1)
        if config[Config.SPATIAL]:
            dcmax, dcmean = d_in[HW].unbind(1)
        else:  # the hw branch is absent: nothing flows through the C pool
            dcmean, dcmax = torch.zeros_like(maps[0]), torch.zeros_like(maps[1])
        grads = [ctie, (dcmean / C).contiguous(), dcmax.contiguous(),
                 htie, (dhmean / H).contiguous(), dhmax.contiguous(),
                 wtie, (dwmean / W).contiguous(), dwmax.contiguous()]
        # free the gate networks' intermediates before dx is allocated: they
        # would otherwise add to the training peak (about 20 MB at 16x256x56x56)
        del inputs, qs, branches, ds, dqs, d_in, dcmean, dcmax, dhmean, dhmax, dwmean, dwmax
        del dc, dh, dw, ctie, htie, wtie
        dx = backward_apply(dy, s_hw, s_cw, s_hc, bool(config[Config.SPATIAL]), *grads)
    return (dx, dconv_w, dconv_b, dbn_w, dbn_b, None, None, None, None)


# the outputs the backward reads: the maps, convs, gates and BatchNorm's saved statistics
SAVED_OUTPUTS = slice(1, 15)


def register() -> None:
    """Fakes for the compiled Triplet passes and the fake and autograd of the
    native composite (once the extension is loaded)."""
    register_composite("triplet", PASS_FAKES, forward_fake, backward, SAVED_OUTPUTS, Config.SAVE)
