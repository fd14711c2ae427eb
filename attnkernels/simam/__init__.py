"""SimAM (Yang et al., ICML 2021), the parameter-free attention, and its
flavours: the official simam_module and the SimAM class of YOLO codebases."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "SimAM", root="SimAMAttention", lookalike=r"simam")
