"""GAM (Global Attention Mechanism: seed 000's ``GAM_Attention``, the common
copy with a channel sigmoid, the YOLO copy with grouped convs and a shuffle): the
channel MLP over pixels as 1x1 convolutions in the input's own layout (no
permute copies, no mixed-layout multiply), the spatial branch's convolutions
with the library, its last BatchNorm folded into the last convolution in
eval. No kernels of ours: a routed family."""
from .._core.family import Routed

FAMILY = Routed.declare(__name__, "GAM", root="GlobalAttention",
                        lookalike=r"^gam(_?attention)?$")
