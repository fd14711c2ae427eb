"""The attention product with dropout, by blocks of queries, for the CPU
(where SDPA has no kernel with dropout): ``dropout(softmax(q k^T * scale)) v``
without the N x N matrices that eager autograd keeps for backward (scores,
softmax, dropout mask, dropped weights: about 13 bytes per entry in float32).

Forward, per block of ``BLOCK`` queries: the block's scores, softmax, a
dropout mask drawn from a generator seeded once per call, the block's output;
it keeps q, k, v and each query's log-sum-exp. Backward recomputes each
block's softmax from the log-sum-exp and draws the same masks again (same
seed, same blocks, same order), so nothing N x N outlives a block. Library
GEMMs throughout (no attention kernel of ours); low-precision inputs are
computed in float32. Two torch.library ops with fake implementations and
registered autograd, so torch.compile sees them whole.

The mask has nn.Dropout's distribution (keep with 1 - p, kept weights
scaled by 1 / (1 - p)) but not its random numbers: the seed comes from
torch's default generator, so ``torch.manual_seed`` makes a run repeat."""
from typing import Tuple

import torch

__all__ = ["blockwise_attention", "BLOCK"]

BLOCK = 128  # queries per block: a block's scores are BLOCK x N


def _blocks(q: torch.Tensor):
    n = q.shape[1]
    return [(s, min(s + BLOCK, n)) for s in range(0, n, BLOCK)]


def _keep(scores: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """The block's mask, already scaled: 0 or 1 / (1 - p). Kept where a
    uniform draw is >= p (probability 1 - p): uniform_ costs half of
    bernoulli_ on the CPU, and the mask is drawn twice per step."""
    u = torch.empty_like(scores).uniform_(generator=generator)
    return u.ge_(p).mul_(1 / (1 - p))


def _generator(seed: torch.Tensor, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@torch.library.custom_op("attnkernels::blockwise_attention", mutates_args=())
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, p: float,
             seed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out (B, nq, d_v) in q's dtype, lse (B, nq) in the working dtype:
    float64 for float64, else float32) from q (B, nq, d_k), k (B, nk, d_k),
    v (B, nk, d_v)."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    kt, vw = k.to(work).transpose(1, 2), v.to(work)
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], dtype=work, device=q.device)
    lse = torch.empty(q.shape[0], q.shape[1], dtype=work, device=q.device)
    g = _generator(seed, q.device) if p else None
    for s, e in _blocks(q):
        scores = torch.bmm(q[:, s:e].to(work), kt).mul_(scale)
        top = scores.amax(-1, keepdim=True)
        weights = scores.sub_(top).exp_()
        total = weights.sum(-1, keepdim=True)
        weights.div_(total)
        lse[:, s:e] = (top + total.log()).squeeze(-1)
        if p:
            weights.mul_(_keep(weights, p, g))
        torch.bmm(weights, vw, out=out[:, s:e])
    return out.to(q.dtype), lse


@_forward.register_fake
def _(q, k, v, scale, p, seed):
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty(q.shape[0], q.shape[1], v.shape[2]),
            q.new_empty(q.shape[0], q.shape[1], dtype=work))


@torch.library.custom_op("attnkernels::blockwise_attention_backward", mutates_args=())
def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              lse: torch.Tensor, scale: float, p: float,
              seed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    work = lse.dtype
    kw, vw = k.to(work), v.to(work)
    dq = torch.empty(q.shape, dtype=work, device=q.device)
    dk = torch.zeros(k.shape, dtype=work, device=k.device)
    dv = torch.zeros(v.shape, dtype=work, device=v.device)
    g = _generator(seed, q.device) if p else None
    for s, e in _blocks(q):
        qb, db = q[:, s:e].to(work), dout[:, s:e].to(work)
        weights = torch.bmm(qb, kw.transpose(1, 2)).mul_(scale).sub_(
            lse[:, s:e, None]).exp_()                               # softmax, recomputed
        d_weights = torch.bmm(db, vw.transpose(1, 2))               # d(dropped weights)
        if p:
            keep = _keep(weights, p, g)
            dv.baddbmm_((weights * keep).transpose(1, 2), db)
            d_weights.mul_(keep)
        else:
            dv.baddbmm_(weights.transpose(1, 2), db)
        d_scores = weights.mul_(d_weights - (d_weights * weights).sum(-1, keepdim=True))
        torch.bmm(d_scores, kw, out=dq[:, s:e])
        dk.baddbmm_(d_scores.transpose(1, 2), qb)
    dq.mul_(scale)
    dk.mul_(scale)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_backward.register_fake
def _(dout, q, k, v, lse, scale, p, seed):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output):
    q, k, v, scale, p, seed = inputs
    ctx.save_for_backward(q, k, v, output[1], seed)
    ctx.scale, ctx.p = scale, p


def _grad(ctx, dout, _dlse):
    q, k, v, lse, seed = ctx.saved_tensors
    dq, dk, dv = _backward(dout, q, k, v, lse, ctx.scale, ctx.p, seed)  # strided dout is fine
    return dq, dk, dv, None, None, None


_forward.register_autograd(_grad, setup_context=_setup)


def blockwise_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        dropout_p: float = 0.0) -> torch.Tensor:
    """``dropout(softmax(q k^T * scale)) v`` for q (..., nq, d_k), k (...,
    nk, d_k), v (..., nk, d_v) (leading dimensions alike), by blocks of
    queries (see the module's docstring)."""
    lead = q.shape[:-2]
    # drawn from the default generator (torch.manual_seed repeats a run); a
    # tensor, so torch.compile keeps it an input of the op, not a constant
    seed = torch.randint(0, 2**62, ()) if dropout_p else torch.zeros((), dtype=torch.int64)
    out, _ = _forward(q.reshape(-1, *q.shape[-2:]), k.reshape(-1, *k.shape[-2:]),
                      v.reshape(-1, *v.shape[-2:]), float(scale), float(dropout_p), seed)
    return out.reshape(*lead, *out.shape[-2:])
