"""The main job end to end: `mim train mmdet <quick-start config>` on generated data (then
mmdet's `analyze_logs plot_curve` on its log), and the same model on real images (coco128),
each for a few iterations ending in COCO evaluation."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = 'configs/quickstart/retinanet_r18_quickstart.py'
COCO128 = ROOT.parent / 'shared' / 'data' / 'coco128'
COCO_METRIC = re.compile(r'coco/bbox_mAP: \d\.\d+.*coco/bbox_mAP_50: \d\.\d+')


def _run(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    return log


def _short_run(data_root: str, extra: list[str]) -> list[str]:
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    return ['--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
            'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            # after 4 steps every score sits near the prior: keep them, so COCO has results
            'model.test_cfg.score_thr=0.0',
            *[f'{loader}.dataset.data_root={data_root}' for loader in loaders], *extra]


def test_mim_train_quickstart_ends_in_coco_evaluation(tmp_path):
    data = tmp_path / 'data'
    _run([sys.executable, 'tools/generate_data.py', '--out', str(data), '--num-train', '16',
          '--num-val', '8'], ROOT)
    mim = shutil.which('mim', path=str(Path(sys.executable).parent))
    assert mim, 'openmim is part of the setup'
    log = _run([mim, 'train', 'mmdet', QUICKSTART, '--work-dir', str(tmp_path / 'work'),
                *_short_run(f'{data}/', [
                    f'val_evaluator.ann_file={data}/annotations/instances_val.json',
                    f'test_evaluator.ann_file={data}/annotations/instances_val.json'])], ROOT)
    assert 'Iter(train) [4/4]' in log and 'eta:' in log
    assert COCO_METRIC.search(log), log[-3000:]
    # mmdet's own log analysis on that run (it needs seaborn, which the setup installs).
    scalars = next((tmp_path / 'work').glob('*/vis_data/scalars.json'))
    curve = tmp_path / 'loss_cls.png'
    _run([mim, 'run', 'mmdet', 'analyze_logs', 'plot_curve', str(scalars), '--keys',
          'loss_cls', '--out', str(curve)], ROOT)
    assert curve.stat().st_size > 0


@pytest.mark.skipif(not COCO128.is_dir(), reason=f'{COCO128} is absent (shared test data)')
def test_quickstart_model_trains_and_evaluates_on_coco128(tmp_path):
    ann = 'annotations/instances_train2017.json'
    overrides = [f'{loader}.dataset.{key}'
                 for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                 for key in (f'ann_file={ann}', 'data_prefix.img=train2017/', 'metainfo=None')]
    log = _run([sys.executable, 'tools/train.py', QUICKSTART, '--work-dir',
                str(tmp_path / 'work'), *_short_run(f'{COCO128}/', [
                    *overrides, 'model.bbox_head.num_classes=80',
                    f'val_evaluator.ann_file={COCO128}/{ann}',
                    f'test_evaluator.ann_file={COCO128}/{ann}'])], ROOT)
    assert 'Iter(train) [4/4]' in log
    assert COCO_METRIC.search(log), log[-3000:]


def test_missing_data_root_is_one_clear_message(tmp_path):
    missing = tmp_path / 'nowhere'
    out = subprocess.run([sys.executable, 'tools/train.py', QUICKSTART, '--work-dir',
                          str(tmp_path / 'work'), '--cfg-options',
                          f'train_dataloader.dataset.data_root={missing}/'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data_root '{missing}/' does not exist")
    assert 'tools/generate_data.py' in last and 'Traceback' not in out.stderr
