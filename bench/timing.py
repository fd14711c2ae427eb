"""Timing and memory measurement shared by every benchmark.

GPU: CUDA events, L2 flushed before each call (a 256 MB buffer is zeroed), as
triton.testing.do_bench does. CPU: wall clock. Both report the median and the
20th/80th percentiles over repeated calls. Peak memory: the CUDA caching
allocator's peak on GPU; on the CPU, the peak of torch's allocations during one
call, from the profiler's memory events. Both are peaks above the level at the
call, so a measured function must not free what an earlier call left (such as
gradients from the last call): frees before its allocations would lower the
level and the peak would read short by their size."""
import contextlib
import os
import statistics
import time
from typing import Callable, Dict

import torch


def _quantiles(samples):
    s = sorted(samples)
    q = lambda f: s[min(len(s) - 1, int(f * len(s)))]  # noqa: E731
    return {"median_ms": statistics.median(s), "p20_ms": q(0.2), "p80_ms": q(0.8)}


def measure(fn: Callable[[], None], device: torch.device, min_reps: int = 5,
            budget_s: float = 1.0) -> Dict[str, float]:
    """Time ``fn`` (median, p20, p80 in ms) and its peak memory (MB, CUDA only)."""
    fn()  # warm up (and compile, for torch.compile providers)
    fn()
    if device.type == "cuda":
        flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=device)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = time.perf_counter() - t0
        reps = max(min_reps, min(200, int(budget_s / max(one, 1e-6))))
        samples = []
        for _ in range(reps):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        del flush
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return {**_quantiles(samples), "peak_mb": peak}
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    # up to 1000 calls: a sub-millisecond case (batch 1) then fills its budget
    # instead of taking its median from 100 calls, a few tens of ms of a drifting machine
    reps = max(min_reps, min(1000, int(budget_s / max(one, 1e-6))))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {**_quantiles(samples), "peak_mb": cpu_peak_mb(fn)}


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's native logger writes to fd 2; keep it off the report."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_mb(fn: Callable[[], None]) -> float:
    """Peak of torch's CPU allocations (MB above the level at the call) during one call."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak / 2**20


def measure_interleaved(fns: Dict[str, Callable[[], None]], device: torch.device,
                        min_rounds: int = 3, budget_s: float = 5.0) -> Dict[str, Dict[str, float]]:
    """Time several alternatives of the same work by rounds, each round calling
    every one once, in a rotating order: on a shared machine the speed drifts
    over seconds, and blocks of one alternative after another would turn that
    drift into differences between them. Returns measure()'s fields per name."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(fns)
    for name in names:  # warm up (and compile, for torch.compile alternatives)
        fns[name]()
        fns[name]()
    sync()
    samples: Dict[str, list] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < budget_s and rounds < 100):
        order = names[rounds % len(names):] + names[:rounds % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            sync()
            samples[name].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    out = {}
    for name in names:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fns[name]()
            sync()
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            peak = cpu_peak_mb(fns[name])
        out[name] = {**_quantiles(samples[name]), "peak_mb": peak, "rounds": rounds}
    return out
