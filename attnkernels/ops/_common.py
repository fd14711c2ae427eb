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


# How a gate network's BatchNorm normalises (the ``bn`` entry of an op's config).
BN_NONE, BN_BATCH, BN_RUNNING = 0, 1, 2


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


def normalise_batch(z: torch.Tensor, weight, bias, eps: float):
    """BatchNorm of z (N, C, ...) with its batch statistics, in z's dtype:
    (output, batch mean, unbiased batch variance) from one F.batch_norm, whose
    running statistics (fresh buffers, momentum 1) come out as the batch's.
    normalise plus batch_stats compute the statistics twice (5 ms each for a
    gate conv's output at 128x2048x7x7 on the CPU)."""
    width = z.shape[1]
    mean = torch.zeros(width, dtype=z.dtype, device=z.device)
    var = torch.ones(width, dtype=z.dtype, device=z.device)
    out = torch.nn.functional.batch_norm(
        z, mean, var, None if weight is None else weight.to(z.dtype),
        None if bias is None else bias.to(z.dtype), True, 1.0, eps)
    return out, mean, var


def batch_stats(z: torch.Tensor):
    """(mean, unbiased variance) per channel of z (N, C, ...): what BatchNorm's
    running statistics are updated with in training mode."""
    var, mean = torch.var_mean(z, dim=[0, *range(2, z.dim())], unbiased=True)
    return mean, var

