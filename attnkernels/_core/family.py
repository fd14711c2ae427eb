"""What a family folder declares, in its ``__init__.py``, as ``FAMILY``."""
import dataclasses
import importlib
import re
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class Routed:
    """A family whose core goes to a kernel torch has (no kernels of ours):
    its folder's reference, functional, drop-in modules and convert matchers
    (each as in ``Family``). ``convert``, ``revert``, the report and the
    public namespaces take it; the kernel test matrices and benchmarks do not."""
    name: str
    title: str
    root: type
    modules: ModuleType
    functional: ModuleType
    reference: ModuleType
    convert: ModuleType
    lookalike: str

    PARTS = ("reference", "functional", "modules", "convert")

    def looks_like(self, class_name: str) -> bool:
        return re.search(self.lookalike, class_name.lower()) is not None

    @classmethod
    def declare(cls, package: str, title: str, root: str, lookalike: str):
        """The family of the folder ``package`` (its ``__name__``): its parts are
        the folder's modules of those names; root names the drop-in root class."""
        part = {name: importlib.import_module(f"{package}.{name}") for name in cls.PARTS}
        return cls(name=package.rsplit(".", 1)[-1], title=title,
                   root=getattr(part["modules"], root), lookalike=lookalike, **part)


@dataclasses.dataclass(frozen=True)
class Family(Routed):
    """One attention family: its folder's modules, each with its part to play.

    modules     the drop-in classes (its ``__all__`` is exported by attnkernels.nn);
                ``root`` is the class every flavour subclasses
    functional  the functions (exported by attnkernels.functional)
    reference   the pure-PyTorch flavours (exported by attnkernels.reference, which
                also holds the module itself as ``reference.<name>``)
    op          ``register()``: fakes and autograd of the compiled ops, run once
                the extension is loaded
    convert     ``MATCHERS`` (tried in order by attnkernels.convert),
                ``timm_names()``/``timm_classes()`` (the timm integration) and,
                optionally, ``left_alone_reason(module)`` for modules of the
                family that no drop-in class replaces
    bench       the benchmark cases: ``make_module``, ``FLAVOURS``, ``SHAPES``,
                ``GPU_SHAPES`` (``python -m bench``), ``raw_passes(x, dy, rand)``
                (``python -m bench.passes``) and, optionally, ``FORWARD_PASSES``
                (the fused forward's floor in passes over x)
    lookalike   a regular expression over lower-case class names that say
                this family, for the report of modules left alone
    """
    op: ModuleType
    bench: ModuleType

    PARTS = Routed.PARTS + ("op", "bench")
