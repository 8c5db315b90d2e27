"""Running a suite: one worker process per (config, seed), skipping finished runs, resuming
interrupted ones, one progress line per run, the suite's tables rewritten after each run.

Layout under ``out``::

    SCALE/runs/NAME/LENGTH/seedS/   config.py, run.json, results.json, checkpoints, logs
    SCALE/SUITE/                    results.json, results.md, results.png

LENGTH is the run's schedule ('600it': 600 steps, '12ep': 12 epochs), so runs of one config
at two lengths (``--iters``) are two runs, and a suite's report takes the runs of its own
length. Runs live apart from suites, so a config two suites share (focal loss in table1b and
table1d) runs once. A run folder written before the length was part of it (``NAME/seedS``)
is still used for a run of its length.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .records import (RESULT_FILE, RUN_FILE, load_records, portable_path, repo_commit,
                      schedule_name, write_json)
from .report import write_suite_report
from .scales import ScaleOptions, build_run_config, check_data, describe
from .suites import Suite, SuiteEntry

__all__ = ['Launch', 'RunFailedError', 'run_suite', 'repo_commit']

LAUNCHERS = ('none', 'pytorch', 'slurm')


class RunFailedError(RuntimeError):
    """A run's worker exited with an error (its log is named)."""


@dataclass(frozen=True)
class Launch:
    """How a worker starts: in this machine's Python, or on N GPUs through mmengine's
    launcher (``torch.distributed.run`` for 'pytorch', ``srun`` for 'slurm')."""

    launcher: str = 'none'
    gpus: int = 1
    partition: str | None = None  # slurm partition
    port: int = 29500  # torch.distributed master port

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher '{self.launcher}'; allowed: {', '.join(LAUNCHERS)}")
        if self.gpus < 1:
            raise ValueError(f'gpus={self.gpus}; allowed: an int >= 1')

    def command(self, run_dir: Path) -> list[str]:
        """The command line that runs the worker on ``run_dir``."""
        worker = ['-m', 'plugin.repro.worker', str(run_dir)]
        if self.launcher == 'none':
            return [sys.executable, *worker]
        if self.launcher == 'pytorch':
            return [sys.executable, '-m', 'torch.distributed.run',
                    f'--nproc_per_node={self.gpus}', f'--master_port={self.port}', *worker,
                    '--launcher', 'pytorch']
        per_node = min(self.gpus, 8)
        return ['srun', *([f'--partition={self.partition}'] if self.partition else []),
                f'--gres=gpu:{per_node}', f'--ntasks={self.gpus}',
                f'--ntasks-per-node={per_node}', '--kill-on-bad-exit=1',
                sys.executable, '-u', *worker, '--launcher', 'slurm']


@dataclass(frozen=True)
class PlannedRun:
    """One (entry, seed) of a suite: its config, its length and its folder."""

    entry: SuiteEntry
    seed: int
    cfg: Any
    length: str
    run_dir: Path


def _prepare(run_dir: Path, cfg_text: str, cfg: Any, run: dict[str, Any]) -> None:
    """Write the run's config and identity; refuse a folder made with other settings."""
    spec_file = run_dir / 'spec.json'
    if spec_file.is_file():
        if json.loads(spec_file.read_text())['config'] != cfg_text:
            raise RunFailedError(
                f'{run_dir} holds a run made with other settings (scale options or a changed '
                f'config); give another --out or delete that folder')
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(run_dir / 'config.py'))
    write_json(run_dir / RUN_FILE, run)
    write_json(spec_file, {'config': cfg_text})


def _note_commit(run_dir: Path, commit: str) -> None:
    """Make the run's ``commit`` the code about to train it: 'OLD+NEW' when it resumes a
    checkpoint that other code wrote (the folder keeps the commit that made it until then)."""
    run = json.loads((run_dir / RUN_FILE).read_text())
    trained = run['commit'].split('+') if (run_dir / 'last_checkpoint').is_file() else []
    if commit not in trained:
        trained.append(commit)
    write_json(run_dir / RUN_FILE, {**run, 'commit': '+'.join(trained)})


def _minutes(seconds: float) -> str:
    return f'{seconds / 60:.1f} min'


def run_suite(suite: Suite, options: ScaleOptions, seeds: list[int], out: Path,
              launch: Launch = Launch(), only: list[str] | None = None,
              dry_run: bool = False, report_only: bool = False) -> list[dict[str, Any]]:
    """Run every (entry, seed) of ``suite`` at ``options.scale`` not finished yet, then
    write the suite's report; returns the suite's records.

    ``only`` restricts the suite to the entries of those names. ``dry_run`` writes the run
    folders and prints the commands without running them; ``report_only`` runs nothing and
    rewrites the report from the records there are. Reports take the runs of this call's
    length(s) only (``options.max_iters``, else each config's own schedule).
    """
    entries = _select_entries(suite, options.scale, only)
    runs_dir = out / options.scale / 'runs'
    suite_dir = out / options.scale / suite.name
    suite_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(entries, options, seeds, runs_dir)
    lengths = {run.length for run in plan}
    if report_only:
        records = _report(suite, options.scale, runs_dir, lengths, suite_dir, plot=True)
        print(f'reproduce: {suite.name} report rewritten from {len(records)} records -> '
              f'{suite_dir}')
        return records
    check_data(options)
    repo = Path(options.repo_root).resolve()
    commit = repo_commit(repo)
    _prepare_all(plan, _run_fields(options, launch, commit, repo))
    todo = [run for run in plan if not (run.run_dir / RESULT_FILE).is_file()]
    print(f'reproduce: {suite.name} at the {options.scale} scale: {len(plan)} runs, '
          f'{len(plan) - len(todo)} finished before, {len(todo)} to run -> {suite_dir}')
    if dry_run:
        for run in todo:
            print(' '.join(launch.command(run.run_dir)))
        return []
    failures = _run_all(todo, suite, options.scale, launch, repo, commit,
                        on_each=lambda: _report(suite, options.scale, runs_dir, lengths,
                                                suite_dir, plot=False))
    records = _report(suite, options.scale, runs_dir, lengths, suite_dir, plot=True)
    if failures:
        raise RunFailedError(f"{len(failures)} run(s) failed; logs: {', '.join(failures)}")
    names = {e.name for e in entries}
    return [r for r in records if r['name'] in names and r['seed'] in seeds]


def _select_entries(suite: Suite, scale: str, only: list[str] | None
                    ) -> tuple[SuiteEntry, ...]:
    """The suite's entries at ``scale``, restricted to ``only``; names those the scale skips."""
    entries = suite.entries_at(scale)
    if only:
        unknown = sorted(set(only) - {e.name for e in entries})
        if unknown:
            raise ValueError(f"--only {' '.join(unknown)}: not in {suite.name} at the "
                             f"{scale} scale; allowed: {', '.join(e.name for e in entries)}")
        entries = tuple(e for e in entries if e.name in only)
    skipped = [e.name for e in suite.entries if e not in suite.entries_at(scale)]
    if skipped:
        print(f"reproduce: {suite.name}: {', '.join(skipped)} not run at the {scale} scale")
    return entries


def _plan(entries: Iterable[SuiteEntry], options: ScaleOptions, seeds: list[int],
          runs_dir: Path) -> list[PlannedRun]:
    """Every (entry, seed) with its config, its length and its folder."""
    plan = []
    for entry in entries:
        for seed in seeds:
            cfg = build_run_config(entry, options, seed)
            length = schedule_name(cfg.train_cfg)
            plan.append(PlannedRun(entry, seed, cfg, length,
                                   _run_dir(runs_dir, entry.name, length, seed)))
    return plan


def _run_dir(runs_dir: Path, name: str, length: str, seed: int) -> Path:
    """``NAME/LENGTH/seedS``; a folder of the layout before lengths, ``NAME/seedS``, when its
    run has this length (its run is kept, and its config checked as any other's)."""
    unsized = runs_dir / name / f'seed{seed}'
    spec = unsized / 'spec.json'
    if spec.is_file():
        train_cfg = json.loads(json.loads(spec.read_text())['config']).get('train_cfg', {})
        if schedule_name(train_cfg) == length:
            return unsized
    return runs_dir / name / length / f'seed{seed}'


def _run_fields(options: ScaleOptions, launch: Launch, commit: str,
                repo: Path) -> dict[str, Any]:
    """What every run of this call records besides its entry and seed: the code, the command
    and its options (paths as another machine reads them)."""
    scale_options = {k: v for k, v in asdict(options).items() if k != 'repo_root'}
    scale_options['data_root'] = portable_path(options.data_root, repo)
    return {'scale': options.scale, 'commit': commit,
            'command': shlex.join(['python', *sys.argv]),
            'options': scale_options, 'launch': asdict(launch)}


def _prepare_all(plan: list[PlannedRun], fields: dict[str, Any]) -> None:
    for run in plan:
        record = {'name': run.entry.name, 'config': run.entry.config, 'seed': run.seed,
                  'schedule': run.length, **fields}
        _prepare(run.run_dir, describe(run.cfg), run.cfg, record)


def _run_all(todo: list[PlannedRun], suite: Suite, scale: str, launch: Launch, repo: Path,
             commit: str, on_each: Callable[[], Any]) -> list[str]:
    """Run each planned run in a worker, one progress line each, ``on_each()`` after each;
    returns the logs of those that failed."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get('PYTHONPATH')])])}
    env.setdefault('THP_MEM_ALLOC_ENABLE', '1')  # see tools/_runtime.py
    start, failures = time.perf_counter(), []
    for done, run in enumerate(todo, 1):
        _note_commit(run.run_dir, commit)
        run_start = time.perf_counter()
        status = _run_worker(run.run_dir, launch, repo, env)
        if status == 0 and (run.run_dir / RESULT_FILE).is_file():
            record = json.loads((run.run_dir / RESULT_FILE).read_text())
            outcome = f"AP {record['AP']:.3f}"
        else:
            failures.append(str(run.run_dir / 'worker.log'))
            outcome = f"FAILED (exit {status}, see {run.run_dir / 'worker.log'})"
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(todo) - done)
        print(f'[{done}/{len(todo)}] {suite.name} {run.entry.name} seed {run.seed}: {outcome} '
              f'in {time.perf_counter() - run_start:.0f} s | suite {_minutes(elapsed)}, '
              f'ETA {_minutes(eta)}', flush=True)
        on_each()
    return failures


def _run_worker(run_dir: Path, launch: Launch, repo: Path, env: dict[str, str]) -> int:
    """The worker on ``run_dir``, its output appended to ``worker.log``; its exit status."""
    with open(run_dir / 'worker.log', 'a') as log:
        return subprocess.run(launch.command(run_dir), cwd=repo, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode


def _report(suite: Suite, scale: str, runs_dir: Path, lengths: set[str], suite_dir: Path,
            plot: bool) -> list[dict[str, Any]]:
    """Write the suite's report from the records of runs of these lengths; returns them."""
    records = [r for r in load_records(runs_dir) if r.get('schedule') in lengths]
    write_suite_report(suite, scale, records, suite_dir, plot=plot)
    return records
