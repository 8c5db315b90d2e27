"""tools/reproduce.py: the config each scale runs, the tables' arithmetic against hand sums,
one-line errors, and real runs: skipped when finished, resumed when killed partway."""
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import signal
import subprocess
import sys
import time
from pathlib import Path

import mmcv
import mmdet
import mmengine
import pytest
import torch
from mmengine.config import Config

from plugin.repro.report import check_confirmations, check_orderings, separation
from plugin.repro.runner import Launch
from plugin.repro.scales import ScaleOptions, build_run_config
from plugin.repro.suites import SUITES, get_suite

ROOT = Path(__file__).resolve().parents[1]
COCO128 = ROOT.parent / 'shared' / 'data' / 'coco128'
TOOL = [sys.executable, 'tools/reproduce.py']


def _entry(suite: str, name: str):
    return next(e for e in get_suite(suite).entries if e.name == name)


def _quick(**kwargs) -> ScaleOptions:
    return ScaleOptions(scale='quick', data_root='/data/q', repo_root=str(ROOT), **kwargs)


def test_every_suite_config_exists():
    missing = [e.config for s in SUITES.values() for e in s.entries
               if not (ROOT / e.config).is_file()]
    assert missing == []


@pytest.mark.slow
@pytest.mark.parametrize('suite', sorted(SUITES))
def test_every_entry_builds_at_the_quick_scale(suite):
    for entry in get_suite(suite).entries_at('quick'):
        cfg = build_run_config(entry, _quick(), seed=0)
        assert cfg.model.bbox_head.type in ('RetinaHead', 'MiningRetinaHead')


def test_quick_scale_takes_the_method_of_the_coco_config():
    cfg = build_run_config(_entry('table1d', 'table1d_ohem_b128_nms05'), _quick(), seed=3)
    coco = Config.fromfile(ROOT / 'configs/ablations/table1d_ohem_b128_nms05.py')
    head = cfg.model.bbox_head
    assert head.type == 'MiningRetinaHead'
    assert head.loss_cls.to_dict() == coco.model.bbox_head.loss_cls.to_dict()
    assert cfg.model.train_cfg.sampler.to_dict() == coco.model.train_cfg.sampler.to_dict()
    # ... on the quick-scale model and data
    assert head.num_classes == 6 and head.anchor_generator.ratios == [0.5, 1.0, 2.0]
    assert cfg.train_dataloader.dataset.data_root == '/data/q/'
    assert cfg.val_evaluator.ann_file == '/data/q/annotations/instances_val.json'
    assert cfg.randomness.seed == 3 and cfg.randomness.deterministic


def test_quick_scale_turns_ssd_mining_into_a_softmax_retinanet_head():
    cfg = build_run_config(_entry('ssd', 'ssd300_coco_mining'), _quick(), seed=0)
    head = cfg.model.bbox_head
    assert head.type == 'MiningRetinaHead'
    assert head.loss_cls.type == 'SoftmaxFocalLoss' and head.loss_cls.use_sigmoid is False
    assert head.loss_cls.gamma == 0.0 and head.loss_cls.alpha is None
    assert cfg.model.train_cfg.sampler.type == 'HardNegativeSampler'


def test_shorter_schedule_keeps_its_shape():
    cfg = build_run_config(_entry('table1b', 'table1b_fl_gamma2_alpha25'),
                           _quick(max_iters=60), seed=0)
    full = Config.fromfile(ROOT / 'configs/_base_/quick_scale.py')
    ratio = 60 / full.train_cfg.max_iters
    assert cfg.train_cfg.max_iters == 60
    assert [s.end for s in cfg.param_scheduler] == [round(s.end * ratio)
                                                    for s in full.param_scheduler]
    assert cfg.default_hooks.checkpoint.interval == round(
        full.default_hooks.checkpoint.interval * ratio)


def test_coco_scale_runs_the_config_as_it_is_at_the_data_root():
    options = ScaleOptions(scale='coco', data_root='/coco', repo_root=str(ROOT))
    cfg = build_run_config(_entry('table1b', 'table1b_fl_gamma2_alpha25'), options, seed=1)
    assert cfg.model.backbone.depth == 50 and cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.data_root == '/coco'
    assert cfg.val_evaluator.ann_file == '/coco/annotations/instances_val2017.json'
    assert cfg.randomness.seed == 1


def test_launch_commands():
    run = Path('/r/x/seed0')
    torchrun = Launch(launcher='pytorch', gpus=8).command(run)
    assert torchrun[1:4] == ['-m', 'torch.distributed.run', '--nproc_per_node=8']
    assert torchrun[-2:] == ['--launcher', 'pytorch'] and str(run) in torchrun
    srun = Launch(launcher='slurm', gpus=16, partition='gpu').command(run)
    assert srun[:5] == ['srun', '--partition=gpu', '--gres=gpu:8', '--ntasks=16',
                        '--ntasks-per-node=8']


def _records(name: str, aps: list[float]) -> list[dict]:
    return [{'name': name, 'seed': s, 'AP': ap, 'AP50': ap, 'AP75': ap, 'APs': ap, 'APm': ap,
             'APl': ap} for s, ap in enumerate(aps)]


def test_orderings_margin_in_units_of_the_seed_spread():
    records = (_records('table1b_fl_gamma2_alpha25', [0.40, 0.42, 0.44])
               + _records('table1a_ce_alpha75', [0.30, 0.31, 0.32])
               + _records('table1b_fl_gamma0_alpha75', [0.35, 0.36, 0.37])
               + _records('table1d_ohem_b128_nms05', [0.45, 0.47, 0.49]))
    got = {o.claim: o for o in check_orderings(records)}
    assert len(got) == 2  # no 1:3 mining run: that claim is left out
    ce = got['the paper: focal loss (gamma 2, alpha .25) above the best alpha-balanced CE']
    # paired by seed: +0.05 +0.06 +0.07, mean .06, SE .01 / sqrt(3) -> above
    assert ce.worse == 'table1b_fl_gamma0_alpha75' and ce.separation.verdict == 'above'
    assert ce.separation.standard_error == pytest.approx(0.01 / math.sqrt(3))
    spread = math.sqrt((0.02 ** 2 + 0.01 ** 2) / 2)
    assert ce.margin == pytest.approx(0.06) and ce.margin_in_spread == pytest.approx(
        0.06 / spread)
    ohem = got['the paper: focal loss above the best OHEM']
    assert ohem.margin_in_spread == pytest.approx(-0.05 / 0.02)
    # the same -0.05 at every seed: no spread in the differences, so below
    assert ohem.separation.verdict == 'below' and ohem.separation.below == 3


def test_negatives_orderings_take_the_best_temperature_and_stay_in_their_report():
    neg = 'retinanet_r18_quick_'
    records = (_records(neg + 'ce_hard1to3', [0.30, 0.31, 0.32])
               + _records(neg + 'ce_soft_t1', [0.33, 0.35, 0.37])
               + _records(neg + 'ce_soft_t100', [0.20, 0.21, 0.22])
               + _records('table1b_fl_gamma2_alpha25', [0.40, 0.42, 0.44])
               + _records('table1d_ce_hard_negative_1to3', [0.38, 0.39, 0.40]))
    got = {o.claim: o for o in check_orderings(records, among={neg + 'ce_soft_t1'})}
    assert list(got) == ['negatives: soft mining at its best temperature above hard 1:3 mining']
    soft = got['negatives: soft mining at its best temperature above hard 1:3 mining']
    assert (soft.better, soft.worse) == (neg + 'ce_soft_t1', neg + 'ce_hard1to3')
    assert soft.margin == pytest.approx(0.04) and soft.separation.verdict == 'above'
    assert soft.seed_differences == pytest.approx((0.03, 0.04, 0.05))


@pytest.mark.parametrize('differences,verdict', [
    # mean .02, sample sd .0115, SE .00365: 2 SE = .0073 < .02 -> above
    ((0.0, 0.01, 0.02, 0.03, 0.04, 0.02, 0.02, 0.02, 0.03, 0.01), 'above'),
    # mean .01, sample sd .0158, SE .00707: 2 SE = .0141 > .01 -> not separated
    ((-0.01, 0.03, 0.0, 0.02, 0.01), 'not separated'),
    ((-0.05, -0.04, -0.06), 'below'),
    ((0.5,), 'not separated'),  # one seed: no standard error
    ((), 'not separated'),
])
def test_separation_needs_the_mean_beyond_two_standard_errors(differences, verdict):
    got = separation(differences)
    assert got.verdict == verdict and got.threshold_se == 2.0
    if len(differences) >= 2:
        assert got.mean == pytest.approx(statistics.fmean(differences))
        assert got.standard_error == pytest.approx(
            statistics.stdev(differences) / math.sqrt(len(differences)))
        assert got.above + got.below <= len(differences)
        assert 'threshold 2 standard errors' in got.text()


def test_confirmations_use_the_fresh_seeds_alone():
    neg = 'retinanet_r18_quick_'
    # seeds 0-4 (exploratory) favour T 10 by .05; the fresh seeds 5-9 by -.01 .. +.01
    fresh = (0.01, -0.01, 0.0, 0.01, -0.01)
    records = [*_records(neg + 'ce_soft_t10', [0.40] * 5 + [0.40 + d for d in fresh]),
               *_records(neg + 'ce_hard1to3', [0.35] * 5 + [0.40] * 5)]
    got = check_confirmations(records)
    assert [c.first for c in got] == [neg + 'ce_soft_t10']  # the other sides never ran
    assert got[0].seed_differences == pytest.approx(fresh)
    assert got[0].separation.verdict == 'not separated' and got[0].separation.seeds == 5
    # and the exploratory ordering of the same pair keeps to seeds 0-4
    exploratory = check_orderings(records)[0]
    assert exploratory.seed_differences == pytest.approx((0.05,) * 5)


def _tool(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([*TOOL, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env=env, **kwargs)


def test_unknown_suite_is_one_clear_message(tmp_path):
    out = _tool(['table9', '--out', str(tmp_path)])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: unknown suite 'table9'; allowed: " + ', '.join(SUITES))
    assert 'Traceback' not in out.stderr


def test_missing_data_folder_is_one_clear_message(tmp_path):
    out = _tool(['table1d', '--scale', 'coco128', '--data-root', str(tmp_path / 'nowhere'),
                 '--out', str(tmp_path)])
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data folder '{tmp_path / 'nowhere'}' does not exist")
    assert 'Traceback' not in out.stderr


@pytest.fixture
def tiny_data(tmp_path):
    from plugin.data.synthetic import generate

    generate(tmp_path / 'data', num_train=16, num_val=8)
    return tmp_path / 'data'


def _suite_args(data: Path, out: Path, names: list[str], seeds: list[str],
                iters: int) -> list[str]:
    return ['table1d', '--seeds', *seeds, '--iters', str(iters), '--data-root', str(data),
            '--out', str(out), '--only', *names]


def test_one_run_writes_its_record_and_a_second_call_skips_it(tiny_data, tmp_path):
    args = _suite_args(tiny_data, tmp_path / 'out', ['table1b_fl_gamma2_alpha25'], ['0'], 2)
    first = _tool(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert '[1/1] table1d table1b_fl_gamma2_alpha25 seed 0: AP' in first.stdout
    assert 'ETA' in first.stdout
    run = tmp_path / 'out/quick/runs/table1b_fl_gamma2_alpha25/2it/seed0'  # 2 steps
    record = json.loads((run / 'results.json').read_text())
    assert record['seed'] == 0 and record['scale'] == 'quick'
    assert record['config'] == 'configs/ablations/table1b_fl_gamma2_alpha25.py'
    # what a stranger needs to run it again
    assert record['schedule'] == '2it' and record['steps'] == 2
    assert record['command'] == shlex.join(['python', 'tools/reproduce.py', *args])
    assert record['options']['max_iters'] == 2 and record['launch']['launcher'] == 'none'
    assert record['config_sha256'] == hashlib.sha256((run / 'config.py').read_bytes()).hexdigest()
    assert Config.fromfile(run / 'config.py').train_cfg.max_iters == 2
    assert record['versions'] == {'python': platform.python_version(), 'torch': torch.__version__,
                                  'mmcv': mmcv.__version__, 'mmdet': mmdet.__version__,
                                  'mmengine': mmengine.__version__}
    assert record['threads'] == {'torch': 1, 'OMP_NUM_THREADS': '1'}  # as _tool sets it
    assert record['processes'] == 1
    assert set(record['per_class_ap']) <= {'circle', 'square', 'triangle', 'cross', 'ring',
                                           'diamond'}
    for key in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'wall_time_s', 'commit'):
        assert key in record
    suite = tmp_path / 'out/quick/table1d'
    assert (suite / 'results.png').is_file()
    assert '| table1b_fl_gamma2_alpha25 | 0 |' in (suite / 'results.md').read_text()

    second = _tool(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert '1 runs, 1 finished before, 0 to run' in second.stdout
    assert json.loads((run / 'results.json').read_text()) == record


def test_a_record_names_the_code_that_trained_it(tmp_path):
    from plugin.repro.runner import _note_commit

    run = tmp_path / 'run'
    run.mkdir()
    (run / 'run.json').write_text(json.dumps({'name': 'x', 'commit': 'aaaaaaa'}))
    _note_commit(run, 'bbbbbbb')  # a fresh start: only the code that runs it
    assert json.loads((run / 'run.json').read_text())['commit'] == 'bbbbbbb'
    (run / 'last_checkpoint').write_text('iter_100.pth')
    _note_commit(run, 'ccccccc')  # resumed from a checkpoint that other code wrote
    assert json.loads((run / 'run.json').read_text()) == {'name': 'x',
                                                           'commit': 'bbbbbbb+ccccccc'}
    _note_commit(run, 'ccccccc')  # resumed again by the same code
    assert json.loads((run / 'run.json').read_text())['commit'] == 'bbbbbbb+ccccccc'


@pytest.mark.slow
def test_tiny_suite_resumes_a_run_killed_partway(tiny_data, tmp_path):
    names = ['table1b_fl_gamma2_alpha25', 'table1d_ce_hard_negative_1to3']
    args = _suite_args(tiny_data, tmp_path / 'out', names, ['0', '1'], 40)
    runs = tmp_path / 'out/quick/runs'
    # 40 steps keep the quick schedule's shape: a checkpoint every 7 steps.
    first_ckpt = runs / names[0] / '40it' / 'seed0' / 'last_checkpoint'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    proc = subprocess.Popen([*TOOL, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not first_ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the suite and its worker, mid-run
    proc.wait()
    assert first_ckpt.exists() and not first_ckpt.with_name('results.json').exists()

    out = _tool(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '4 runs, 0 finished before, 4 to run' in out.stdout
    killed = json.loads(first_ckpt.with_name('results.json').read_text())
    assert 7 <= killed['resumed_from_iter'] < 40
    log = first_ckpt.with_name('worker.log').read_text()
    assert f"resumed epoch: 0, iter: {killed['resumed_from_iter']}" in log  # mmengine's line
    for name in names:
        for seed in (0, 1):
            record = json.loads((runs / name / '40it' / f'seed{seed}' / 'results.json')
                                .read_text())
            assert record['resumed_from_iter'] is None or (name, seed) == (names[0], 0)
    report = (tmp_path / 'out/quick/table1d/results.md').read_text()
    assert 'focal loss above CE with 1:3 hard negative mining' in report
    assert '| table1d_ce_hard_negative_1to3 | 0 1 |' in report


@pytest.mark.slow
@pytest.mark.skipif(not COCO128.is_dir(), reason=f'{COCO128} is absent (shared test data)')
def test_coco128_scale_runs_end_to_end(tmp_path):
    out = _tool(['table1b', '--scale', 'coco128', '--data-root', '../shared/data/coco128',
                 '--seeds', '0', '--iters', '4', '--only', 'table1b_fl_gamma2_alpha25',
                 '--out', str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / 'coco128/runs/table1b_fl_gamma2_alpha25/4it/seed0/'
                         'results.json').read_text())
    assert record['scale'] == 'coco128' and 0 <= record['AP'] <= 1


def test_continuum_plot_reads_a_negatives_report(tmp_path):
    names = ['ce_hard1to3', 'ce_soft_t1', 'ce_soft_t100', 'ce_alpha75', 'focal']
    runs = [{'name': 'retinanet_r18_quick_' + n, 'seed': seed, 'AP': 0.3 + 0.01 * seed}
            for n in names for seed in (0, 1)]
    results = tmp_path / 'results.json'
    results.write_text(json.dumps({'runs': runs}))
    out = subprocess.run([sys.executable, 'tools/plot_negatives_continuum.py', '--results',
                          str(results)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / 'continuum.png').stat().st_size > 0


# ------------------------------------------------ a run's length is part of its identity
def _fake_record(folder: Path, name: str, seed: int, schedule: str | None) -> None:
    folder.mkdir(parents=True)
    record = {'name': name, 'seed': seed, 'AP': 0.5}
    if schedule is not None:
        record['schedule'] = schedule
    (folder / 'results.json').write_text(json.dumps(record))


def test_runs_of_two_lengths_are_two_runs_and_a_report_takes_its_own(tmp_path, monkeypatch):
    from plugin.repro import runner

    name = 'table1b_fl_gamma2_alpha25'
    entry = _entry('table1b', name)
    short, long = (runner._plan([entry], _quick(max_iters=n), [0], tmp_path)[0]
                   for n in (600, 1200))
    assert short.run_dir == tmp_path / name / '600it' / 'seed0'
    assert long.run_dir == tmp_path / name / '1200it' / 'seed0'

    _fake_record(tmp_path / name / '600it' / 'seed0', name, 0, '600it')
    _fake_record(tmp_path / name / '1200it' / 'seed0', name, 0, '1200it')
    # a run folder of the layout before lengths: no length in its record, only in its config
    legacy = tmp_path / name / 'seed1'
    _fake_record(legacy, name, 1, None)
    (legacy / 'spec.json').write_text(json.dumps({'config': json.dumps(
        {'train_cfg': {'type': 'IterBasedTrainLoop', 'max_iters': 600}})}))
    reported = []
    monkeypatch.setattr(runner, 'write_suite_report',
                        lambda suite, scale, records, *args, **kw: reported.append(records))
    runner._report(get_suite('table1b'), 'quick', tmp_path, {'600it'}, tmp_path, plot=False)
    assert sorted((r['seed'], r['schedule']) for r in reported[0]) == [(0, '600it'),
                                                                       (1, '600it')]


def test_a_run_folder_from_before_lengths_is_kept_for_a_run_of_its_length(tmp_path):
    from plugin.repro import runner
    from plugin.repro.scales import describe

    name = 'table1b_fl_gamma2_alpha25'
    cfg = build_run_config(_entry('table1b', name), _quick(), seed=1)
    legacy = tmp_path / name / 'seed1'
    legacy.mkdir(parents=True)
    (legacy / 'spec.json').write_text(json.dumps({'config': describe(cfg)}))
    assert runner._plan([_entry('table1b', name)], _quick(), [1], tmp_path)[0].run_dir == legacy
    other = runner._plan([_entry('table1b', name)], _quick(max_iters=100), [1], tmp_path)[0]
    assert other.run_dir == tmp_path / name / '100it' / 'seed1'
