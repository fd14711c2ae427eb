"""Helpers shared by every family's operator registration."""
import torch


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


def vjp_of(fn, primals):
    """torch.func.vjp over the tensors in ``primals`` (None entries stay None)."""
    idx = [i for i, p in enumerate(primals) if p is not None]

    def inner(*tensors):
        args = list(primals)
        for i, t in zip(idx, tensors):
            args[i] = t
        return fn(*args)

    out, vjp_fn = torch.func.vjp(inner, *[primals[i] for i in idx])

    def backward(grad):
        grads = [None] * len(primals)
        for i, g in zip(idx, vjp_fn(grad)):
            grads[i] = g
        return grads

    return out, backward
