"""SimAM in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``simam_attention`` is the functional fallback the
fused backends must agree with.

Per (n, c), over the H*W positions: mu the mean, d = (x - mu)^2,
n = H*W - 1, y = d / (4 (sum(d) / n + e_lambda)) + 0.5, out = x * sigmoid(y).
A 1x1 map has n = 0: upstream gives NaN there (0 / 0), and so do we.

Flavours (no parameters, no buffers; the state_dict is empty):
  * ``SimAMModule``  the official ``simam_module(channels=None, e_lambda=1e-4)``
                     (ZjjConan/SimAM): a ``Sigmoid`` child spelt ``activaton``;
                     ``channels`` is unused.
  * ``SimAM``        the YOLO codebases' ``SimAM(e_lambda=1e-4)``: the same
                     child and forward without the ``channels`` argument.
"""
import torch
from torch import nn

__all__ = ["simam_attention", "SimAMModule", "SimAM"]


def simam_attention(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """out = x * sigmoid(d / (4 (sum_hw(d) / (H*W - 1) + e_lambda)) + 0.5), d = (x - mean_hw(x))^2."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + e_lambda)) + 0.5
    return x * torch.sigmoid(y)


class SimAMModule(nn.Module):
    """The official ``simam_module(channels=None, e_lambda=1e-4)``."""

    def __init__(self, channels=None, e_lambda=1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def __repr__(self):
        return f"{type(self).__name__}(lambda={self.e_lambda:f})"

    @staticmethod
    def get_module_name():
        return "simam"

    def forward(self, x):
        b, c, h, w = x.size()
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n
                                      + self.e_lambda)) + 0.5
        return x * self.activaton(y)


class SimAM(SimAMModule):
    """The YOLO codebases' ``SimAM(e_lambda=1e-4)``: the official module without ``channels``."""

    def __init__(self, e_lambda=1e-4):
        super().__init__(e_lambda=e_lambda)


simam_module = SimAMModule
