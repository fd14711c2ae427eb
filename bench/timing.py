"""Timing and memory measurement shared by every benchmark.

GPU: CUDA events, L2 flushed before each call (a 256 MB buffer is zeroed), as
triton.testing.do_bench does. CPU: wall clock. Both report the median and the
20th/80th percentiles over repeated calls."""
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
    reps = max(min_reps, min(100, int(budget_s / max(one, 1e-6))))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {**_quantiles(samples), "peak_mb": float("nan")}
