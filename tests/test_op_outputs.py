"""Every fused forward op returns y and, for its backward, statistics and
intermediates: only y is differentiable, so autograd neither lets a loss flow
through the others nor fills zero gradients for them in every backward."""
import pytest
import torch

import utils
from flavours import FORWARD_OP_CASES

BACKENDS = utils.fused_backends()


def _cases(backend, device):
    """(op, args) of every family's forward op on ``backend``, x requiring grad
    (each family's forward_op_case, tests/flavours.py; None for a family whose
    forward op returns y alone)."""
    x = torch.randn(2, 6, 3, 5, device=device, requires_grad=True)
    w = lambda *s: torch.randn(*s, device=device, requires_grad=True)  # noqa: E731
    cases = [case(backend, x, w) for case in FORWARD_OP_CASES.values()]
    return [c for c in cases if c is not None]


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_only_y_is_differentiable(backend, device):
    for op, args in _cases(backend, device):
        y, *rest = op(*args)
        assert y.requires_grad, op
        assert not any(t.requires_grad for t in rest), op
        with pytest.raises(RuntimeError, match="does not require grad"):
            rest[0].sum().backward()
        y.sum().backward()  # the backward runs on y's gradient alone
        assert args[0].grad is not None and torch.isfinite(args[0].grad).all(), op
        args[0].grad = None
