"""Dot-product attention: of detection models (ultralytics ``Attention`` in
PSA / C2PSA, ``AAttn`` in A2C2f) and token-major (External-Attention-pytorch's
``ScaledDotProductAttention`` and its simplified twin, in DANet's branches;
seed 000's ``MultiHeadSelfAttention``): the attention product goes to torch's
``scaled_dot_product_attention`` where that is faster (by device), else the
original's explicit product. No kernels of ours: a routed family."""
from .._core.family import Routed

FAMILY = Routed.declare(__name__, "dot-product attention (SDPA)", root="DotProductAttention",
                        lookalike=r"^a?attn$|^attention$")
