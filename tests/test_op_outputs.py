"""Every fused forward op returns y and, for its backward, statistics and
intermediates: only y is differentiable, so autograd neither lets a loss flow
through the others nor fills zero gradients for them in every backward."""
import pytest
import torch

import utils

BACKENDS = utils.fused_backends()


def _cases(backend, device):
    """(op, args) of every family's forward op on ``backend``, x requiring grad."""
    from attnkernels.cbam.functional import forward_op as cbam_forward_op
    from attnkernels.coord.functional import forward_op as coord_forward_op
    from attnkernels.triplet.functional import forward_op as triplet_forward_op

    kw = dict(device=device)
    x = torch.randn(2, 6, 3, 5, **kw, requires_grad=True)
    w = lambda *s: torch.randn(*s, **kw, requires_grad=True)  # noqa: E731
    ops = torch.ops.attnkernels
    suffix = "_triton" if backend == "triton" else ""
    if backend == "triton":
        from attnkernels.eca import triton as _eca  # noqa: F401  (registers the *_triton ops)
        from attnkernels.se import triton as _se  # noqa: F401
        from attnkernels.simam import triton as _simam  # noqa: F401
    return [
        (getattr(ops, "se_forward" + suffix).default, (x, w(3, 6), None, w(6, 3), None, 1, 1, 0)),
        (getattr(ops, "eca_forward" + suffix).default, (x, w(3), None, False, 0)),
        (cbam_forward_op(backend), (x, w(3, 6), None, w(6, 3), None, w(1, 2, 3, 3), None, w(1),
                                    w(1), None, None, [0, 1, 0, 0, 0, 1, 1], 1e-5)),
        (coord_forward_op(backend), (x, w(3, 6), None, w(6, 3), None, w(6, 3), None, w(3), w(3),
                                     None, None, [3, 0, 1, 0, 1], 1e-5)),
        (triplet_forward_op(backend), (x, w(3, 2, 3, 3), None, w(3), w(3), None, None, [1, 1, 1],
                                       1e-5)),
        (getattr(ops, "simam_forward" + suffix).default, (x, 1e-4)),
    ]


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
