"""Multi-process training: ``torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher
pytorch`` trains the quick-start model without the user naming a backend: gloo where there
is no CUDA device (mmengine 0.10.7 alone fails there, see plugin.compat.allow_cpu_launch),
nccl on GPUs.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from train_runs import (EFL_CONFIG, MINING_OPTIONS, QUICKSTART, ROOT, check, generate_data,
                        logged_steps, short_run_options, train)

from plugin.compat import allow_mmengine_checkpoints

MAX_ITERS = 3

OHEM_OPTIONS = [*MINING_OPTIONS, 'model.train_cfg.sampler.mode=ohem',
                'model.train_cfg.sampler.batch_size=64']


@pytest.mark.parametrize(('efl', 'extra'), [
    pytest.param(False, [], id='focal', marks=pytest.mark.slow),
    pytest.param(True, MINING_OPTIONS, id='efl_hard_negative'),
    pytest.param(False, OHEM_OPTIONS, id='ohem', marks=pytest.mark.slow),
])
def test_two_processes_train_the_quickstart_model(tmp_path, efl, extra):
    config = QUICKSTART
    if efl:
        config = tmp_path / 'efl.py'
        config.write_text(EFL_CONFIG)
    data = generate_data(tmp_path / 'data')
    work = tmp_path / 'work'
    options = short_run_options(data, MAX_ITERS)
    log = check(train([str(config), '--work-dir', str(work), *options, *extra], processes=2))

    assert 'Distributed training: True' in log
    if not torch.cuda.is_available():
        assert 'uses the gloo backend' in log
    steps = logged_steps(work)
    assert sorted(steps) == list(range(1, MAX_ITERS + 1))
    assert all(math.isfinite(step['loss']) for step in steps.values())
    allow_mmengine_checkpoints()
    state = torch.load(work / f'iter_{MAX_ITERS}.pth', map_location='cpu')['state_dict']
    assert all(torch.isfinite(value).all() for value in state.values())
    if efl:  # the statistics, summed over both processes, were kept
        assert state['bbox_head.loss_cls.neg_grad'].gt(0).all()


# ------------------------------------------------- the launcher fix alone, in this process
@pytest.fixture
def launcher(monkeypatch):
    """mmengine's _init_dist_pytorch under allow_cpu_launch, with the original, torch's
    init_process_group and torch.cuda.set_device recorded instead of run."""
    from mmengine.dist import utils as dist_utils
    from mmengine.model import MMDistributedDataParallel

    from plugin.compat import allow_cpu_launch

    # allow_cpu_launch also wraps the DDP wrapper: undone after the test.
    monkeypatch.setattr(MMDistributedDataParallel, '__init__', MMDistributedDataParallel.__init__)
    calls = []
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch',
                        lambda backend, init_backend='torch', **kw: calls.append(
                            ('mmengine', backend, kw)))
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda backend, **kw: calls.append(('torch', backend, kw)))
    allow_cpu_launch()
    allow_cpu_launch()  # idempotent: wrapped once
    return dist_utils._init_dist_pytorch, calls


@pytest.mark.parametrize('device,asked,expected', [
    ('cpu', 'nccl', ('torch', 'gloo')),  # mmengine's default, impossible without CUDA
    ('cpu', 'gloo', ('torch', 'gloo')),
    ('cpu', 'mpi', ('torch', 'mpi')),  # what the config names otherwise stays
    ('cuda', 'nccl', ('mmengine', 'nccl')),  # GPUs: mmengine's own code, untouched
    ('npu', 'hccl', ('mmengine', 'hccl')),
])
def test_process_group_backend_by_device(launcher, monkeypatch, device, asked, expected):
    import mmengine.device

    init_dist_pytorch, calls = launcher
    monkeypatch.setattr(mmengine.device, 'get_device', lambda: device)
    init_dist_pytorch(asked, timeout=5)
    assert calls == [(*expected, {'timeout': 5})]


def test_ddp_of_a_cpu_model_gets_no_device_index(monkeypatch):
    from mmengine.model import MMDistributedDataParallel

    from plugin.compat import allow_cpu_launch

    seen = []
    monkeypatch.setattr(MMDistributedDataParallel, '__init__',
                        lambda self, module, **kw: seen.append(kw['device_ids']))
    allow_cpu_launch()
    MMDistributedDataParallel.__new__(MMDistributedDataParallel).__init__(
        torch.nn.Linear(2, 2), device_ids=[1], broadcast_buffers=False)
    assert seen == [None]



# ------------------------------------------ a finished run exits without aborting (exit_process)
# compat.py is loaded by path so that each process imports torch only, not mmdet.
LOAD_COMPAT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location('compat', {str(ROOT / 'plugin' / 'compat.py')!r})
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
"""

# Processes that broadcast one object and end: the way an evaluation ends a run. Ended by
# Python's own exit, 10 of 20 such 4-process runs aborted here (SIGABRT) and 3 of 20 with 2.
BROADCAST_AND_END = LOAD_COMPAT + """
import torch.distributed as dist
dist.init_process_group('gloo')
dist.broadcast_object_list([{'bbox_mAP': 0.5}] if dist.get_rank() == 0 else [None], src=0)
compat.exit_process(0)
"""


def test_processes_that_end_after_a_broadcast_never_abort(tmp_path):
    script = tmp_path / 'broadcast_and_end.py'
    script.write_text(BROADCAST_AND_END)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    failed = []
    for attempt in range(10):
        run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                              '--nproc_per_node=4', str(script)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            failed.append((attempt, run.stderr[-2000:]))
    assert not failed, f'{len(failed)} of 10 runs failed; the first: {failed[0]}'


# One process in a group of one: what exit_process keeps of an orderly exit (threads joined,
# exit handlers, buffered output, the status) and what it skips (tearing down the globals).
GROUP_OF_ONE = LOAD_COMPAT + """
import atexit, sys, threading, time
import torch.distributed as dist

class Global:
    def __del__(self):
        print('torn down', flush=True)

kept = Global()
atexit.register(lambda: print('exit handler ran'))
threading.Thread(target=lambda: (time.sleep(0.5), print('thread finished'))).start()
dist.init_process_group('gloo', init_method=sys.argv[1], rank=0, world_size=1)
print('buffered', end='')  # stdout is a pipe here: block-buffered
compat.exit_process(3)
"""


def test_exit_process_of_a_group_member_keeps_an_orderly_exit(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != 'PYTHONUNBUFFERED'}
    run = subprocess.run([sys.executable, '-c', GROUP_OF_ONE, f'file://{tmp_path}/store'],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr[-3000:]
    assert 'buffered' in run.stdout and 'exit handler ran' in run.stdout
    assert 'thread finished' in run.stdout
    assert 'torn down' not in run.stdout  # finalization, where the abort happened, skipped


def test_exit_process_without_a_process_group_is_a_plain_exit(monkeypatch):
    import atexit

    from plugin.compat import exit_process

    monkeypatch.setattr(atexit, 'register', lambda *args: None)  # the deadline of this process
    monkeypatch.setattr(threading, '_threading_atexits', [])  # its thread pools' shutdown
    with pytest.raises(SystemExit) as exit_:
        exit_process(2)
    assert exit_.value.code == 2


# ------------------------------------------------ every exit has a deadline (exit_process)
DEADLINE_S = 3

# A non-daemon thread that never ends (a stuck writer thread, say) after the run's last
# broadcast: Python's own exit, or a join without a deadline, would wait for it forever.
STUCK_THREAD_AND_END = LOAD_COMPAT + """
import threading
import torch.distributed as dist
dist.init_process_group('gloo')
threading.Thread(target=threading.Event().wait, name='stuck-writer').start()
dist.broadcast_object_list([{'bbox_mAP': 0.5}] if dist.get_rank() == 0 else [None], src=0)
compat.exit_process(0)
"""


def test_a_stuck_thread_lets_a_two_process_run_end_at_the_deadline(tmp_path):
    script = tmp_path / 'stuck_thread_and_end.py'
    script.write_text(STUCK_THREAD_AND_END)
    env = dict(os.environ, OMP_NUM_THREADS='1', PLUGIN_EXIT_DEADLINE_S=str(DEADLINE_S))
    start = time.monotonic()
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                          '--nproc_per_node=2', str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    # each process named what it waited for, and where that thread stood
    assert run.stderr.count(f'exit deadline of {DEADLINE_S} s passed') == 2, run.stderr[-3000:]
    assert run.stderr.count("thread 'stuck-writer' at wait") == 2
    assert time.monotonic() - start < 120  # torchrun's start and the deadline, no more


# Without a process group, a stuck thread ends the process at the deadline too; with one, a
# stuck exit handler does. Either way the process ends with the run's status.
STUCK_THREAD = """
import sys, threading
from plugin.compat import exit_process
threading.Thread(target=threading.Event().wait, name='stuck-writer').start()
exit_process(4, deadline_s=float(sys.argv[1]))
"""

# A pool worker busy for good: the pools' shutdown callback joins it without a deadline.
BUSY_POOL = """
import sys, threading
from concurrent.futures import ThreadPoolExecutor
from plugin.compat import exit_process
ThreadPoolExecutor(1).submit(threading.Event().wait)
exit_process(5, deadline_s=float(sys.argv[1]))
"""

STUCK_EXIT_HANDLER = LOAD_COMPAT + """
import atexit, sys, threading
import torch.distributed as dist

def stuck_handler():
    threading.Event().wait()

atexit.register(stuck_handler)
dist.init_process_group('gloo', init_method=sys.argv[2], rank=0, world_size=1)
compat.exit_process(3, deadline_s=float(sys.argv[1]))
"""


@pytest.mark.parametrize(('script', 'status', 'waited_for'), [
    (STUCK_THREAD, 4, "thread 'stuck-writer' at wait"),
    (STUCK_EXIT_HANDLER, 3, 'an exit handler at wait'),
    (BUSY_POOL, 5, 'an exit handler at '),
], ids=['thread', 'exit_handler', 'busy_pool'])
def test_a_stuck_thread_or_exit_handler_ends_at_the_deadline(tmp_path, script, status,
                                                             waited_for):
    run = subprocess.run([sys.executable, '-c', script, str(DEADLINE_S),
                          f'file://{tmp_path}/store'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == status, run.stderr[-3000:]
    assert f'exit deadline of {DEADLINE_S} s passed' in run.stderr
    assert waited_for in run.stderr, run.stderr[-3000:]
    if script is STUCK_EXIT_HANDLER:
        assert 'stuck_handler' in run.stderr  # the handler, named by its frames
    if script is BUSY_POOL:
        assert '_python_exit' in run.stderr  # concurrent.futures' shutdown, joining its worker


def _fail(exception: BaseException):
    def main() -> int:
        raise exception
    return main


@pytest.mark.parametrize(('main', 'status', 'printed'), [
    (lambda: 3, 3, ''),
    (_fail(SystemExit(2)), 2, ''),
    (_fail(SystemExit('error: one line')), 1, 'error: one line'),
    (_fail(ZeroDivisionError('division by zero')), 1, 'ZeroDivisionError: division by zero'),
], ids=['status', 'exit_code', 'exit_message', 'exception'])
def test_exit_after_ends_every_way_out_through_exit_process(monkeypatch, capsys, main, status,
                                                            printed):
    from plugin import compat

    ended = []
    monkeypatch.setattr(compat, 'exit_process', ended.append)
    compat.exit_after(main)
    assert ended == [status]
    assert printed in capsys.readouterr().err
