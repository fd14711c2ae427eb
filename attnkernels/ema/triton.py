"""EMA in Triton: kernels, launchers, op registration (semantics in
csrc/schemas/ema_schema.cpp).

The same op contract as the compiled ema_forward/ema_backward, as passes
over each group's planes with the small steps (the 1x1 conv over the
strips, the softmaxes, their backward, the parameter sums) in library ops
between them. Forward: the strip means (a program per (group, channel):
two sweeps of the plane, the rows' then the columns'), the statistics of z
and the mean of x2 (a program per (group, channel): the mean, then the
centred sum of squares), then per (group, pixel block) the weight, s and
y = x * s. Backward: dw per (group, pixel block); the per-channel sums of
dw * x2 and dw * xhat; the strip sums of dz * x * gate and dx2 per (group,
channel); dx per (group, channel). No atomics; deterministic.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as ema_ops
from .._core.triton import acc_dtype, sigmoid

_BLOCK_P = 128  # positions per tile
# Tiles of 256 to 512 values: [16, 256] ones left the per-channel passes at
# 255 registers and spilling, [4, 256] and [4, 8, 16] still spilled a few
# bytes (tools/triton_aot.py, sm_80 and sm_90).
_BLOCK_CG = 4  # channels per tile of the per-pixel and per-channel passes
_STRIP_TILE = (2, 8, 16)  # (channels, rows, columns) per tile of the strip passes


@triton.jit
def _channels(n, cb, GROUPS, CG, xb, xc, BLOCK_CG: tl.constexpr):
    """Channels cb * BLOCK_CG.. of group n: their index in the group, mask and x offsets."""
    k = cb * BLOCK_CG + tl.arange(0, BLOCK_CG)
    km = k < CG
    base = (n // GROUPS) * xb + ((n % GROUPS) * CG + k).to(tl.int64) * xc
    return k, km, base


@triton.jit
def _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, pm, H, W, CG, xh, xw, ACC: tl.constexpr):
    """x and z = x * gh * gw at channels k x positions p of group n, the gates, the mask."""
    i = p // W
    j = p % W
    m = km[:, None] & pm[None, :]
    x = tl.load(x_ptr + base[:, None] + (i * xh + j * xw)[None, :], mask=m, other=0.0).to(ACC)
    gates = ga_ptr + (n * CG + k)[:, None] * (H + W)
    gh = tl.load(gates + i[None, :], mask=m, other=0.0)
    gw = tl.load(gates + H + j[None, :], mask=m, other=0.0)
    return x, x * gh * gw, gh, gw, m


@triton.jit
def _x2_tile(x2_ptr, n, k, p, m, W, x2n, x2c, x2h, x2w, ACC: tl.constexpr):
    offs = n * x2n + k[:, None].to(tl.int64) * x2c + ((p // W) * x2h + (p % W) * x2w)[None, :]
    return tl.load(x2_ptr + offs, mask=m, other=0.0).to(ACC), offs


@triton.jit
def _strip_tile(x_ptr, base, i, j, km, H, W, xh, xw, ACC: tl.constexpr):
    """x on channels x rows i x columns j (3-D), and its mask."""
    m = km[:, None, None] & (i < H)[None, :, None] & (j < W)[None, None, :]
    offs = base[:, None, None] + (i * xh)[None, :, None] + (j * xw)[None, None, :]
    return tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC), m


@triton.jit
def _strips_kernel(x_ptr, st_ptr, GROUPS, CG, H, W, xb, xc, xh, xw, ACC: tl.constexpr,
                   BLOCK_CG: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """st[n, k, :H] = the mean over W of each row, st[n, k, H:] = over H of each column."""
    n = tl.program_id(0).to(tl.int64)
    k, km, base = _channels(n, tl.program_id(1), GROUPS, CG, xb, xc, BLOCK_CG)
    out = st_ptr + (n * CG + k)[:, None] * (H + W)
    for i0 in range(0, H, BLOCK_H):
        i = i0 + tl.arange(0, BLOCK_H)
        acc = tl.zeros([BLOCK_CG, BLOCK_H, BLOCK_W], ACC)
        for j0 in range(0, W, BLOCK_W):
            v, _ = _strip_tile(x_ptr, base, i, j0 + tl.arange(0, BLOCK_W), km, H, W, xh, xw, ACC)
            acc += v
        tl.store(out + i[None, :], tl.sum(acc, axis=2) / W, mask=km[:, None] & (i < H)[None, :])
    for j0 in range(0, W, BLOCK_W):
        j = j0 + tl.arange(0, BLOCK_W)
        acc = tl.zeros([BLOCK_CG, BLOCK_H, BLOCK_W], ACC)
        for i0 in range(0, H, BLOCK_H):
            v, _ = _strip_tile(x_ptr, base, i0 + tl.arange(0, BLOCK_H), j, km, H, W, xh, xw, ACC)
            acc += v
        tl.store(out + H + j[None, :], tl.sum(acc, axis=1) / H,
                 mask=km[:, None] & (j < W)[None, :])


@triton.jit
def _stats_kernel(x_ptr, x2_ptr, ga_ptr, st_ptr, GROUPS, CG, H, W, HW, xb, xc, xh, xw, x2n, x2c,
                  x2h, x2w, eps, ACC: tl.constexpr, BLOCK_CG: tl.constexpr,
                  BLOCK_P: tl.constexpr):
    """stats[n, 0] = mean z, [1] = 1 / sqrt(var z + eps), [3] = mean x2 (softmaxed after)."""
    n = tl.program_id(0).to(tl.int64)
    k, km, base = _channels(n, tl.program_id(1), GROUPS, CG, xb, xc, BLOCK_CG)
    sz = tl.zeros([BLOCK_CG, BLOCK_P], ACC)
    s2 = tl.zeros([BLOCK_CG, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        _, z, _, _, m = _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, p < HW, H, W, CG, xh, xw,
                                    ACC)
        sz += z
        s2 += _x2_tile(x2_ptr, n, k, p, m, W, x2n, x2c, x2h, x2w, ACC)[0]
    mean = tl.sum(sz, axis=1) / HW
    ss = tl.zeros([BLOCK_CG, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        _, z, _, _, m = _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, p < HW, H, W, CG, xh, xw,
                                    ACC)
        d = tl.where(m, z - mean[:, None], 0.0)
        ss += d * d
    out = st_ptr + n * 4 * CG + k
    tl.store(out, mean, mask=km)
    tl.store(out + CG, 1.0 / tl.sqrt(tl.sum(ss, axis=1) / HW + eps), mask=km)
    tl.store(out + 3 * CG, tl.sum(s2, axis=1) / HW, mask=km)


@triton.jit
def _apply_kernel(x_ptr, x2_ptr, ga_ptr, st_ptr, gw_ptr, gb_ptr, y_ptr, s_ptr, GROUPS, CG, H, W,
                  HW, xb, xc, xh, xw, x2n, x2c, x2h, x2w, ACC: tl.constexpr,
                  BLOCK_CG: tl.constexpr, BLOCK_P: tl.constexpr):
    """s = sigmoid(sum_k x11 x2 + x21 x1) per pixel, then y = x * s."""
    n = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    st = st_ptr + n * 4 * CG
    w = tl.zeros([BLOCK_P], ACC)
    for cb in range(0, tl.cdiv(CG, BLOCK_CG)):
        k, km, base = _channels(n, cb, GROUPS, CG, xb, xc, BLOCK_CG)
        _, z, _, _, m = _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, pm, H, W, CG, xh, xw, ACC)
        v2 = _x2_tile(x2_ptr, n, k, p, m, W, x2n, x2c, x2h, x2w, ACC)[0]
        mu = tl.load(st + k, mask=km, other=0.0)
        rstd = tl.load(st + CG + k, mask=km, other=0.0)
        x11 = tl.load(st + 2 * CG + k, mask=km, other=0.0)
        x21 = tl.load(st + 3 * CG + k, mask=km, other=0.0)
        gw = tl.load(gw_ptr + k, mask=km, other=0.0)
        gb = tl.load(gb_ptr + k, mask=km, other=0.0)
        x1 = (gw * rstd)[:, None] * (z - mu[:, None]) + gb[:, None]
        w += tl.sum(tl.where(m, x11[:, None] * v2 + x21[:, None] * x1, 0.0), axis=0)
    s = sigmoid(w)
    tl.store(s_ptr + n * HW + p, s, mask=pm)
    offs = (p // W) * xh + (p % W) * xw
    for cb in range(0, tl.cdiv(CG, BLOCK_CG)):
        k, km, base = _channels(n, cb, GROUPS, CG, xb, xc, BLOCK_CG)
        o = base[:, None] + offs[None, :]
        m = km[:, None] & pm[None, :]
        x = tl.load(x_ptr + o, mask=m, other=0.0).to(ACC)
        tl.store(y_ptr + o, (x * s[None, :]).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _dw_kernel(dy_ptr, x_ptr, s_ptr, dw_ptr, GROUPS, CG, H, W, HW, xb, xc, xh, xw,
               ACC: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_P: tl.constexpr):
    """dw = s (1 - s) sum_k dy x per pixel."""
    n = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    offs = (p // W) * xh + (p % W) * xw
    t = tl.zeros([BLOCK_P], ACC)
    for cb in range(0, tl.cdiv(CG, BLOCK_CG)):
        k, km, base = _channels(n, cb, GROUPS, CG, xb, xc, BLOCK_CG)
        o = base[:, None] + offs[None, :]
        m = km[:, None] & pm[None, :]
        t += tl.sum(tl.load(dy_ptr + o, mask=m, other=0.0).to(ACC)
                    * tl.load(x_ptr + o, mask=m, other=0.0).to(ACC), axis=0)
    s = tl.load(s_ptr + n * HW + p, mask=pm, other=0.0)
    tl.store(dw_ptr + n * HW + p, t * s * (1.0 - s), mask=pm)


@triton.jit
def _channel_sums_kernel(x_ptr, x2_ptr, ga_ptr, st_ptr, dw_ptr, sums_ptr, GROUPS, CG, H, W, HW,
                         xb, xc, xh, xw, x2n, x2c, x2h, x2w, ACC: tl.constexpr,
                         BLOCK_CG: tl.constexpr, BLOCK_P: tl.constexpr):
    """sums[n, 0, k] = sum dw x2, sums[n, 1, k] = sum dw xhat."""
    n = tl.program_id(0).to(tl.int64)
    k, km, base = _channels(n, tl.program_id(1), GROUPS, CG, xb, xc, BLOCK_CG)
    mu = tl.load(st_ptr + n * 4 * CG + k, mask=km, other=0.0)
    rstd = tl.load(st_ptr + n * 4 * CG + CG + k, mask=km, other=0.0)
    a = tl.zeros([BLOCK_CG, BLOCK_P], ACC)
    b = tl.zeros([BLOCK_CG, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < HW
        _, z, _, _, m = _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, pm, H, W, CG, xh, xw, ACC)
        d = tl.load(dw_ptr + n * HW + p, mask=pm, other=0.0)[None, :]
        a += d * _x2_tile(x2_ptr, n, k, p, m, W, x2n, x2c, x2h, x2w, ACC)[0]
        b += tl.where(m, d * (z - mu[:, None]) * rstd[:, None], 0.0)
    tl.store(sums_ptr + n * 2 * CG + k, tl.sum(a, axis=1), mask=km)
    tl.store(sums_ptr + n * 2 * CG + CG + k, tl.sum(b, axis=1), mask=km)


@triton.jit
def _coefficients(co_ptr, n, k, km, CG):
    """cz, D / HW, Sxh / HW, dm2 / HW of channels k (co: (N, 4, CG))."""
    co = co_ptr + n * 4 * CG + k
    return (tl.load(co, mask=km, other=0.0), tl.load(co + CG, mask=km, other=0.0),
            tl.load(co + 2 * CG, mask=km, other=0.0), tl.load(co + 3 * CG, mask=km, other=0.0))


@triton.jit
def _dz(x, gh, gw, d, mu, rstd, cz, dmean, sxh_hw):
    """dz = cz (dw - D / HW - xhat Sxh / HW), xhat that of z = x gh gw."""
    xhat = (x * gh * gw - mu) * rstd
    return cz * (d - dmean - xhat * sxh_hw)


@triton.jit
def _grad_strip_tile(x_ptr, gates, dw_ptr, base, n, i, j, km, H, W, xh, xw, ACC: tl.constexpr):
    """x, gh, gw, dw and the mask on channels x rows i x columns j (3-D)."""
    x, m = _strip_tile(x_ptr, base, i, j, km, H, W, xh, xw, ACC)
    gh = tl.load(gates + i[None, :], mask=km[:, None] & (i < H)[None, :], other=0.0)[:, :, None]
    gw = tl.load(gates + H + j[None, :], mask=km[:, None] & (j < W)[None, :], other=0.0)[:, None, :]
    d = tl.load(dw_ptr + n * H * W + (i * W)[None, :, None] + j[None, None, :], mask=m, other=0.0)
    return x, gh, gw, d, m


@triton.jit
def _strip_grads_kernel(x_ptr, ga_ptr, st_ptr, dw_ptr, co_ptr, dg_ptr, dx2_ptr, GROUPS, CG, H, W,
                        xb, xc, xh, xw, x2n, x2c, x2h, x2w, ACC: tl.constexpr,
                        BLOCK_CG: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """dg[n, k, :H] = sum over W of dz x gw, dg[n, k, H:] = sum over H of dz x gh
    (the gates' gradients); dx2 = x11 dw + dm2 / HW."""
    n = tl.program_id(0).to(tl.int64)
    k, km, base = _channels(n, tl.program_id(1), GROUPS, CG, xb, xc, BLOCK_CG)
    gates = ga_ptr + (n * CG + k)[:, None] * (H + W)
    st = st_ptr + n * 4 * CG + k
    mu = tl.load(st, mask=km, other=0.0)[:, None, None]
    rstd = tl.load(st + CG, mask=km, other=0.0)[:, None, None]
    x11 = tl.load(st + 2 * CG, mask=km, other=0.0)[:, None, None]
    cz, dmean, sxh, c2 = _coefficients(co_ptr, n, k, km, CG)
    cz, dmean, sxh, c2 = cz[:, None, None], dmean[:, None, None], sxh[:, None, None], \
        c2[:, None, None]
    out = dg_ptr + (n * CG + k)[:, None] * (H + W)
    x2base = n * x2n + k[:, None, None].to(tl.int64) * x2c
    for i0 in range(0, H, BLOCK_H):  # the rows' sums, and dx2
        i = i0 + tl.arange(0, BLOCK_H)
        acc = tl.zeros([BLOCK_CG, BLOCK_H, BLOCK_W], ACC)
        for j0 in range(0, W, BLOCK_W):
            j = j0 + tl.arange(0, BLOCK_W)
            x, gh, gw, d, m = _grad_strip_tile(x_ptr, gates, dw_ptr, base, n, i, j, km, H, W, xh,
                                               xw, ACC)
            acc += tl.where(m, _dz(x, gh, gw, d, mu, rstd, cz, dmean, sxh) * x * gw, 0.0)
            tl.store(dx2_ptr + x2base + (i * x2h)[None, :, None] + (j * x2w)[None, None, :],
                     (x11 * d + c2).to(dx2_ptr.dtype.element_ty), mask=m)
        tl.store(out + i[None, :], tl.sum(acc, axis=2), mask=km[:, None] & (i < H)[None, :])
    for j0 in range(0, W, BLOCK_W):  # the columns' sums
        j = j0 + tl.arange(0, BLOCK_W)
        acc = tl.zeros([BLOCK_CG, BLOCK_H, BLOCK_W], ACC)
        for i0 in range(0, H, BLOCK_H):
            i = i0 + tl.arange(0, BLOCK_H)
            x, gh, gw, d, m = _grad_strip_tile(x_ptr, gates, dw_ptr, base, n, i, j, km, H, W, xh,
                                               xw, ACC)
            acc += tl.where(m, _dz(x, gh, gw, d, mu, rstd, cz, dmean, sxh) * x * gh, 0.0)
        tl.store(out + H + j[None, :], tl.sum(acc, axis=1), mask=km[:, None] & (j < W)[None, :])


@triton.jit
def _dx_kernel(dy_ptr, x_ptr, ga_ptr, st_ptr, s_ptr, dw_ptr, co_ptr, dst_ptr, dx_ptr, GROUPS, CG,
               H, W, HW, xb, xc, xh, xw, ACC: tl.constexpr, BLOCK_CG: tl.constexpr,
               BLOCK_P: tl.constexpr):
    """dx = dy s + dz gh gw + dstrip_h / W + dstrip_w / H."""
    n = tl.program_id(0).to(tl.int64)
    k, km, base = _channels(n, tl.program_id(1), GROUPS, CG, xb, xc, BLOCK_CG)
    st = st_ptr + n * 4 * CG + k
    mu = tl.load(st, mask=km, other=0.0)[:, None]
    rstd = tl.load(st + CG, mask=km, other=0.0)[:, None]
    cz, dmean, sxh, _c2 = _coefficients(co_ptr, n, k, km, CG)
    dst = dst_ptr + (n * CG + k)[:, None] * (H + W)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < HW
        x, _z, gh, gw, m = _plane_tile(x_ptr, ga_ptr, n, k, km, base, p, pm, H, W, CG, xh, xw,
                                       ACC)
        offs = base[:, None] + ((p // W) * xh + (p % W) * xw)[None, :]
        d = tl.load(dw_ptr + n * HW + p, mask=pm, other=0.0)[None, :]
        dz = _dz(x, gh, gw, d, mu, rstd, cz[:, None], dmean[:, None], sxh[:, None])
        s = tl.load(s_ptr + n * HW + p, mask=pm, other=0.0)[None, :]
        dx = (tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC) * s + dz * gh * gw
              + tl.load(dst + (p // W)[None, :], mask=m, other=0.0) / W
              + tl.load(dst + H + (p % W)[None, :], mask=m, other=0.0) / H)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------- launchers


def _check(x, x2, groups):
    """The compiled ops' argument checks (csrc/common/ema.h), for the Triton twins."""
    B, C, H, W = x.shape
    if groups <= 0 or C % groups:
        raise RuntimeError(f"groups ({groups}) must be positive and divide the channels ({C})")
    if tuple(x2.shape) != (B * groups, C // groups, H, W) or x2.dtype != x.dtype:
        raise RuntimeError(f"x2 must be a ({B * groups}, {C // groups}, {H}, {W}) {x.dtype} "
                           f"tensor (conv3x3 of x's groups), got {tuple(x2.shape)} {x2.dtype}")


def _vector(x, t, g, fill, acc):
    return torch.full((g,), fill, device=x.device, dtype=acc) if t is None else \
        t.to(acc).contiguous()


def _geometry(x, x2, groups):
    """The kernels' GROUPS, CG, H, W, HW and the strides of x and x2."""
    B, C, H, W = x.shape
    return (groups, C // groups, H, W, H * W, *x.stride(), *x2.stride())


def _ema_forward(x, x2, w1, b1, gn_w, gn_b, groups, eps):
    _check(x, x2, groups)
    B, C, H, W = x.shape
    N, g = B * groups, C // groups
    acc, tl_acc = acc_dtype(x)
    y = torch.empty_like(x)
    strips = torch.empty((N, g, H + W), device=x.device, dtype=acc)
    stats = torch.empty((N, 4, g), device=x.device, dtype=acc)
    s = torch.empty((N, H, W), device=x.device, dtype=acc)
    if x.numel() == 0:
        return y, strips, torch.empty_like(strips), stats, s
    G, CG, H, W, HW, xb, xc, xh, xw, x2n, x2c, x2h, x2w = _geometry(x, x2, groups)
    bc, bh, bw = _STRIP_TILE
    _strips_kernel[(N, triton.cdiv(g, bc))](x, strips, G, CG, H, W, xb, xc, xh, xw, ACC=tl_acc,
                                            BLOCK_CG=bc, BLOCK_H=bh, BLOCK_W=bw)
    a = torch.matmul(w1.reshape(g, g).to(acc), strips)  # the 1x1 conv over the strips
    if b1 is not None:
        a = a + b1.to(acc)[:, None]
    gates = torch.sigmoid(a).contiguous()
    channel_blocks = (N, triton.cdiv(g, _BLOCK_CG))
    _stats_kernel[channel_blocks](x, x2, gates, stats, G, CG, H, W, HW, xb, xc, xh, xw, x2n, x2c,
                                  x2h, x2w, eps, ACC=tl_acc, BLOCK_CG=_BLOCK_CG, BLOCK_P=_BLOCK_P)
    gw, gb = _vector(x, gn_w, g, 1.0, acc), _vector(x, gn_b, g, 0.0, acc)
    stats[:, 2] = torch.softmax(gb, 0)  # the mean of x1 over H*W is gn_b exactly
    stats[:, 3] = torch.softmax(stats[:, 3], 1)
    _apply_kernel[(N, triton.cdiv(HW, _BLOCK_P))](
        x, x2, gates, stats, gw, gb, y, s, G, CG, H, W, HW, xb, xc, xh, xw, x2n, x2c, x2h, x2w,
        ACC=tl_acc, BLOCK_CG=_BLOCK_CG, BLOCK_P=_BLOCK_P)
    return y, strips, gates, stats, s


def _softmax_backward(a, grad):
    return a * (grad - (a * grad).sum(1, keepdim=True))


def _ema_backward(dy, x, x2, w1, gn_w, gn_b, strips, gates, stats, s, groups):
    _check(x, x2, groups)
    B, C, H, W = x.shape
    N, g = B * groups, C // groups
    acc, tl_acc = acc_dtype(x)
    dx, dx2 = torch.empty_like(x), torch.empty_like(x2)
    if x.numel() == 0:
        zero = torch.zeros((g,), device=x.device, dtype=acc)
        return (dx, dx2, torch.zeros(w1.shape, device=x.device, dtype=acc), zero, zero.clone(),
                zero.clone())
    G, CG, H, W, HW, xb, xc, xh, xw, x2n, x2c, x2h, x2w = _geometry(x, x2, groups)
    channel_blocks = (N, triton.cdiv(g, _BLOCK_CG))
    dw = torch.empty((N, HW), device=x.device, dtype=acc)
    _dw_kernel[(N, triton.cdiv(HW, _BLOCK_P))](dy, x, s, dw, G, CG, H, W, HW, xb, xc, xh, xw,
                                               ACC=tl_acc, BLOCK_CG=_BLOCK_CG, BLOCK_P=_BLOCK_P)
    sums = torch.empty((N, 2, g), device=x.device, dtype=acc)
    _channel_sums_kernel[channel_blocks](x, x2, gates, stats, dw, sums, G, CG, H, W, HW, xb, xc,
                                         xh, xw, x2n, x2c, x2h, x2w, ACC=tl_acc,
                                         BLOCK_CG=_BLOCK_CG, BLOCK_P=_BLOCK_P)
    gw, gb = _vector(x, gn_w, g, 1.0, acc), _vector(x, gn_b, g, 0.0, acc)
    S1, Sxh, D = sums[:, 0], sums[:, 1], dw.sum(1, keepdim=True)
    x11, x21, rstd = stats[:, 2], stats[:, 3], stats[:, 1]
    dm1 = _softmax_backward(x11, S1)
    dm2 = _softmax_backward(x21, gw * Sxh + gb * D)  # dx21 = sum dw x1
    coefficients = torch.stack([rstd * gw * x21, D.expand(N, g) / HW, Sxh / HW, dm2 / HW],
                               1).contiguous()
    dgates = torch.empty_like(gates)
    bc, bh, bw = _STRIP_TILE
    _strip_grads_kernel[(N, triton.cdiv(g, bc))](
        x, gates, stats, dw, coefficients, dgates, dx2, G, CG, H, W, xb, xc, xh, xw, x2n, x2c,
        x2h, x2w, ACC=tl_acc, BLOCK_CG=bc, BLOCK_H=bh, BLOCK_W=bw)
    da = dgates * gates * (1 - gates)
    dstrips = torch.matmul(w1.reshape(g, g).to(acc).t(), da).contiguous()  # the 1x1 conv's
    dw1 = torch.matmul(da, strips.transpose(1, 2)).sum(0)
    _dx_kernel[channel_blocks](dy, x, gates, stats, s, dw, coefficients, dstrips, dx, G, CG, H, W,
                               HW, xb, xc, xh, xw, ACC=tl_acc, BLOCK_CG=_BLOCK_CG,
                               BLOCK_P=_BLOCK_P)
    return (dx, dx2, dw1.view(w1.shape), da.sum((0, 2)), (x21 * Sxh).sum(0),
            (x21 * D + dm1).sum(0))


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::ema_forward_triton", mutates_args=())
def ema_forward_triton(x: torch.Tensor, x2: torch.Tensor, w1: torch.Tensor,
                       b1: Optional[torch.Tensor], gn_w: Optional[torch.Tensor],
                       gn_b: Optional[torch.Tensor], groups: int, eps: float
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                  torch.Tensor]:
    return _ema_forward(x, x2, w1, b1, gn_w, gn_b, groups, eps)


@torch.library.custom_op("attnkernels::ema_backward_triton", mutates_args=())
def ema_backward_triton(dy: torch.Tensor, x: torch.Tensor, x2: torch.Tensor, w1: torch.Tensor,
                        gn_w: Optional[torch.Tensor], gn_b: Optional[torch.Tensor],
                        strips: torch.Tensor, gates: torch.Tensor, stats: torch.Tensor,
                        s: torch.Tensor, groups: int
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                   torch.Tensor, torch.Tensor]:
    return _ema_backward(dy, x, x2, w1, gn_w, gn_b, strips, gates, stats, s, groups)


ema_ops.register("_triton")
