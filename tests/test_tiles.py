"""Every flavour of every family at the shapes that break the kernels' tiling,
against the float64 oracle, forward and every gradient, on every fused backend
this machine runs (and, through tests/test_cuda_emulated.py, on the CUDA kernels
emulated). The matrix tests stop at one tile; these cross the tile edges:

- 1x1x1x1: one channel, one position, one sample;
- C = 33 at H*W = 1: channel tiles of 32 (CUDA channels_last reduce, CBAM's
  over-C warps) with a partial last one, and nothing to loop over in space;
- C = 300: above the 256 threads of one block over channels (SE's and ECA's
  gate kernels loop), above Triton's 64-channel blocks;
- 17x19 = 323 positions: above one 256-thread block over H*W, a partial second
  round; three samples;
- 40x37 (H, W above 32, H*W = 1480): the strip and rotated-plane reductions
  over several rounds, many blocks per plane for the elementwise passes;
- N = 9: more samples than the emulator's grid-stride cap of 3 blocks.

bfloat16 cases take the half-precision loads and the fp32 accumulation.

Then the Triton kernels at shapes that cross every tile their launchers pick
(read from the launches, so a change of tiling cannot leave the test inside one
tile), and each family's main flavour at a realistic size (C = 256, 56x56) on
the native fused backends."""
import pytest
import torch

from flavours import FLAVOURS, LIBRARY_LAYERS, MAIN_FLAVOURS, TRITON_TILE_SHAPES
from utils import check_flavour_case, family_of, fused_backends, record_triton_launches

SHAPES = [(1, 1, 1, 1), (2, 33, 1, 1), (1, 300, 2, 3), (3, 40, 17, 19), (2, 5, 40, 37),
          (9, 3, 5, 7)]
# the Triton interpreter runs ~100x slower: it gets the two shapes that cross its
# tiles, and float16 for the half type (it has no bfloat16 arithmetic)
INTERPRETER_SHAPES = [(1, 300, 2, 3), (2, 5, 40, 37)]
CASES = [(b, d, s, dt) for b, d in fused_backends()
         for s in (INTERPRETER_SHAPES if (b, d) == ("triton", "cpu") else SHAPES)
         for dt in (torch.float32,
                    torch.float16 if (b, d) == ("triton", "cpu") else torch.bfloat16)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("backend,device,shape,dtype", CASES,
                         ids=[f"{b}-{d}-{'x'.join(map(str, s))}-{str(dt)[6:]}"
                              for b, d, s, dt in CASES])
def test_tile_edges_match_the_float64_reference(backend, device, shape, dtype, flavour, layout):
    train = shape[0] * shape[2] * shape[3] > 1  # BatchNorm needs two values per channel
    if not check_flavour_case(backend, device, flavour, shape, dtype, layout, train,
                              explicit=True, seed=sum(shape)):
        pytest.skip("upstream refuses this case")


# ---- the Triton kernels' tiles, read from their launches
# A launch's BLOCK_<X> constexpr tiles its integer argument X (BLOCK: N, the
# element count; BLOCK_P: HW, the positions). For each kernel and each of its
# tiles, at least one launch at these shapes must span more than one tile and
# end in a partial one: a change of tiling that leaves a shape inside one tile
# fails here, naming the kernel, until the shape is moved past it.
TILED_ARGUMENT = {"BLOCK": "N", "BLOCK_P": "HW"}
# TRITON_TILE_SHAPES (tests/flavours.py): each family's shapes that cross its
# tiles in both layouts, from its test file.


def _tiles_not_crossed(launches) -> list:
    crossed, seen = set(), set()
    for launch in launches:
        spec = launch["spec"]
        for name, block in spec["constexprs"].items():
            if not name.startswith("BLOCK"):
                continue
            arg = TILED_ARGUMENT.get(name, name[len("BLOCK_"):])
            key = (spec["kernel"], name, arg)
            seen.add(key)
            extent = launch["ints"].get(arg)
            assert extent is not None, f"{spec['kernel']}: {name} tiles no argument named {arg}"
            if extent > block and extent % block:
                crossed.add(key)
    return sorted(seen - crossed)


@pytest.mark.skipif(("triton", "cpu") not in fused_backends(),
                    reason="reads the launches in the Triton interpreter")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("flavour", sorted(TRITON_TILE_SHAPES))
def test_triton_kernels_match_float64_across_their_tiles(flavour, layout):
    shape = TRITON_TILE_SHAPES[flavour]
    launches = record_triton_launches(lambda: check_flavour_case(
        "triton", "cpu", flavour, shape, torch.float32, layout, True, explicit=True, seed=3))
    assert launches
    assert not _tiles_not_crossed(launches), (
        f"{flavour} at {shape} stays inside one tile of (kernel, tile, argument): "
        f"{_tiles_not_crossed(launches)}")


# ---- realistic sizes: a ResNet-50 stage-1 activation (C = 256, 56x56) for each
# family's main flavour, and the Triton tile shapes above, on the native fused
# backends (through tests/test_cuda_emulated.py, the CUDA kernels too)
REALISTIC_CASES = ([(f, (2, 256, 56, 56)) for f in MAIN_FLAVOURS]
                   + sorted(TRITON_TILE_SHAPES.items()))
NATIVE = [(b, d) for b, d in fused_backends() if (b, d) != ("triton", "cpu")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("flavour,shape", REALISTIC_CASES,
                         ids=[f"{f}-{'x'.join(map(str, s))}" for f, s in REALISTIC_CASES])
@pytest.mark.parametrize("backend,device", NATIVE)
def test_realistic_sizes_match_the_float64_reference(backend, device, flavour, shape, layout,
                                                     dtype):
    if dtype != torch.float32 and family_of(flavour) in LIBRARY_LAYERS:
        pytest.skip("library layers in the module: half precision is its test file's")
    assert check_flavour_case(backend, device, flavour, shape, dtype, layout, True,
                              explicit=True, seed=shape[1])
