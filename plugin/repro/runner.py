"""Running a suite: one worker process per (config, seed), skipping finished runs, resuming
interrupted ones, one progress line per run, the suite's tables rewritten after each run.

Layout under ``out``::

    SCALE/runs/NAME/seedS/   config.py, run.json, results.json, checkpoints, mmengine logs
    SCALE/SUITE/             results.json, results.md, results.png

Runs live apart from suites, so a config two suites share (focal loss in table1b and table1d)
runs once.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from .records import RESULT_FILE, RUN_FILE, load_records, write_json
from .report import write_suite_report
from .scales import ScaleOptions, build_run_config, check_data, describe
from .suites import Suite

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


def repo_commit(repo_root: Path) -> str:
    """HEAD's short hash, with '+dirty' when tracked files differ from it ('unknown' outside
    a git checkout)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(['git', *args], cwd=repo_root, capture_output=True, text=True)

    head = git('rev-parse', '--short', 'HEAD')
    if head.returncode != 0:
        return 'unknown'
    dirty = git('diff', '--quiet', 'HEAD', '--').returncode != 0
    return head.stdout.strip() + ('+dirty' if dirty else '')


def _prepare(run_dir: Path, cfg_text: str, cfg: Any, run: dict[str, Any]) -> None:
    """Write the run's config and identity; refuse a folder made with other settings."""
    spec_file = run_dir / 'spec.json'
    if spec_file.is_file():
        if json.loads(spec_file.read_text())['config'] != cfg_text:
            raise RunFailedError(
                f'{run_dir} holds a run made with other settings (scale options, --iters or a '
                f'changed config); give another --out or delete that folder')
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
    rewrites the report from the records there are.
    """
    entries = suite.entries_at(options.scale)
    if only:
        unknown = sorted(set(only) - {e.name for e in entries})
        if unknown:
            raise ValueError(f"--only {' '.join(unknown)}: not in {suite.name} at the "
                             f"{options.scale} scale; allowed: "
                             f"{', '.join(e.name for e in entries)}")
        entries = tuple(e for e in entries if e.name in only)
    skipped = [e.name for e in suite.entries if e not in suite.entries_at(options.scale)]
    if skipped:
        print(f"reproduce: {suite.name}: {', '.join(skipped)} not run at the "
              f'{options.scale} scale')
    runs_dir = out / options.scale / 'runs'
    suite_dir = out / options.scale / suite.name
    suite_dir.mkdir(parents=True, exist_ok=True)
    if report_only:
        records = load_records(runs_dir)
        write_suite_report(suite, options.scale, records, suite_dir, plot=True)
        print(f'reproduce: {suite.name} report rewritten from {len(records)} records -> '
              f'{suite_dir}')
        return records
    check_data(options)
    repo = Path(options.repo_root).resolve()
    commit = repo_commit(repo)

    plan = []
    for entry in entries:
        for seed in seeds:
            cfg = build_run_config(entry, options, seed)
            run_dir = runs_dir / entry.name / f'seed{seed}'
            run = {'name': entry.name, 'config': entry.config, 'seed': seed,
                   'scale': options.scale, 'commit': commit,
                   'command': shlex.join(['python', *sys.argv])}
            _prepare(run_dir, describe(cfg), cfg, run)
            plan.append((entry, seed, run_dir))

    todo = [p for p in plan if not (p[2] / RESULT_FILE).is_file()]
    print(f'reproduce: {suite.name} at the {options.scale} scale: {len(plan)} runs, '
          f'{len(plan) - len(todo)} finished before, {len(todo)} to run -> {suite_dir}')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get('PYTHONPATH')])])}
    env.setdefault('THP_MEM_ALLOC_ENABLE', '1')  # see tools/_runtime.py
    start, failures = time.perf_counter(), []
    for done, (entry, seed, run_dir) in enumerate(todo, 1):
        command = launch.command(run_dir)
        if dry_run:
            print(' '.join(command))
            continue
        _note_commit(run_dir, commit)
        run_start = time.perf_counter()
        with open(run_dir / 'worker.log', 'a') as log:
            status = subprocess.run(command, cwd=repo, env=env, stdout=log,
                                    stderr=subprocess.STDOUT).returncode
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(todo) - done)
        if status == 0 and (run_dir / RESULT_FILE).is_file():
            record = json.loads((run_dir / RESULT_FILE).read_text())
            outcome = f"AP {record['AP']:.3f}"
        else:
            failures.append(str(run_dir / 'worker.log'))
            outcome = f"FAILED (exit {status}, see {run_dir / 'worker.log'})"
        print(f'[{done}/{len(todo)}] {suite.name} {entry.name} seed {seed}: {outcome} in '
              f'{time.perf_counter() - run_start:.0f} s | suite {_minutes(elapsed)}, '
              f'ETA {_minutes(eta)}', flush=True)
        write_suite_report(suite, options.scale, load_records(runs_dir), suite_dir,
                           plot=False)
    if dry_run:
        return []
    records = load_records(runs_dir)
    write_suite_report(suite, options.scale, records, suite_dir, plot=True)
    if failures:
        raise RunFailedError(f"{len(failures)} run(s) failed; logs: {', '.join(failures)}")
    names = {e.name for e in entries}
    return [r for r in records if r['name'] in names and r['seed'] in seeds]

