"""Contextual Transformer attention (CoTAttention, External-Attention-pytorch
and seed 002): the convolutions and BatchNorms stay library ops; the
attention embedding's last 1x1 convolution, whose k*k output groups the
original averages at once, runs as one convolution with the group-averaged
weight and bias (k*k times fewer FLOPs, no (B, k*k*C, H, W) tensor); the
softmax over the pixels, times v, plus k1 is one fused op of ours, forward
and backward."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "CoT attention", root="ContextualAttention",
                        lookalike=r"^cot(_?attention)?$")
