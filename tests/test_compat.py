"""plugin.compat: mmengine checkpoints load under torch's weights-only unpickler, nothing else.

A tiny RetinaNet (8-16 channels, two 64x64 images) is trained for one iteration by
``tools/train.py`` in a fresh interpreter; the checkpoint it writes is then loaded in every
way a user loads one: ``--resume``, ``tools/test.py CONFIG CKPT``, and ``load_from`` in
MMDetection's own tools/train.py with ``custom_imports=['plugin']`` (what ``mim train``
runs). The command lines run in subprocesses, as users run them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from plugin.compat import allow_mmengine_checkpoints

pytestmark = pytest.mark.skipif(
    torch.__version__ < (2, 6), reason='torch < 2.6 does not load weights-only by default')

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
default_scope = 'mmdet'
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=2, strides=(1, 2),
                  dilations=(1, 1), out_indices=(1, ), norm_cfg=dict(type='BN')),
    neck=dict(type='FPN', in_channels=[16], out_channels=8, num_outs=2,
              add_extra_convs='on_output'),
    bbox_head=dict(
        type='RetinaHead', num_classes=2, in_channels=8, stacked_convs=1, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0], strides=[8, 16]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True), loss_bbox=dict(type='L1Loss')),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1),
    test_cfg=dict(nms_pre=100, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=10))
data = dict(type='CocoDataset', data_root={root!r}, ann_file='ann.json',
            data_prefix=dict(img='img/'), metainfo=dict(classes=('a', 'b')),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='Resize', scale=(64, 64), keep_ratio=True),
                      dict(type='PackDetInputs')])
train_dataloader = dict(batch_size=2, sampler=dict(type='InfiniteSampler', shuffle=False),
                        dataset=data)
test_dataloader = dict(batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(data, test_mode=True))
test_evaluator = dict(type='CocoMetric', ann_file={ann!r})
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[1])]
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1))
custom_hooks = [dict(type='EMAHook')]
log_processor = dict(by_epoch=False)
log_level = 'WARNING'
"""


def _write_dataset(root: Path) -> None:
    """Two 64x64 noise images with one box each, as a COCO json."""
    import cv2

    (root / 'img').mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(2):
        cv2.imwrite(str(root / 'img' / f'{i}.png'), rng.integers(0, 255, (64, 64, 3), np.uint8))
        images.append({'id': i, 'file_name': f'{i}.png', 'width': 64, 'height': 64})
        annotations.append({'id': i, 'image_id': i, 'category_id': 1, 'bbox': [8, 8, 24, 24],
                            'area': 576, 'iscrowd': 0})
    categories = [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]
    (root / 'ann.json').write_text(json.dumps(
        {'images': images, 'annotations': annotations, 'categories': categories}))


def _env() -> dict[str, str]:
    # The checkout first on the path, so the plugin under test is the one imported; one
    # thread per run, since the runs below share the (possibly two) cores.
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS='1')


def _start(log: Path, *args: str | Path) -> tuple[subprocess.Popen, Path]:
    """Start ``python ARGS`` from the repository root in a fresh interpreter, output to log."""
    with log.open('w') as out:
        proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _finish(started: tuple[subprocess.Popen, Path]) -> str:
    """Wait for a run; it must succeed. Returns its output."""
    proc, log = started
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == 0, f'{proc.args[1:]} failed:\n{output[-4000:]}'
    return output


@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Config, work dir and the checkpoint of one iteration trained by tools/train.py."""
    tmp = tmp_path_factory.mktemp('compat')
    _write_dataset(tmp / 'data')
    config = tmp / 'retinanet_tiny.py'
    config.write_text(CONFIG.format(root=f'{tmp / "data"}/', ann=str(tmp / 'data' / 'ann.json')))
    _finish(_start(tmp / 'train.log', 'tools/train.py', config, '--work-dir', tmp / 'work'))
    checkpoint = tmp / 'work' / 'iter_1.pth'
    assert checkpoint.is_file()
    return {'tmp': tmp, 'config': config, 'checkpoint': checkpoint}


@pytest.fixture(scope='module')
def loaded(trained: dict[str, Path]) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    """The three ways of loading the checkpoint from a command line, started together
    (each spends most of its time importing and building, one core apiece)."""
    import mmdet

    tmp, config, checkpoint = trained['tmp'], trained['config'], trained['checkpoint']
    # `mim train mmdet CONFIG` runs MMDetection's own tools/train.py; the plugin comes in
    # only through custom_imports, which Config.fromfile imports before any checkpoint.
    mmdet_train = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    mim_config = tmp / 'retinanet_tiny_mim.py'
    mim_config.write_text(f"_base_ = ['{config.name}']\n"
                          "custom_imports = dict(imports=['plugin'], allow_failed_imports=False)\n")
    runs = {
        'resume': _start(tmp / 'resume.log', 'tools/train.py', config, '--work-dir',
                         tmp / 'resumed', '--resume', checkpoint,
                         '--cfg-options', 'train_cfg.max_iters=2'),
        'test': _start(tmp / 'test.log', 'tools/test.py', config, checkpoint, '--work-dir',
                       tmp / 'tested', '--out', tmp / 'predictions.pkl',
                       '--cfg-options', 'log_level=INFO'),
        # Missing where mmdet is installed from source; mim cannot run it there either.
        'mim': _start(tmp / 'mim.log', mmdet_train, mim_config, '--work-dir', tmp / 'mim',
                      '--cfg-options', f'load_from={checkpoint}', 'log_level=INFO')
        if mmdet_train.is_file() else None,
    }
    yield runs
    for proc, _ in filter(None, runs.values()):  # runs whose test was deselected or failed
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def clean_allowlist() -> Iterator[None]:
    """Start from torch's own allowlist only (``import plugin`` may have extended it) and
    put back whatever was there afterwards."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def test_mmengine_checkpoint_needs_the_fix(trained: dict[str, Path], clean_allowlist: None) -> None:
    # This is the bug: without the allowlist, torch refuses mmengine's own checkpoint.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer|numpy|getattr'):
        torch.load(trained['checkpoint'], weights_only=True)


def test_fix_loads_checkpoint_weights_only(trained: dict[str, Path],
                                           clean_allowlist: None) -> None:
    from mmengine.runner.checkpoint import _load_checkpoint

    allow_mmengine_checkpoints()
    checkpoint = torch.load(trained['checkpoint'], weights_only=True)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(checkpoint)
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert np.isfinite(loss.mean())  # a working HistoryBuffer, arrays and all
    # mmengine's own loader, with torch's default weights_only, as the Runner calls it.
    assert _load_checkpoint(str(trained['checkpoint']))['meta']['iter'] == 1


def test_fix_is_idempotent(clean_allowlist: None) -> None:
    allow_mmengine_checkpoints()
    first = set(torch.serialization.get_safe_globals())
    allow_mmengine_checkpoints()
    assert set(torch.serialization.get_safe_globals()) == first


def test_noop_without_add_safe_globals(monkeypatch: pytest.MonkeyPatch,
                                       clean_allowlist: None) -> None:
    before = set(torch.serialization.get_safe_globals())
    monkeypatch.delattr(torch.serialization, 'add_safe_globals')
    allow_mmengine_checkpoints()
    monkeypatch.undo()
    monkeypatch.setattr(torch, '__version__', torch.torch_version.TorchVersion('2.5.1'))
    allow_mmengine_checkpoints()
    assert set(torch.serialization.get_safe_globals()) == before


def test_numpy1_spelling_loads(clean_allowlist: None) -> None:
    # Checkpoints written under numpy 1.x name numpy.core.multiarray, not numpy._core.
    from mmengine.logging import HistoryBuffer

    buffer = HistoryBuffer()
    buffer.update(2.0)
    stream = io.BytesIO()
    torch.save({'buffer': buffer, 'eta': np.float64(3.0)}, stream,
               _use_new_zipfile_serialization=False)  # one plain pickle, easy to respell
    numpy1 = stream.getvalue().replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert b'numpy.core.multiarray' in numpy1
    allow_mmengine_checkpoints()
    loaded = torch.load(io.BytesIO(numpy1), weights_only=True)
    assert loaded['eta'] == 3.0
    assert loaded['buffer'].current() == 2.0


def test_resume_with_tools_train(trained: dict[str, Path], loaded: dict,
                                 clean_allowlist: None) -> None:
    _finish(loaded['resume'])
    work = trained['tmp'] / 'resumed'
    # Resumed, not restarted: iteration 2 was the only one run here, and the logs of
    # iteration 1 came back from the checkpoint's message hub.
    assert not (work / 'iter_1.pth').exists()
    allow_mmengine_checkpoints()
    checkpoint = torch.load(work / 'iter_2.pth', weights_only=True)
    assert checkpoint['meta']['iter'] == 2
    assert len(checkpoint['message_hub']['log_scalars']['train/loss'].data[0]) == 2


def test_test_route_with_tools_test(trained: dict[str, Path], loaded: dict) -> None:
    output = _finish(loaded['test'])
    assert f'Load checkpoint from {trained["checkpoint"]}' in output
    assert (trained['tmp'] / 'predictions.pkl').is_file()


def test_mim_route_custom_imports_load_from(trained: dict[str, Path], loaded: dict) -> None:
    # Needs `import plugin` itself to call allow_mmengine_checkpoints().
    if loaded['mim'] is None:
        pytest.skip("mmdet has no .mim/tools/train.py (installed from source?)")
    output = _finish(loaded['mim'])
    assert f'Load checkpoint from {trained["checkpoint"]}' in output
    assert (trained['tmp'] / 'mim' / 'iter_1.pth').is_file()


@pytest.mark.slow
def test_mim_train_resume(trained: dict[str, Path], loaded: dict) -> None:
    # The real `mim train` (about 20 s more): it finds mmdet's script and runs it.
    mim = Path(sys.executable).with_name('mim')
    if not mim.is_file():
        pytest.skip('openmim is not installed')
    if loaded['mim'] is None:
        pytest.skip("mmdet has no .mim/tools/train.py (installed from source?)")
    _finish(loaded['mim'])  # wrote retinanet_tiny_mim.py; also spares the cores
    work = trained['tmp'] / 'mim_resumed'
    output = _finish(_start(trained['tmp'] / 'mim_train.log', mim, 'train', 'mmdet',
                            trained['tmp'] / 'retinanet_tiny_mim.py', '--work-dir', work,
                            '--resume', trained['checkpoint'],
                            '--cfg-options', 'train_cfg.max_iters=2', 'log_level=INFO'))
    assert 'resumed epoch: 0, iter: 1' in output
    assert (work / 'iter_2.pth').is_file()


def _record(marker: str) -> str:
    """What a malicious checkpoint would run: here, only leave a file behind."""
    Path(marker).write_text('ran')
    return marker


class _RunsCode:
    """Unpickles by calling _record: a module-level function nobody allowlisted."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return _record, (self.marker,)


class _RunsCodeViaGetattr:
    """Unpickles by calling ``np.ndarray.tofile``, which pickle spells as
    ``builtins.getattr(numpy.ndarray, 'tofile')``: an allowlisted class, so only the
    restricted getattr stands in the way."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return np.ndarray.tofile, (np.arange(3.0), self.marker)


@pytest.mark.parametrize(('payload', 'refused_at'),
                         [(_RunsCode, '_record'), (_RunsCodeViaGetattr, 'getattr')])
def test_malicious_checkpoint_still_refused(trained: dict[str, Path], tmp_path: Path,
                                            payload: type, refused_at: str,
                                            clean_allowlist: None) -> None:
    from mmengine.runner.checkpoint import _load_checkpoint

    allow_mmengine_checkpoints()
    marker = tmp_path / 'side_effect'
    # A real mmengine checkpoint with one extra entry hidden in its meta.
    checkpoint = torch.load(trained['checkpoint'], weights_only=True)
    checkpoint['meta']['note'] = payload(marker)
    evil = tmp_path / 'evil.pth'
    torch.save(checkpoint, evil)

    with pytest.raises(pickle.UnpicklingError, match=refused_at):
        _load_checkpoint(str(evil))
    with pytest.raises(pickle.UnpicklingError, match=refused_at):
        torch.load(evil, weights_only=True)
    assert not marker.exists()
    # The payload is live: trusting the file (weights_only=False) does run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_restricted_getattr_refuses_other_attributes() -> None:
    from mmengine.logging import HistoryBuffer

    from plugin.compat import _history_buffer_getattr

    assert _history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in [(HistoryBuffer, '_statistics_methods'), (HistoryBuffer, '__init__'),
                      (np.ndarray, 'tofile'), (os, 'system')]:
        with pytest.raises(pickle.UnpicklingError, match='not allowed'):
            _history_buffer_getattr(obj, name)


@pytest.mark.parametrize(('command', 'argv', 'message'), [
    ('run_train', ['MISSING'], "config file 'MISSING' does not exist"),
    ('run_train', ['HERE', '--resume', 'MISSING'],
     "checkpoint to resume from 'MISSING' does not exist"),
    ('run_test', ['MISSING', 'HERE'], "config file 'MISSING' does not exist"),
    ('run_test', ['HERE', 'MISSING'], "checkpoint 'MISSING' does not exist"),
    ('run_test', ['HERE', 'HERE', '--out', 'x.json'], '--out must name a .pkl'),
])
def test_command_line_mistakes_are_clean_errors(command: str, argv: list[str], message: str,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from plugin import mmdet_tools

    names = {'MISSING': str(tmp_path / 'nope.py'), 'HERE': __file__}
    with pytest.raises(SystemExit) as exit_info:
        getattr(mmdet_tools, command)([names.get(arg, arg) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message.replace('MISSING', names['MISSING']) in err
    assert 'Traceback' not in err
