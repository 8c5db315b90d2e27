"""What mmengine 0.10 / mmdet 3.3 need on today's torch: loading their own checkpoints, and
launching several processes on a machine without CUDA.

Since torch 2.6, ``torch.load`` unpickles with ``weights_only=True`` unless told otherwise,
and mmengine 0.10.7 never tells it otherwise. A checkpoint written by mmengine's ``Runner``
holds a few non-tensor objects (the message hub's ``HistoryBuffer`` logs, numpy arrays and
scalars), so ``--resume``, ``load_from`` and ``tools/test.py CONFIG CKPT`` all fail with
``UnpicklingError: Weights only load failed``.

:func:`allow_mmengine_checkpoints` adds exactly those objects to torch's weights-only
allowlist. ``weights_only`` stays on, so a checkpoint that asks for any other global (the
way a malicious pickle runs code) is still refused before anything runs.

:func:`allow_cpu_launch` lets ``--launcher pytorch`` (torchrun) start processes without CUDA:
mmengine 0.10.7 calls ``torch.cuda.set_device`` unconditionally before it joins the process
group, defaults to the nccl backend, and pins ``MMDistributedDataParallel`` to a GPU index.

:func:`resume_complete_checkpoints` makes ``--resume`` (without a path) survive a crash
while a checkpoint was written: mmengine resumes from whatever ``last_checkpoint`` names,
and fails on a truncated file or an empty pointer.

:func:`exit_process` keeps a finished multi-process run from aborting on its way out, and
ends every process within a deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import pickle
import re
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch

__all__ = ['EXIT_DEADLINE_S', 'allow_cpu_launch', 'allow_mmengine_checkpoints', 'exit_after',
           'exit_process', 'newest_complete_checkpoint', 'resume_complete_checkpoints']

# HistoryBuffer.__getstate__ saves its class-level table of statistics methods. Pickle
# protocol 2 (torch's default) writes a method such as ``HistoryBuffer.mean`` as
# ``builtins.getattr(HistoryBuffer, 'mean')``; these are the names mmengine registers.
_HISTORY_BUFFER_METHODS = frozenset({'min', 'max', 'current', 'mean'})

# numpy has spelled its C module ``numpy.core.multiarray`` (1.x) and ``numpy._core.multiarray``
# (2.x); a checkpoint keeps the spelling of the numpy that wrote it.
_NUMPY_MULTIARRAY_SPELLINGS = ('numpy._core.multiarray', 'numpy.core.multiarray')

# Numeric dtypes a HistoryBuffer or a logged numpy scalar can carry: float64 and int64 by
# default, the others when a hook logs numpy values or numpy 1.x on Windows (int32 counts).
# Object, string and structured dtypes are left out, so no object arrays.
_NUMERIC_DTYPES = (
    'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
    'float16', 'float32', 'float64',
)


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: resolves only HistoryBuffer's
    statistics methods, so the real getattr (which reaches any attribute) is never allowed.
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a weights-only load; only '
        f'HistoryBuffer.{{{",".join(sorted(_HISTORY_BUFFER_METHODS))}}} are')


def _mmengine_safe_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """The allowlist entries; a ``(obj, 'module.name')`` pair names obj as a checkpoint does."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    # Taken from numpy's own pickling rather than imported by path, which differs by version.
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    entries: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for module in _NUMPY_MULTIARRAY_SPELLINGS:
        entries += [(reconstruct, f'{module}._reconstruct'), (scalar, f'{module}.scalar')]
    # Never named in a checkpoint, but the unpickler only restores state (BUILD) into
    # instances of allowlisted types, and np.dtype('float64') is a numpy.dtypes.Float64DType.
    entries += sorted({type(np.dtype(name)) for name in _NUMERIC_DTYPES}, key=str)
    return entries


def _torch_release() -> tuple[int, int]:
    # Major and minor only, so that 2.6 pre-releases and local builds count as 2.6.
    major, minor = re.match(r'(\d+)\.(\d+)', str(torch.__version__)).groups()
    return int(major), int(minor)


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read checkpoints saved by mmengine's Runner.

    Idempotent. A no-op on torch < 2.6, whose ``torch.load`` is not weights-only by default
    (and whose ``add_safe_globals``, where it exists, cannot take the named entries needed
    here), and when mmengine or numpy is not installed.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None or _torch_release() < (2, 6):
        return
    try:
        entries = _mmengine_safe_globals()
    except ImportError:
        return
    # torch keeps the allowlist as a set, so adding the same entries again changes nothing.
    add_safe_globals(entries)


def _init_dist_pytorch_on_cpu(original: Callable[..., None]) -> Callable[..., None]:
    """mmengine's ``_init_dist_pytorch``, minus the CUDA device, where there is none."""

    @functools.wraps(original)
    def init_dist_pytorch(backend: str, init_backend: str = 'torch', **kwargs: Any) -> None:
        from mmengine.device import get_device

        # Every other accelerator, and deepspeed's own init, keep mmengine's code path.
        if get_device() != 'cpu' or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':  # mmengine's default; nccl needs CUDA
            from mmengine.logging import print_log

            print_log('plugin: no CUDA device, so the process group uses the gloo backend '
                      '(env_cfg.dist_cfg asked for nccl)', logger='current')
            backend = 'gloo'
        torch.distributed.init_process_group(backend=backend, **kwargs)

    init_dist_pytorch.plugin_cpu_launch = True
    return init_dist_pytorch


def _ddp_init_on_cpu(original: Callable[..., None]) -> Callable[..., None]:
    """``MMDistributedDataParallel.__init__`` that drops ``device_ids`` for a CPU module
    (mmengine's Runner passes ``[LOCAL_RANK]``, which torch refuses for CPU modules)."""

    @functools.wraps(original)
    def __init__(self: Any, module: torch.nn.Module, **kwargs: Any) -> None:
        if kwargs.get('device_ids') is not None and all(
                tensor.device.type == 'cpu'
                for tensor in (*module.parameters(), *module.buffers())):
            kwargs['device_ids'] = None
        original(self, module, **kwargs)

    __init__.plugin_cpu_launch = True
    return __init__


def allow_cpu_launch() -> None:
    """Let mmengine's ``pytorch`` launcher (``torchrun ... --launcher pytorch``) run on CPU.

    Without a CUDA device, joining the process group skips ``torch.cuda.set_device`` and
    uses gloo when the config keeps mmengine's default nccl; the DDP wrapper of a CPU model
    gets no device index. With CUDA (or another accelerator mmengine knows) nothing
    changes. Idempotent; a no-op when mmengine is not installed.
    """
    try:
        from mmengine.dist import utils as dist_utils
        from mmengine.model import MMDistributedDataParallel
    except ImportError:
        return
    if not getattr(dist_utils._init_dist_pytorch, 'plugin_cpu_launch', False):
        # mmengine's init_dist looks the function up in its module at call time.
        dist_utils._init_dist_pytorch = _init_dist_pytorch_on_cpu(dist_utils._init_dist_pytorch)
    if not getattr(MMDistributedDataParallel.__init__, 'plugin_cpu_launch', False):
        MMDistributedDataParallel.__init__ = _ddp_init_on_cpu(MMDistributedDataParallel.__init__)


# The names mmengine's CheckpointHook gives by default ('iter_{}.pth', 'epoch_{}.pth').
_NUMBERED_CHECKPOINT = re.compile(r'(?:iter|epoch)_(\d+)\.pth')


def _is_complete(path: str | Path) -> bool:
    """Whether a checkpoint file is whole. torch.save writes a zip archive whose directory
    comes last, so a file cut short by a crash is no zip; testzip also checks every CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def newest_complete_checkpoint(work_dir: str | Path) -> str | None:
    """The highest-numbered ``iter_N.pth`` / ``epoch_N.pth`` in work_dir that is whole."""
    numbered = [(int(match.group(1)), path) for path in Path(work_dir).glob('*.pth')
                if (match := _NUMBERED_CHECKPOINT.fullmatch(path.name))]
    for _, path in sorted(numbered, reverse=True):
        if _is_complete(path):
            return str(path)
    return None


def _find_complete_checkpoint(original: Callable[[str], str | None]
                              ) -> Callable[[str], str | None]:
    """mmengine's ``find_latest_checkpoint`` that never hands the Runner a broken file."""

    @functools.wraps(original)
    def find_latest_checkpoint(path: str) -> str | None:
        named = original(path)
        # Checkpoints on remote backends are mmengine's business.
        if named and ('://' in named or _is_complete(named)):
            return named
        found = newest_complete_checkpoint(path)
        if found is not None or named:
            from mmengine.logging import print_log

            problem = (f'names {named}, which is incomplete (cut short by a crash while it was '
                       f'written?)' if named else 'is missing or empty')
            action = (f'resuming from {found}, the newest complete checkpoint' if found
                      else 'no complete checkpoint is left, so training starts afresh')
            print_log(f'plugin: {Path(path) / "last_checkpoint"} {problem}; {action}',
                      logger='current', level=logging.WARNING)
        return found

    find_latest_checkpoint.plugin_complete_checkpoints = True
    return find_latest_checkpoint


def resume_complete_checkpoints() -> None:
    """Make the Runner's automatic resume (``--resume`` without a path) pick a whole file.

    mmengine writes ``iter_N.pth`` and then the ``last_checkpoint`` pointer, neither
    atomically. If the pointer names a complete checkpoint, that is the one; if it names a
    truncated one, is empty or is missing, the newest complete ``iter_N.pth`` /
    ``epoch_N.pth`` in the work dir is used instead, with a logged warning. Idempotent; a
    no-op when mmengine is not installed.
    """
    try:
        from mmengine.runner import runner
    except ImportError:
        return
    if not getattr(runner.find_latest_checkpoint, 'plugin_complete_checkpoints', False):
        # Runner.load_or_resume looks the function up in its module at call time.
        runner.find_latest_checkpoint = _find_complete_checkpoint(runner.find_latest_checkpoint)


# Seconds an ending process waits for its threads and exit handlers, in all.
EXIT_DEADLINE_S = 60.0


def exit_process(status: int, *, deadline_s: float | None = None) -> NoReturn:
    """End a tool's process with ``status``; in a multi-process run, without finalization.

    A process group's gloo worker thread can still be releasing the tensors of the run's
    last collective (the broadcast that ends an evaluation) when the process ends. Those
    tensors' Python objects need the GIL to go, and once Python's finalization has started
    it ends any thread that asks for the GIL, through a C++ destructor that may not unwind:
    "terminate called without an active exception", SIGABRT, after the run has saved
    everything, so torchrun reports it failed (docs/errors.md). Destroying the group does not
    help while the DDP wrapper holds it (its threads live on), and a closing barrier only
    narrows the window, so a multi-process run skips finalization: non-daemon threads are
    joined, exit handlers run (logging flushes its files), the standard streams are flushed,
    then ``os._exit``. Module globals are not torn down. Without a process group this is
    ``raise SystemExit(status)`` once the threads have ended.

    Waiting has a deadline: ``deadline_s`` seconds for the threads and the exit handlers
    together (default: ``PLUGIN_EXIT_DEADLINE_S`` from the environment, else
    ``EXIT_DEADLINE_S``). Past it, the process names on stderr the threads or the exit
    handler it was waiting for, and where each stood, then ends with ``status`` all the same.
    """
    if deadline_s is None:
        deadline_s = float(os.environ.get('PLUGIN_EXIT_DEADLINE_S', EXIT_DEADLINE_S))
    deadline = time.monotonic() + deadline_s
    stuck = _join_threads(deadline, deadline_s, status)
    if stuck:
        _report_expiry(deadline_s, status, [f'thread {t.name!r} at {_where(t.ident)}'
                                            for t in stuck])
        _end(status)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        # Finalization joins no thread now; its exit handlers run under the deadline's rest.
        atexit.register(_watch, deadline, deadline_s, status)  # registered last, runs first
        raise SystemExit(status)
    finished = _watch(deadline, deadline_s, status)
    atexit._run_exitfuncs()
    finished.set()
    _end(status)


def exit_after(main: Callable[[], int]) -> NoReturn:
    """``exit_process(main())``, whichever way ``main`` ends: an exception prints its
    traceback and ends with status 1, ``SystemExit`` ends with its code (a message printed,
    status 1), so a run that fails also ends within the deadline."""
    try:
        status = main()
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            status = err.code or 0
        else:
            print(err.code, file=sys.stderr)
            status = 1
    except Exception:  # noqa: BLE001 - reported as Python would, then a bounded exit
        traceback.print_exc()
        status = 1
    exit_process(status)


def _join_threads(deadline: float, deadline_s: float, status: int) -> list[threading.Thread]:
    """Join the non-daemon threads (what finalization would wait for) until ``deadline``;
    returns those still running then."""
    # First what finalization does first (threading._shutdown): the callbacks registered with
    # threading._register_atexit, e.g. concurrent.futures telling its idle pool workers to
    # end. Without them an idle ThreadPoolExecutor worker is never done. They join the pool's
    # workers themselves, without a deadline (a busy worker), hence the watchdog.
    finished = _watch(deadline, deadline_s, status)
    for callback in reversed(getattr(threading, '_threading_atexits', [])):
        callback()
    finished.set()
    while True:
        waiting = [t for t in threading.enumerate()
                   if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not waiting:
            return []
        for thread in waiting:
            thread.join(max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return [t for t in waiting if t.is_alive()]


def _watch(deadline: float, deadline_s: float, status: int) -> threading.Event:
    """Arm a watchdog over the main thread (running exit handlers): past ``deadline`` it
    names the handler it was in and ends the process with ``status``. Set the returned event
    to disarm it."""
    finished = threading.Event()
    main = threading.main_thread().ident

    def watchdog() -> None:
        if not finished.wait(max(0.0, deadline - time.monotonic())):
            _report_expiry(deadline_s, status, [f'an exit handler at {_where(main)}'])
            _end(status)

    threading.Thread(target=watchdog, name='plugin-exit-deadline', daemon=True).start()
    return finished


def _where(thread_id: int | None) -> str:
    """Where a thread stands: its innermost frames, innermost first."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return 'an unknown place'
    frames = traceback.extract_stack(frame)[::-1][:4]
    return ' <- '.join(f'{f.name} ({f.filename}:{f.lineno})' for f in frames)


def _report_expiry(deadline_s: float, status: int, waited_for: list[str]) -> None:
    print(f'plugin: exit deadline of {deadline_s:g} s passed; it was still waiting for '
          f"{'; '.join(waited_for)}. Ending the process with status {status}.",
          file=sys.stderr, flush=True)


def _end(status: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing to save
            stream.flush()
    os._exit(status)
