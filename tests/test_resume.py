"""Crash and resume: a quick-start training with EFL is SIGKILLed partway, then
``tools/train.py --resume`` continues from the newest complete checkpoint, and what follows
is what an uninterrupted run with the same seed does: the same losses, and at the end the
same iteration, weights, optimizer, scheduler and EFL statistics.

The files a crash while saving leaves are made by hand from the killed run's: mmengine writes
``iter_N.pth`` first and ``last_checkpoint`` after, neither atomically.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from train_runs import EFL_CONFIG, check, generate_data, logged_steps, short_run_options, train

from plugin.compat import allow_mmengine_checkpoints

MAX_ITERS = 6
KILLED_AFTER = 5
# Checkpoints after steps 2, 4 and 6: the kill comes between iter_4.pth and iter_6.pth.
INTERVAL = 2


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Data, the configs, an uninterrupted run and a run killed after step KILLED_AFTER."""
    tmp = tmp_path_factory.mktemp('resume')
    data = generate_data(tmp / 'data')
    (tmp / 'efl.py').write_text(EFL_CONFIG)
    (tmp / 'crash.py').write_text(
        "_base_ = './efl.py'\n"
        "custom_imports = dict(imports=['plugin', 'train_runs'], allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='SigkillAfterIter', iteration={KILLED_AFTER})]\n")
    options = short_run_options(data, MAX_ITERS, checkpoint_interval=INTERVAL)
    check(train([str(tmp / 'efl.py'), '--work-dir', str(tmp / 'whole'), *options]))
    killed = train([str(tmp / 'crash.py'), '--work-dir', str(tmp / 'killed'), *options])
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-3000:]
    assert sorted(p.name for p in (tmp / 'killed').glob('*.pth')) == ['iter_2.pth',
                                                                        'iter_4.pth']
    return dict(tmp=tmp, options=options)


def _resume(runs, name: str, damage) -> tuple[Path, str]:
    """Copy the killed run's work dir, damage it as a crash would, resume with the
    uninterrupted run's config; returns the work dir and the log."""
    work = runs['tmp'] / name
    shutil.copytree(runs['tmp'] / 'killed', work)
    pointer = work / 'last_checkpoint'  # it holds an absolute path: to the copy
    pointer.write_text(pointer.read_text().replace(str(runs['tmp'] / 'killed'), str(work)))
    damage(work)
    log = check(train([str(runs['tmp'] / 'efl.py'), '--work-dir', str(work), '--resume',
                       *runs['options']]))
    return work, log


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _load(path: Path) -> dict:
    allow_mmengine_checkpoints()
    return torch.load(path, map_location='cpu')


def _assert_same_state(resumed: Path, whole: Path) -> None:
    """The final checkpoints of the resumed and the uninterrupted run hold the same state."""
    mine, ref = _load(resumed / f'iter_{MAX_ITERS}.pth'), _load(whole / f'iter_{MAX_ITERS}.pth')
    assert mine['meta']['iter'] == ref['meta']['iter'] == MAX_ITERS
    assert mine['param_schedulers'] == ref['param_schedulers']
    torch.testing.assert_close(mine['state_dict'], ref['state_dict'], rtol=1e-4, atol=1e-6)
    efl = 'bbox_head.loss_cls.pos_grad'
    assert ref['state_dict'][efl].gt(0).any()  # the statistics are really being kept
    assert mine['optimizer']['param_groups'] == ref['optimizer']['param_groups']
    torch.testing.assert_close(mine['optimizer']['state'], ref['optimizer']['state'],
                               rtol=1e-4, atol=1e-6)


def _assert_follows_whole_run(runs, work: Path, resumed_from: int, log: str) -> None:
    assert f'iter: {resumed_from}' in log  # mmengine: "resumed epoch: 0, iter: N"
    whole = logged_steps(runs['tmp'] / 'whole')
    steps = logged_steps(work)
    assert sorted(steps) == list(range(1, MAX_ITERS + 1))
    for step in range(resumed_from + 1, MAX_ITERS + 1):
        for key in ('loss', 'loss_cls', 'loss_bbox', 'lr'):
            assert steps[step][key] == pytest.approx(whole[step][key], rel=1e-5), (step, key)
    _assert_same_state(work, runs['tmp'] / 'whole')


def test_resume_after_sigkill_continues_like_an_uninterrupted_run(runs):
    # Until the kill, the two runs are two processes with one seed: the same steps.
    killed, whole = logged_steps(runs['tmp'] / 'killed'), logged_steps(runs['tmp'] / 'whole')
    assert [killed[step]['loss'] for step in range(1, KILLED_AFTER + 1)] == \
        [whole[step]['loss'] for step in range(1, KILLED_AFTER + 1)]
    work, log = _resume(runs, 'resumed', lambda work: None)
    _assert_follows_whole_run(runs, work, resumed_from=4, log=log)


def test_killed_while_pointer_named_a_cut_short_checkpoint(runs):
    # iter_4.pth cut short, though last_checkpoint already names it (a power loss can leave
    # the pointer on disk and not the data): the plugin resumes from iter_2.pth instead.
    def damage(work: Path) -> None:
        _truncate(work / 'iter_4.pth')

    work, log = _resume(runs, 'truncated', damage)
    assert 'iter_4.pth, which is incomplete' in log and 'resuming from' in log
    _assert_follows_whole_run(runs, work, resumed_from=2, log=log)


@pytest.mark.slow
def test_killed_while_writing_the_checkpoint(runs):
    # Killed inside the write of iter_4.pth: the file is cut short and the pointer still
    # names iter_2.pth (mmengine updates it after the file); mmengine's own choice is right.
    def damage(work: Path) -> None:
        _truncate(work / 'iter_4.pth')
        (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))

    work, log = _resume(runs, 'mid_write', damage)
    _assert_follows_whole_run(runs, work, resumed_from=2, log=log)


@pytest.mark.slow
def test_killed_while_writing_the_pointer(runs):
    # Killed while last_checkpoint was rewritten ('w' truncates it first): an empty pointer,
    # which mmengine would hand to the Runner as the path ''.
    def damage(work: Path) -> None:
        (work / 'last_checkpoint').write_text('')

    work, log = _resume(runs, 'empty_pointer', damage)
    assert 'is missing or empty' in log
    _assert_follows_whole_run(runs, work, resumed_from=4, log=log)


def test_newest_complete_checkpoint_orders_by_number_and_skips_broken_files(tmp_path):
    from plugin.compat import newest_complete_checkpoint

    for step in (2, 9, 10, 11):
        torch.save({'step': step}, tmp_path / f'iter_{step}.pth')
    torch.save({'step': 99}, tmp_path / 'best_coco_bbox_mAP_iter_99.pth')  # not numbered
    _truncate(tmp_path / 'iter_11.pth')
    (tmp_path / 'iter_12.pth').write_bytes(b'')  # killed right after open()
    assert newest_complete_checkpoint(tmp_path) == str(tmp_path / 'iter_10.pth')
    for step in (2, 9, 10, 11):
        (tmp_path / f'iter_{step}.pth').unlink()
    assert newest_complete_checkpoint(tmp_path) is None
