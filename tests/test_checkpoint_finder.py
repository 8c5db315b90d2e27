"""The checkpoint that ``--resume`` (without a path) picks, after
:func:`plugin.compat.resume_complete_checkpoints`: mmengine's ``find_latest_checkpoint`` as the
Runner looks it up, with each state of ``last_checkpoint`` a crash can leave. The whole
training runs for these cases are in test_resume.py (some with ``-m slow``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plugin.compat import resume_complete_checkpoints


@pytest.fixture
def find(monkeypatch):
    """The Runner's lookup, and the warnings it logged."""
    import mmengine.logging
    from mmengine.runner import runner
    resume_complete_checkpoints()
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda message, *args, **kwargs: logged.append(message))
    return lambda work_dir: runner.find_latest_checkpoint(str(work_dir)), logged


def _save(work_dir: Path, *steps: int) -> None:
    for step in steps:
        torch.save({'step': step}, work_dir / f'iter_{step}.pth')


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize('pointer', ['missing', 'empty'])
def test_without_a_pointer_the_newest_complete_checkpoint_is_resumed(find, tmp_path, pointer):
    lookup, logged = find
    _save(tmp_path, 2, 4, 6)
    _truncate(tmp_path / 'iter_6.pth')  # the crash came while it was written
    if pointer == 'empty':  # killed while the pointer was rewritten ('w' truncates first)
        (tmp_path / 'last_checkpoint').write_text('')
    assert lookup(tmp_path) == str(tmp_path / 'iter_4.pth')
    assert any('is missing or empty' in m and 'resuming from' in m and 'iter_4.pth' in m
               for m in logged), logged


@pytest.mark.parametrize('pointer', ['missing', 'empty'])
def test_without_a_pointer_or_checkpoint_training_starts_afresh(find, tmp_path, pointer):
    lookup, _ = find
    if pointer == 'empty':
        (tmp_path / 'last_checkpoint').write_text('')
    (tmp_path / 'iter_2.pth').write_bytes(b'')  # killed right after open()
    assert lookup(tmp_path) is None  # the Runner then trains from the start


def test_a_pointer_to_the_only_checkpoint_cut_short_starts_afresh(find, tmp_path):
    lookup, logged = find
    _save(tmp_path, 2)
    _truncate(tmp_path / 'iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert lookup(tmp_path) is None
    assert any('which is incomplete' in m and 'training starts afresh' in m for m in logged), \
        logged


def test_a_pointer_to_a_complete_checkpoint_is_followed(find, tmp_path):
    lookup, logged = find
    _save(tmp_path, 2, 4)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert lookup(tmp_path) == str(tmp_path / 'iter_2.pth')  # the pointer, not the newest
    assert not logged
