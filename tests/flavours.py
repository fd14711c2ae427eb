"""What the tests that run all families alike (compile, determinism, fuzz,
extremes, tiles, huge pages, CUDA streams and graphs, op outputs, emulated
CUDA) take from each family, gathered from its test file
(tests/test_<family>.py), so a new family adds them there and nowhere else:

  FLAVOURS            "<family>_<name>" -> C -> a fused module (SHARED_FLAVOURS)
  MAIN_FLAVOURS       each family's main flavour (MAIN_FLAVOUR)
  TRITON_TILE_SHAPES  "<family>_<name>" -> a shape whose Triton launches cross
                      every tile (TRITON_TILE_SHAPES)
  TWO_RUNS            family -> (a module maker, its C) (TWO_RUNS)
  FORWARD_OP_CASES    family -> forward_op_case(backend, x, w): (op, args), or
                      None where the forward op returns y alone
  LIBRARY_LAYERS      family -> why, for the families whose modules run library
                      layers (convolutions, BatchNorm) around the fused passes
                      (LIBRARY_LAYERS, optional): x meets those first (a
                      non-dense x is theirs to take), under torch.compile the
                      upstream twin is compiled too, training-mode cases
                      over a few values per channel take the nudged budget,
                      and half-precision module cases are the test file's
  BATCH_NORM_VALUES   family -> (module, shape) -> the fewest values one of the
                      module's BatchNorms normalises per channel in training,
                      where that is not N * H * W (BATCH_NORM_VALUES, optional)
  THREAD_DEPENDENT_LAYERS  family -> why, for the families whose modules run
                      library layers whose bits depend on the thread count
                      (as LIBRARY_LAYERS' do; THREAD_DEPENDENT_LAYERS, optional)"""
import importlib

from attnkernels.families import FAMILIES

_FILES = {f.name: importlib.import_module(f"test_{f.name}") for f in FAMILIES}

FLAVOURS = {f"{family}_{name}": make for family, t in _FILES.items()
            for name, make in t.SHARED_FLAVOURS.items()}
MAIN_FLAVOURS = [f"{family}_{t.MAIN_FLAVOUR}" for family, t in _FILES.items()]
TRITON_TILE_SHAPES = {f"{family}_{name}": shape for family, t in _FILES.items()
                      for name, shape in t.TRITON_TILE_SHAPES.items()}
TWO_RUNS = {family: t.TWO_RUNS for family, t in _FILES.items()}
FORWARD_OP_CASES = {family: t.forward_op_case for family, t in _FILES.items()}
LIBRARY_LAYERS = {family: t.LIBRARY_LAYERS for family, t in _FILES.items()
                  if hasattr(t, "LIBRARY_LAYERS")}
BATCH_NORM_VALUES = {family: t.BATCH_NORM_VALUES for family, t in _FILES.items()
                     if hasattr(t, "BATCH_NORM_VALUES")}
THREAD_DEPENDENT_LAYERS = {family: t.THREAD_DEPENDENT_LAYERS for family, t in _FILES.items()
                           if hasattr(t, "THREAD_DEPENDENT_LAYERS")}
