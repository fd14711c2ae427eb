"""Registers, local memory (spills) and shared memory of every CUDA kernel, per
GPU architecture, read from a built extension with cuobjdump (no GPU needed).

    python tools/cuda_resources.py LIBRARY     # a built extension (attnkernels/_C*.so)
    python tools/cuda_resources.py --compile   # nvcc -cubin of csrc/cuda/*.cu, sm_80 and sm_90

Prints one line a kernel and architecture (its instantiations' largest use) and
then "resources: K kernels x A architectures, S spilling, P problems". A
problem: an architecture of TORCH_CUDA_ARCH_LIST's default (sm_80, sm_90)
missing, a __global__ kernel of csrc/cuda/ absent from one, local memory or a
stack frame (register spills, or an array the compiler put in local memory), or
shared memory beyond what the launchers assume: 48 KiB per block without an
opt-in, all of it for the dynamic shared memory of the kernels that declare
AK_DYNAMIC_SHARED (their launchers check the dynamic size against 48 KiB, so
such a kernel has no room for static shared memory); cuobjdump's count may
include the 1 KiB per block the system reserves on sm_80 and later. Exits 1 on a problem.
tests/test_cuda_resources.py runs the same check on the installed build."""
import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("sm_80", "sm_90")
SHARED_LIMIT = 48 * 1024
# cuobjdump counts, in some kernels' static shared memory, the 1 KiB that
# sm_80 and later reserve per block for the system: not part of the 48 KiB.
RESERVED = 1024


def source_kernels(root: str = ROOT):
    """{"file:kernel": uses dynamic shared memory} for every __global__ kernel in
    csrc/cuda/ (scanned from the sources, not listed by hand)."""
    kernels = {}
    for path in sorted(glob.glob(os.path.join(root, "csrc", "cuda", "*.cu*"))):
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"__global__\s+void\s+(\w+)", text):
            end = text.find("\n}\n", m.end())  # the kernel's body ends at a column-0 brace
            body = text[m.end():end if end >= 0 else len(text)]
            kernels[f"{os.path.basename(path)}:{m.group(1)}"] = "AK_DYNAMIC_SHARED" in body
    return kernels


def cuobjdump() -> str:
    """cuobjdump from the CUDA toolkit, else the copy in Triton's wheel."""
    for cand in (os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "cuobjdump"),
                 shutil.which("cuobjdump")):
        if cand and os.path.exists(cand):
            return cand
    spec = importlib.util.find_spec("triton")
    if spec and spec.origin:
        cand = os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin",
                            "cuobjdump")
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError("cuobjdump not found (CUDA_HOME, PATH, or triton's wheel)")


@dataclass
class Usage:
    arch: str
    kernel: str   # "file:name", e.g. channel_gate.cuh:channel_reduce_nchw_kernel
    mangled: str
    reg: int
    stack: int
    shared: int
    local: int


def usages(library: str, kernels, unit=None, arch=None):
    """One Usage per kernel instantiation and architecture in ``library`` (an
    extension, or one unit's cubin for one architecture)."""
    out = subprocess.run([cuobjdump(), "--dump-resource-usage", library], capture_output=True,
                         text=True, check=True).stdout
    found, function = [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("identifier = "):  # the translation unit
            unit = os.path.basename(line.split("=", 1)[1].strip())
        elif line.startswith("Function "):
            function = line[len("Function "):].rstrip(":")
        elif line.startswith("REG:") and function:
            fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
            # an Itanium-mangled name holds each identifier as <length><name>;
            # a kernel of a .cu is in that unit, one of a .cuh in any
            names = [k for k in kernels
                     if (k.startswith(f"{unit}:") or k.split(":")[0].endswith(".cuh"))
                     and f"{len(k.split(':')[1])}{k.split(':')[1]}" in function]
            name = max(names, key=len) if names else f"{unit}:{function}"
            found.append(Usage(arch, name, function, int(fields["REG"]), int(fields["STACK"]),
                               int(fields["SHARED"]), int(fields["LOCAL"])))
            function = None
    return found


def problems(found, kernels, archs=ARCHS):
    out = []
    for arch in archs:
        present = {u.kernel for u in found if u.arch == arch}
        if not present:
            out.append(f"{arch}: no kernels (TORCH_CUDA_ARCH_LIST without it?)")
            continue
        for k in sorted(set(kernels) - present):
            out.append(f"{arch}: {k} not in the build")
    for u in found:
        where = f"{u.arch} {u.kernel} ({u.mangled})"
        if u.local or u.stack:
            out.append(f"{where}: {u.local} B local memory, {u.stack} B stack (spills)")
        limit = (0 if kernels.get(u.kernel) else SHARED_LIMIT) + RESERVED
        if u.shared > limit:
            out.append(f"{where}: {u.shared} B static shared memory, the launcher assumes "
                       f"at most {limit} (the system's {RESERVED} B included)")
    return out


def compiled_cubins(out_dir: str, archs=ARCHS, jobs: int = 2):
    """(cubin, unit, arch) of every csrc/cuda/*.cu compiled by nvcc for each
    architecture, with setup.py's CUDA flags."""
    import sysconfig
    from concurrent.futures import ThreadPoolExecutor

    from torch.utils import cpp_extension

    cuda_home = os.environ.get("CUDA_HOME") or cpp_extension.CUDA_HOME or ""
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    nvcc = nvcc if os.path.exists(nvcc) else shutil.which("nvcc")
    if not nvcc:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME)")
    flags = ["-cubin", "-O3", "-std=c++20", "--expt-relaxed-constexpr",
             *cpp_extension.COMMON_NVCC_FLAGS, "-DATTNKERNELS_PYTHON_MODULE",
             "-I" + sysconfig.get_paths()["include"],
             *[f"-I{p}" for p in cpp_extension.include_paths(device_type="cuda")]]
    units = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    jobs_list = [(u, a, os.path.join(out_dir, f"{os.path.basename(u)}.{a}.cubin"))
                 for u in units for a in archs]

    def run(job):
        unit, arch, cubin = job
        out = subprocess.run([nvcc, *flags, f"-arch={arch}", unit, "-o", cubin],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"nvcc {unit} for {arch} failed:\n{out.stderr[-3000:]}")
        return cubin, os.path.basename(unit), arch

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(run, jobs_list))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", nargs="?", default=None)
    parser.add_argument("--compile", action="store_true", help="compile the kernels with nvcc")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    if bool(args.library) == args.compile:
        parser.error("name a LIBRARY or pass --compile")
    kernels = source_kernels()
    if args.compile:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            found = [u for cubin, unit, arch in compiled_cubins(tmp, jobs=args.jobs)
                     for u in usages(cubin, kernels, unit, arch)]
    else:
        found = usages(args.library, kernels)
    table = {}
    for u in found:
        t = table.setdefault((u.kernel, u.arch), [0, 0, 0, 0])
        t[0] += 1
        t[1] = max(t[1], u.reg)
        t[2] = max(t[2], u.shared)
        t[3] = max(t[3], u.local + u.stack)
    print(f"{'kernel':44} {'arch':6} {'inst':>4} {'regs':>4} {'shared B':>8} {'local B':>7}")
    for (kernel, arch), (n, reg, shared, local) in sorted(table.items()):
        print(f"{kernel:44} {arch:6} {n:4} {reg:4} {shared:8} {local:7}")
    bad = problems(found, kernels)
    for p in bad:
        print("problem:", p)
    archs = sorted({u.arch for u in found})
    spilling = sum(1 for u in found if u.local or u.stack)
    print(f"resources: {len({u.kernel for u in found})} kernels x {len(archs)} architectures "
          f"({', '.join(archs)}), {spilling} spilling, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
