"""Every family's flavours for the matrices that run all families alike
(compile, determinism, fuzz, extremes, tiles, huge pages, CUDA streams and
graphs, emulated CUDA): ``"<family>_<name>" -> C -> a fused module``, gathered
from each family's test file (``SHARED_FLAVOURS`` in tests/test_<family>.py),
so a new family adds its flavours there and nowhere else."""
import importlib

from attnkernels.families import FAMILIES

FLAVOURS = {f"{family.name}_{name}": make for family in FAMILIES
            for name, make in importlib.import_module(f"test_{family.name}").SHARED_FLAVOURS.items()}
