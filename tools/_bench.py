"""Measuring helpers of the benchmark tools: time and peak extra memory of a callable, on CPU
(RSS high-water mark) or CUDA, and the tables they print.

CPU peak memory reads the process's RSS high-water mark after resetting it through
``/proc/self/clear_refs``; glibc must return freed blocks to the system for that to mean
anything, so the benchmark tools run with a fixed ``MALLOC_MMAP_THRESHOLD_`` (see
:func:`ensure_malloc_returns_memory`).
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

_MMAP_THRESHOLD = '65536'


def ensure_malloc_returns_memory() -> None:
    """Re-execute the current script with large allocations mmapped (freed at once)."""
    if os.environ.get('MALLOC_MMAP_THRESHOLD_') != _MMAP_THRESHOLD:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


@dataclass
class Measurement:
    name: str
    seconds: float        # median over repeats
    first_seconds: float  # the first call, compilation included
    peak_mib: float       # peak memory above what existed before the call


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_extra_mib(fn: Callable[[], object], device: torch.device) -> float:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open('/proc/self/clear_refs', 'w') as clear:
            clear.write('5')  # reset VmHWM to the current RSS
    except OSError:
        return float('nan')
    base = _status_kib('VmRSS')
    fn()
    return (_status_kib('VmHWM') - base) / 1024


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def timed(fn: Callable[[], object]) -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return timed


def measure_all(fns: dict[str, Callable[[], object]], repeats: int = 5,
                device: torch.device | str = 'cpu') -> list[Measurement]:
    """Median wall time of each callable, timed in interleaved rounds after a first call.

    Round-robin timing spreads a shared machine's slow spells over all variants alike, so
    their ratios hold even when the absolute times drift.
    """
    device = torch.device(device)
    timed = _timer(device)
    first = {name: timed(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return [Measurement(name, statistics.median(times[name]), first[name],
                        _peak_extra_mib(fn, device)) for name, fn in fns.items()]


def measure(name: str, fn: Callable[[], object], repeats: int = 5,
            device: torch.device | str = 'cpu') -> Measurement:
    """Median wall time of ``fn`` over ``repeats`` calls after a first (warm-up) call."""
    return measure_all({name: fn}, repeats, device)[0]


def print_table(title: str, rows: list[Measurement], baseline: str,
                extra: dict[str, str] | None = None) -> None:
    """Medians, first-call times, peak memory and ratios against the ``baseline`` row."""
    ref = next(r for r in rows if r.name == baseline)
    print(f'\n## {title}\n')
    print('| variant | median ms | first call ms | peak extra MiB | time vs '
          f'{baseline} | memory vs {baseline} |')
    print('|---|---:|---:|---:|---:|---:|')
    for r in rows:
        speed = ref.seconds / r.seconds
        memory = ref.peak_mib / r.peak_mib if r.peak_mib > 0 else float('nan')
        print(f'| {r.name} | {1e3 * r.seconds:.1f} | {1e3 * r.first_seconds:.0f} | '
              f'{r.peak_mib:.0f} | {speed:.2f}x faster | {memory:.2f}x less |')
    for key, value in (extra or {}).items():
        print(f'\n{key}: {value}')
    sys.stdout.flush()


def compile_summary() -> str:
    """Per kernel: the seconds its first compiled call took, or why it ran eagerly."""
    from plugin.ops import compile_enabled, kernel_report
    if not compile_enabled():
        return 'eager (PLUGIN_COMPILE=0)'
    parts = [f"{name} eager ({state['failure']})" if state['failure'] else
             f"{name} compiled ({', '.join(f'{s:.1f}' for s in state['compile_seconds'])} s)"
             for name, state in sorted(kernel_report().items())]
    return '; '.join(parts) or 'none ran'
