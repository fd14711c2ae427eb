"""What every family's functional shares: argument checks, the reasons a
backend cannot serve, and the running-statistics update of BatchNorm."""
from typing import Dict, List

import torch

from . import extension as _extension
from .modes import BatchNormMode


def check_activation_4d(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def check_param(x, t, name, shape) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


def check_first_layer(x, w1, b1) -> int:
    """w1 (R, C) and b1 (R,) of a layer over the C channels of x; returns R."""
    if not isinstance(w1, torch.Tensor) or w1.dim() != 2:
        raise ValueError(f"w1 must be a 2-D (reduced, C) tensor, got "
                         f"{tuple(w1.shape) if isinstance(w1, torch.Tensor) else type(w1).__name__}")
    reduced = w1.shape[0]
    if w1.shape[1] != x.shape[1]:  # name the input: the weights are usually right
        raise ValueError(f"x has {x.shape[1]} channels, but the module's gate network expects "
                         f"{w1.shape[1]} (w1 must have shape {(reduced, x.shape[1])} for this x, "
                         f"got {tuple(w1.shape)})")
    check_param(x, w1, "w1", (reduced, x.shape[1]))
    check_param(x, b1, "b1", (reduced,))
    return reduced


def check_mlp(x, w1, b1, w2, b2, act) -> None:
    """W2 act(W1 s + b1) + b2 over the C channels of x; w2=None: one layer W1 (C, C)."""
    channels = x.shape[1]
    reduced = check_first_layer(x, w1, b1)
    if w2 is None:
        if reduced != channels:
            raise ValueError(f"a one-layer gate (w2=None) needs w1 of shape ({channels}, {channels}), "
                             f"got {tuple(w1.shape)}")
        if b2 is not None:
            raise ValueError("b2 given without w2")
        if act != "identity":
            raise ValueError("a one-layer gate (w2=None) has no activation: act must be 'identity'")
    check_param(x, w2, "w2", (channels, reduced))
    check_param(x, b2, "b2", (channels,))


def cuda_kernel_reasons(op: str, family: str) -> Dict[str, List[str]]:
    """{"cuda": [why]} when the extension was built without ``op``'s CUDA kernel."""
    if _extension.load() and not _extension.has_kernel(op, "CUDA"):
        return {"cuda": [f"the extension has no CUDA kernels for {family}"]}
    return {}


def batch_norm_mode(bn: bool, training: bool, has_running: bool):
    """(the op's BatchNorm code, whether it normalises with the batch's
    statistics): the batch's in training mode or without running statistics,
    as F.batch_norm."""
    batch = bn and (training or not has_running)
    return (BatchNormMode.NONE if not bn else BatchNormMode.BATCH if batch
            else BatchNormMode.RUNNING), batch


def update_running_stats(x, running: List[torch.Tensor], batch: List[torch.Tensor],
                          momentum: float) -> None:
    """F.batch_norm's update in training mode, r = (1 - momentum) r + momentum * b, of
    each running statistic r (means and variances, one or more BatchNorms) with its
    batch statistic b (the variance unbiased), in two foreach calls (at batch 1 the
    per-tensor in-place ops are a visible part of a call). An empty x leaves them as
    they are, as F.batch_norm does (the ops' batch statistics are then zeros:
    ``normalise_saving``)."""
    if x.numel() == 0:
        return
    with torch.no_grad():
        torch._foreach_mul_(running, 1 - momentum)
        torch._foreach_add_(running, batch, alpha=momentum)


class BatchNormCall:
    """One call's BatchNorm in a composite op with a single BatchNorm: its
    code for the op's config (``mode``), the running statistics the op reads
    (``op_running``: None, None where it normalises with the batch's) and,
    after the op, the update of the running ones from the batch's (``after``)."""

    def __init__(self, bn: bool, training: bool, running_mean, running_var, momentum: float):
        self.mode, batch = batch_norm_mode(bn, training, running_mean is not None)
        self.running = [running_mean, running_var]
        self.op_running = [None, None] if batch else self.running
        self.updates = batch and training and running_mean is not None
        self.momentum = momentum

    def after(self, x, batch_mean, batch_var) -> None:
        if self.updates:
            update_running_stats(x, self.running, [batch_mean, batch_var], self.momentum)


def check_batch_norm(x, bn, width, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and not bn:
            raise ValueError(f"{name} given with bn=False")
        check_param(x, t, name, (width,))
    if (tensors["running_mean"] is None) != (tensors["running_var"] is None):
        raise ValueError("give both running_mean and running_var, or neither")
