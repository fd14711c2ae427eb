"""The families attnkernels fuses, in the order ``convert`` tries them.

This is the one place outside the family folders that names them: the
public namespaces (attnkernels.nn, functional, reference), ``convert``, the
timm integration and the benchmarks iterate ``FAMILIES``. Adding a family
means its folder, its csrc files, its test file and a line here (see
docs/architecture.md)."""
from . import attention, cbam, coord, cot, ema, eca, gam, nam, se, simam, sk, triplet

FAMILIES = (se.FAMILY, eca.FAMILY, cbam.FAMILY, coord.FAMILY, triplet.FAMILY, simam.FAMILY,
            nam.FAMILY, sk.FAMILY, ema.FAMILY, cot.FAMILY)

# Families whose core goes to a kernel torch has (no kernels of ours): convert,
# revert and the public namespaces take them, the kernel tests and benchmarks not.
ROUTED = (attention.FAMILY, gam.FAMILY)


def exported(part: str) -> dict:
    """Every family's public names of one part (``"modules"``, ``"functional"``,
    ``"reference"``: each module's ``__all__``), for the public namespaces."""
    return {name: getattr(getattr(f, part), name) for f in FAMILIES + ROUTED
            for name in getattr(f, part).__all__}
