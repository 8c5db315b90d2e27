"""The COCO scale on real images (issue 18): every COCO config trains and evaluates on coco128,
``tools/reproduce.py --scale coco`` runs end to end (one process and two over gloo), and two
processes with batch 1 train as one with batch 2 at a RetinaNet R50-FPN COCO config.

No ImageNet weights exist on this machine (no network, no torchvision): every run here builds
its model with ``init_cfg=None`` (``--no-pretrained``: a random backbone). The runs say
nothing about AP; they prove the path a GPU node takes, up to the first real number.

The smoke table of docs/coco_smoke.md comes from running this file as a script:
``OMP_NUM_THREADS=1 .venv/bin/python tests/test_coco_scale.py --table``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COCO128 = ROOT.parent / 'shared' / 'data' / 'coco128'
CONFIG_FAMILIES = ('retinanet', 'ablations', 'ssd', 'negatives')
SMOKE_STEPS = 2
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(),
                                   reason=f'{COCO128} is absent (shared test data)')


def coco_configs() -> list[Path]:
    """The COCO-scale configs: every file of configs/{retinanet,ablations,ssd} and the COCO
    members of configs/negatives (the quick-scale ones have their own tests)."""
    found = []
    for family in CONFIG_FAMILIES:
        for path in sorted((ROOT / 'configs' / family).glob('*.py')):
            if family != 'negatives' or '_coco_' in path.name:
                found.append(path)
    return found


# The default run keeps the suite's time budget: the paper's R50-FPN at 600 px with focal
# loss, SSD300's mining head, and the soft-mining negatives member (R50-FPN, 600 px). The
# retinanet family (1333 x 800, ~2.5x the pixels, several minutes a run on 2 cores) and R101
# run under -m slow with the rest.
DEFAULT_RUN = ('ablations/table1b_fl_gamma2_alpha25.py', 'ssd/ssd300_coco_mining.py',
               'negatives/retinanet_r50_fpn_600px_1x_coco_ce_soft_t10.py')
SLOW_FAMILIES = ('retinanet',)


def smoke_run(config: Path, work_dir: Path) -> dict:
    """Train ``config`` SMOKE_STEPS steps on coco128 and evaluate it on a few of its images,
    in this process; returns the metrics, the last step's time and the peak resident memory.

    The config changes only as ``--scale coco --iters 2 --no-pretrained`` changes it (data
    root, schedule, evaluation on the first images, ``init_cfg=None``: no ImageNet weights
    here), plus no checkpoint files and a score threshold of 0 so that COCOeval scores real
    detections.
    """
    from mmengine.runner import Runner

    import plugin  # noqa: F401
    from plugin.repro.scales import ScaleOptions, build_run_config
    from plugin.repro.suites import SuiteEntry

    options = ScaleOptions(scale='coco', data_root=str(COCO128), max_iters=SMOKE_STEPS,
                           repo_root=str(ROOT), pretrained=False)
    cfg = build_run_config(SuiteEntry(str(config.relative_to(ROOT))), options, seed=0)
    cfg.model.test_cfg.score_thr = 0.0
    cfg.default_hooks.checkpoint.update(interval=SMOKE_STEPS + 1, save_last=False)
    cfg.work_dir = str(work_dir)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # evaluated once, below
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    metrics = runner.test()
    newest = sorted(work_dir.glob('*/vis_data/scalars.json'))[-1]  # this run's (timestamped)
    logged = [json.loads(line) for line in newest.read_text().splitlines()]
    steps = [entry for entry in logged if 'loss' in entry]
    return {'config': str(config.relative_to(ROOT / 'configs')), 'steps': runner.iter,
            'losses': [entry['loss'] for entry in steps],
            'step_time_s': steps[-1]['time'], 'train_s': train_s,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            'metrics': metrics}


def _smoke_in_subprocess(config: Path, work_dir: Path) -> dict:
    """:func:`smoke_run` in a fresh Python (its own peak memory); returns its result."""
    out = work_dir / 'smoke.json'
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'),
           'PYTHONWARNINGS': 'ignore', 'PLUGIN_COMPILE': '0'}
    proc = subprocess.run([sys.executable, __file__, '--one', str(config), str(work_dir),
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


def _smoke_params():
    return [pytest.param(p, id=str(p.relative_to(ROOT / 'configs')),
                         marks=[] if str(p.relative_to(ROOT / 'configs')) in DEFAULT_RUN
                         else [pytest.mark.slow])
            for p in coco_configs()]


def test_default_run_has_one_config_per_family():
    chosen = {Path(p).parts[0] for p in DEFAULT_RUN}
    assert chosen == set(CONFIG_FAMILIES) - set(SLOW_FAMILIES)
    assert all(ROOT / 'configs' / p in coco_configs() for p in DEFAULT_RUN)


@needs_coco128
@pytest.mark.parametrize('config', _smoke_params())
def test_coco_config_trains_two_steps_and_evaluates_on_real_images(config, tmp_path):
    import math

    result = _smoke_in_subprocess(config, tmp_path)
    assert result['steps'] == SMOKE_STEPS
    assert len(result['losses']) == SMOKE_STEPS
    assert all(math.isfinite(loss) and loss > 0 for loss in result['losses'])
    # COCOeval ran on the detections of the evaluated images: every AP field is a number.
    assert 0.0 <= result['metrics']['coco/bbox_mAP'] <= 1.0
    assert 0.0 <= result['metrics']['coco/bbox_mAP_50'] <= 1.0


def test_the_docs_smoke_table_has_one_row_per_coco_config():
    # A config added (or renamed) without its measured row is caught here, not by a reader.
    rows = [line.split('|')[1].strip() for line in
            (ROOT / 'docs' / 'coco_smoke.md').read_text().splitlines()
            if line.startswith('| ') and line.split('|')[1].strip().endswith('.py')]
    assert len(rows) == len(set(rows))
    assert sorted(rows) == sorted(str(p.relative_to(ROOT / 'configs')) for p in coco_configs())


def _distinct_first() -> list[Path]:
    """The default run's configs, then one per distinct model (backbone, input size, head,
    loss, sampler), then the rest: the order of the smoke table, so that a table cut short
    has covered every code path first."""
    from mmengine.config import Config

    def key(path: Path) -> str:
        model = Config.fromfile(str(path)).model
        sampler = model.train_cfg.get('sampler', {})
        return json.dumps([model.backbone.get('type'), model.backbone.get('depth'),
                           model.bbox_head.type, model.bbox_head.get('loss_cls', {}).get('type'),
                           sampler.get('type'), sampler.get('mode'),
                           Config.fromfile(str(path)).train_pipeline[2].get('scale'),
                           model.bbox_head.get('anchor_generator', {}).get('input_size')],
                          default=str)

    ordered = [ROOT / 'configs' / p for p in DEFAULT_RUN]
    seen = {key(p) for p in ordered}
    rest = []
    for path in coco_configs():
        if path in ordered:
            continue
        k = key(path)
        (rest if k in seen else ordered).append(path)
        seen.add(k)
    return ordered + rest


def _table(configs: list[Path], work_root: Path, out: Path) -> None:
    """Run the smoke of each config in turn, one line per config in ``out`` (JSON lines)."""
    done = {json.loads(line)['config'] for line in out.read_text().splitlines()} \
        if out.is_file() else set()
    for config in configs:
        name = str(config.relative_to(ROOT / 'configs'))
        if name in done:
            continue
        work_dir = work_root / name.replace('/', '__')
        work_dir.mkdir(parents=True, exist_ok=True)
        finished = work_dir / 'smoke.json'  # by an earlier, interrupted call
        result = json.loads(finished.read_text()) if finished.is_file() \
            else _smoke_in_subprocess(config, work_dir)
        with out.open('a') as f:
            f.write(json.dumps(result) + '\n')
        print(f"{name}: step {result['step_time_s']:.1f} s, peak {result['peak_rss_mb']:.0f} "
              f"MB, AP {result['metrics'].get('coco/bbox_mAP')}", flush=True)


def _markdown(results: list[dict]) -> str:
    lines = ['| config | step (s) | 2 steps (s) | peak memory (MB) | losses | AP (4 images) |',
             '|---|---:|---:|---:|---|---:|']
    for r in results:
        lines.append(f"| {r['config']} | {r['step_time_s']:.1f} | {r['train_s']:.0f} | "
                     f"{r['peak_rss_mb']:,.0f} | {' '.join(f'{x:.3f}' for x in r['losses'])} | "
                     f"{r['metrics']['coco/bbox_mAP']:.3f} |")
    return '\n'.join(lines)


def main() -> None:
    """``--one CONFIG WORK_DIR OUT``: one smoke run, its result to OUT (the tests call this);
    ``--table [OUT]``: every COCO config in turn (docs/coco_smoke.md's table);
    ``--markdown OUT``: that table in Markdown."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('--one', nargs=3, metavar=('CONFIG', 'WORK_DIR', 'OUT'))
    parser.add_argument('--table', nargs='?', const='work_dirs/coco_smoke/smoke.jsonl')
    parser.add_argument('--markdown')
    args = parser.parse_args()
    if args.markdown:
        print(_markdown([json.loads(line) for line in
                         Path(args.markdown).read_text().splitlines()]))
    elif args.one:
        config, work_dir, out = (Path(p).resolve() for p in args.one)
        Path(out).write_text(json.dumps(smoke_run(config, work_dir)) + '\n')
    else:
        out = Path(args.table).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        _table(_distinct_first(), out.parent / 'runs', out)


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    main()


# ------------------------------------------------------------- the coco-short schedule
def _build(config: str, scale: str, **kwargs):
    from plugin.repro.scales import ScaleOptions, build_run_config
    from plugin.repro.suites import SuiteEntry

    options = ScaleOptions(scale=scale, data_root='/data/coco', repo_root=str(ROOT), **kwargs)
    return build_run_config(SuiteEntry(config), options, seed=0)


R50_600 = 'configs/negatives/retinanet_r50_fpn_600px_1x_coco_ce_soft_t10.py'


def test_coco_short_is_an_eighth_of_the_1x_with_its_milestones():
    # By hand: COCO train2017 has 117,266 images with boxes; the 1x is 12 epochs at batch 16
    # (8 GPUs x 2) with the LR divided by 10 after epochs 8 and 11, after 500 warm-up steps.
    eight = _build(R50_600, 'coco-short', gpus=8)
    assert eight.train_cfg.type == 'IterBasedTrainLoop'
    assert eight.train_cfg.max_iters == round(12 / 8 * 117266 / 16) == 10994
    warmup, steps = eight.param_scheduler
    assert (warmup.begin, warmup.end, warmup.by_epoch) == (0, 500, False)
    assert steps.milestones == [round(8 / 8 * 117266 / 16), round(11 / 8 * 117266 / 16)]
    assert steps.by_epoch is False and eight.optim_wrapper.get('accumulative_counts', 1) == 1
    # One GPU: 8 steps of 2 images make each update of 16, so 8x the steps, the same updates.
    one = _build(R50_600, 'coco-short', gpus=1)
    assert one.optim_wrapper.accumulative_counts == 8
    assert one.train_cfg.max_iters == round(12 / 8 * 117266 / 2)
    assert one.param_scheduler[0].end == 8 * 500
    assert one.param_scheduler[1].milestones == [round(8 / 8 * 117266 / 2),
                                                 round(11 / 8 * 117266 / 2)]
    # What the schedule does not touch stays the config's own.
    coco = _build(R50_600, 'coco')
    assert one.optim_wrapper.optimizer == coco.optim_wrapper.optimizer
    assert one.model == coco.model and one.train_dataloader == coco.train_dataloader


def test_coco_short_counts_ssd_repeats_and_rejects_a_batch_it_cannot_split():
    ssd = _build('configs/ssd/ssd300_coco_mining.py', 'coco-short', gpus=8)
    # 24 epochs of a RepeatDataset of 5 at batch 64 (8 x 8); milestones after epochs 16, 22.
    assert ssd.train_cfg.max_iters == round(24 * 5 / 8 * 117266 / 64)
    assert ssd.param_scheduler[1].milestones == [round(m * 5 / 8 * 117266 / 64)
                                                 for m in (16, 22)]
    assert ssd.train_dataloader.dataset.dataset.data_root == '/data/coco'
    assert 'data_root' not in ssd.train_dataloader.dataset  # RepeatDataset takes none
    with pytest.raises(ValueError, match=r'gpus=3: .*allowed: a divisor of 8'):
        _build('configs/ssd/ssd300_coco_mining.py', 'coco-short', gpus=3)


def test_a_coco_smoke_run_keeps_the_schedule_shape_and_evaluates_a_few_images():
    from plugin.repro.scales import SMOKE_EVAL_IMAGES

    cfg = _build(R50_600, 'coco', max_iters=20)
    assert cfg.train_cfg.max_iters == 20
    # The 1x's milestones at 8/12 and 11/12 of the run, the warm-up at 500 of 87,950 steps.
    assert cfg.param_scheduler[1].milestones == [13, 18]
    assert cfg.param_scheduler[0].end == 1
    assert cfg.test_dataloader.dataset.indices == SMOKE_EVAL_IMAGES
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    random = _build(R50_600, 'coco', max_iters=20, pretrained=False)
    assert random.model.backbone.init_cfg is None


def test_several_gpus_without_a_launcher_is_one_clear_message(tmp_path):
    # coco-short would plan 8 GPUs' batch split for what would run as one process
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    proc = subprocess.run([sys.executable, 'tools/reproduce.py', 'table1b', '--scale',
                           'coco-short', '--data-root', str(tmp_path), '--gpus', '8'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: --gpus 8 needs --launcher pytorch or slurm (without one, each run is a single '
        'process)')


# ------------------------------------------ tools/reproduce.py --scale coco, end to end
END_TO_END = [('table1b', 'table1b_fl_gamma2_alpha25'),
              ('table1d', 'table1d_ohem_b128_nms05'),
              ('negatives', 'retinanet_r50_fpn_600px_1x_coco_ce_soft_t10')]


def _reproduce(suite: str, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ['tools/reproduce.py', suite, '--scale', 'coco', '--data-root',
            '../shared/data/coco128', '--iters', '2', '--seeds', '0', '--only', name,
            '--out', str(out), '--no-pretrained', *extra]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600, env=env)


def _check_run(out: Path, suite: str, name: str, proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f'[1/1] {suite} {name} seed 0: AP' in proc.stdout
    records = sorted((out / 'coco' / 'runs').glob('*/*/seed*/results.json'))
    assert records == [out / 'coco' / 'runs' / name / '2it' / 'seed0' / 'results.json']
    record = json.loads(records[0].read_text())
    assert (record['scale'], record['steps'], record['seed']) == ('coco', 2, 0)
    assert record['command'].startswith(f'python tools/reproduce.py {suite} --scale coco')
    assert '--iters 2' in record['command'] and 0.0 <= record['AP'] <= 1.0
    report = (out / 'coco' / suite / 'results.md').read_text()
    assert report.count(f'| {name} | 0 |') == 1
    return record


@pytest.mark.slow
@needs_coco128
@pytest.mark.parametrize(('suite', 'name'), END_TO_END)
def test_reproduce_runs_the_coco_scale_end_to_end(suite, name, tmp_path):
    _check_run(tmp_path, suite, name, _reproduce(suite, name, tmp_path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_coco128
def test_reproduce_runs_the_coco_scale_on_two_processes(tmp_path):
    suite, name = END_TO_END[0]
    proc = _reproduce(suite, name, tmp_path, '--launcher', 'pytorch', '--gpus', '2',
                      '--port', str(_free_port()))
    record = _check_run(tmp_path, suite, name, proc)
    assert '--launcher pytorch --gpus 2' in record['command']
    log = (tmp_path / 'coco' / 'runs' / name / '2it' / 'seed0' / 'worker.log').read_text()
    assert 'Distributed training: True' in log and 'uses the gloo backend' in log
    # Only rank 0 writes the record (one file, no half-written copy left behind).
    assert not list((tmp_path / 'coco' / 'runs').rglob('*.tmp'))


# ------------------------------ two processes with batch 1 == one process with batch 2
# (config, head type put in its place or None, dtype). The plain one is the focal-loss config
# on the plugin's RetinaNet head (with a PseudoSampler it equals mmdet's RetinaHead on one
# process, tests/test_head_parity.py), which averages the positive count over processes.
# Mining runs in float64: choosing the 3 hardest negatives per positive is a step function of
# the losses, and in float32 the batched convolutions' rounding (~1e-7) reorders negatives
# whose losses are that close: the loss agrees to 1e-5, the head's gradients by 0.8 %.
TWO_PROCESS_CONFIGS = {
    'plain': ('configs/negatives/retinanet_r50_fpn_600px_1x_coco_focal.py', 'MiningRetinaHead',
              'float32'),
    'mining': ('configs/negatives/retinanet_r50_fpn_600px_1x_coco_ce_hard1to3.py', None,
               'float64')}
# mmdet's own RetinaHead, as the focal-loss config has it, divides by each process's positives.
STOCK_RETINAHEAD = ('configs/negatives/retinanet_r50_fpn_600px_1x_coco_focal.py', None,
                    'float32')


def _model_and_images(config: str, head_type: str | None, dtype: str):
    """The R50-FPN model of ``config`` (init_cfg=None, seed 0; ``head_type`` in place of its
    head's when given) and two coco128 images of one
    size after the config's pipeline (so that batching pads neither) with different numbers
    of boxes, flipped by neither (RandomFlip off)."""
    import torch
    from mmdet.registry import DATASETS, MODELS
    from mmengine.registry import init_default_scope

    import plugin  # noqa: F401
    from plugin.repro.scales import ScaleOptions, build_run_config
    from plugin.repro.suites import SuiteEntry

    options = ScaleOptions(scale='coco', data_root=str(COCO128), max_iters=2,
                           repo_root=str(ROOT), pretrained=False)
    cfg = build_run_config(SuiteEntry(config), options, seed=0)
    init_default_scope('mmdet')
    for step in cfg.train_dataloader.dataset.pipeline:
        if step.type == 'RandomFlip':
            step.prob = 0.0
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    by_shape = {}
    for index in range(len(dataset)):
        item = dataset[index]
        first = by_shape.setdefault(item['inputs'].shape, item)
        if len(first['data_samples'].gt_instances) != len(item['data_samples'].gt_instances):
            second = item
            break
    if head_type is not None:
        cfg.model.bbox_head.type = head_type
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(getattr(torch, dtype)), [first, second]


def _loss_and_grads(model, images):
    """The total training loss of ``images`` as one batch, and every parameter's gradient
    (``model`` may be wrapped in DDP)."""
    inner = getattr(model, 'module', model)
    batch = inner.data_preprocessor({'inputs': [i['inputs'] for i in images],
                                     'data_samples': [i['data_samples'] for i in images]},
                                    training=True)
    model.zero_grad()
    loss, _ = inner.parse_losses(model(**batch, mode='loss'))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in inner.named_parameters()
                           if p.grad is not None}


def _two_process_worker(rank: int, port: int, setting: tuple, out) -> None:
    import torch
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        model, images = _model_and_images(*setting)
        model.train()
        ddp = MMDistributedDataParallel(model)
        loss, grads = _loss_and_grads(ddp, images[rank:rank + 1])  # DDP averages the grads
        dist.all_reduce(loss)  # the loss whose gradient that mean is
        out[rank] = (loss / 2, grads)
    finally:
        dist.destroy_process_group()


def _one_and_two_processes(setting: tuple) -> tuple:
    """(loss, gradients) of one process with both images, and of each of two processes with
    one image each (its loss averaged over both, its gradients after DDP's averaging)."""
    import torch
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    model, images = _model_and_images(*setting)
    model.train()
    one = _loss_and_grads(model, images)
    out = mp.Manager().dict()
    mp.spawn(_two_process_worker, args=(_free_port(), setting, out), nprocs=2, join=True)
    return one, [out[0], out[1]]


def _close_in_norm(got, expected, rtol: float = 1e-4) -> bool:
    """|got - expected| <= rtol |expected| over the whole tensor (zero only where zero: the
    residual branches start at zero, mmdet's zero_init_residual, so their convs get none)."""
    import torch

    return bool(torch.linalg.vector_norm(got - expected)
                <= rtol * torch.linalg.vector_norm(expected))


def _worst_ratios(got: dict, expected: dict) -> list[tuple[str, float, float]]:
    """The 5 tensors farthest apart: (name, |difference| / |expected|, |expected|)."""
    import torch

    norm = torch.linalg.vector_norm
    ratios = [(n, float(norm(got[n] - e) / norm(e)), float(norm(e))) for n, e in expected.items()
              if norm(e) > 0]
    return sorted(ratios, key=lambda r: -r[1])[:5]


@pytest.mark.slow
@needs_coco128
@pytest.mark.parametrize('head', sorted(TWO_PROCESS_CONFIGS))
def test_two_processes_with_batch_1_train_as_one_with_batch_2(head):
    import torch

    (loss, grads), ranks = _one_and_two_processes(TWO_PROCESS_CONFIGS[head])
    for their_loss, their_grads in ranks:
        torch.testing.assert_close(their_loss, loss, rtol=1e-5, atol=0)
        assert set(their_grads) == set(grads)
        # float32 sums in another order: each tensor within 1e-4 of its own norm (elementwise,
        # tiny BN gradients differ by ~4e-7 where they are ~1e-7 themselves)
        far = [n for n in grads if not _close_in_norm(their_grads[n], grads[n])]
        assert far == [], _worst_ratios(their_grads, grads)


@pytest.mark.slow
@needs_coco128
def test_mmdet_retinahead_divides_by_each_process_positives():
    """Why the plain test above uses the plugin's head: mmdet's RetinaHead (the COCO configs'
    own) normalizes by each process's positives, so its two processes are not one."""
    import torch

    (loss, _), ranks = _one_and_two_processes(STOCK_RETINAHEAD)
    assert not torch.isclose(ranks[0][0], loss, rtol=1e-3)
