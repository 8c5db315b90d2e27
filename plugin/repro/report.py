"""A suite's tables and figure: mean and spread over seeds beside the published number, and
the orderings it bears on (the focal-loss paper's, the negatives grid's), each margin in units
of the seed-to-seed spread."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .records import METRIC_KEYS, Summary, summarize, write_json
from .suites import CLAIMS, Suite

__all__ = ['Ordering', 'check_orderings', 'write_suite_report']


@dataclass(frozen=True)
class Ordering:
    """``better`` above ``worse`` in mean AP: by ``margin`` AP points, ``margin_in_spread``
    times the pooled seed spread sqrt((s_better^2 + s_worse^2) / 2)."""

    claim: str
    better: str
    worse: str
    margin: float
    spread: float
    margin_in_spread: float
    held: bool
    seed_differences: tuple[float, ...] = ()  # better - worse, seed by seed, where both ran


def _best(summaries: dict[str, Summary], names: tuple[str, ...]) -> Summary | None:
    present = [summaries[n] for n in names if n in summaries]
    return max(present, key=lambda s: s.mean['AP'], default=None)


def check_orderings(records: list[dict[str, Any]],
                    among: set[str] | None = None) -> list[Ordering]:
    """The orderings of :data:`CLAIMS` among ``records`` (any suites of one scale); a claim
    whose two sides were not both run, or (given ``among``) that names none of those configs,
    is left out."""
    names = {r['name'] for r in records}
    summaries = {n: summarize(records, n) for n in names}
    out = []
    for claim in CLAIMS:
        if among is not None and among.isdisjoint(claim.better + claim.worse):
            continue
        better, worse = _best(summaries, claim.better), _best(summaries, claim.worse)
        if better is None or worse is None:
            continue
        margin = better.mean['AP'] - worse.mean['AP']
        spread = math.sqrt((better.std['AP'] ** 2 + worse.std['AP'] ** 2) / 2)
        out.append(Ordering(claim=claim.text, better=better.name, worse=worse.name,
                            margin=margin, spread=spread,
                            margin_in_spread=margin / spread if spread > 0 else math.nan,
                            held=margin > 0,
                            seed_differences=_seed_differences(records, better.name,
                                                               worse.name)))
    return out


def _seed_differences(records: list[dict[str, Any]], better: str,
                      worse: str) -> tuple[float, ...]:
    """AP of ``better`` minus ``worse`` for each seed both ran (a seed fixes the initial
    weights and the data order, so these pairs share part of their noise)."""
    ap = {(r['name'], r['seed']): r['AP'] for r in records}
    seeds = sorted({s for n, s in ap if n == better} & {s for n, s in ap if n == worse})
    return tuple(round(ap[better, s] - ap[worse, s], 6) for s in seeds)


def _cell(summary: Summary, metric: str) -> str:
    mean, std = summary.mean[metric], summary.std[metric]
    if mean < 0:  # COCO's -1: no object of that size in the split
        return '-'
    return f'{mean:.3f}' + ('' if math.isnan(std) else f' ± {std:.3f}')


def _markdown(suite: Suite, scale: str, summaries: list[tuple[Any, Summary | None]],
              orderings: list[Ordering], commits: list[str]) -> str:
    lines = [f'# {suite.name} at the {scale} scale', '', suite.description, '',
             f'Made by `python tools/reproduce.py {suite.name} --scale {scale} ...` at '
             f"commit {', '.join(commits) or '-'}. Mean ± sample standard deviation over "
             'seeds (AP in 0-1; the reference is COCO box AP in 0-100).', '',
             '| config | seeds | AP | AP50 | AP75 | APs | APm | APl | reference |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for entry, summary in summaries:
        ref = '-' if entry.reference is None else f'{entry.reference} ({entry.reference_source})'
        if summary is None:
            lines.append(f'| {entry.name} | not run | | | | | | | {ref} |')
            continue
        seeds = ' '.join(map(str, summary.seeds))
        cells = ' | '.join(_cell(summary, m) for m in METRIC_KEYS)
        lines.append(f'| {entry.name} | {seeds} | {cells} | {ref} |')
    lines += ['', '## Orderings', '']
    if not orderings:
        lines.append('None checkable yet: no claim had both of its sides run.')
    for o in orderings:
        verdict = 'held' if o.held else 'did not hold'
        if abs(o.margin_in_spread) < 1:
            verdict += ' (within one seed spread: not separated)'
        by_seed = ' '.join(f'{d:+.3f}' for d in o.seed_differences)
        lines.append(f'- {o.claim}: {verdict}; {o.better} - {o.worse} = {o.margin:+.3f} AP, '
                     f'{o.margin_in_spread:+.1f} x the seed spread ({o.spread:.3f}); '
                     f'seed by seed: {by_seed or "no common seed"}.')
    return '\n'.join(lines) + '\n'


def _plot(suite: Suite, scale: str, records: list[dict[str, Any]],
          summaries: list[tuple[Any, Summary | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    shown = [(e, s) for e, s in summaries if s is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(shown)), 4.6))
    for x, (entry, summary) in enumerate(shown):
        aps = [r['AP'] for r in records if r['name'] == entry.name]
        ax.scatter([x] * len(aps), aps, color='0.6', s=14, zorder=2,
                   label='one seed' if x == 0 else None)
        std = 0.0 if math.isnan(summary.std['AP']) else summary.std['AP']
        ax.errorbar([x], [summary.mean['AP']], yerr=[std], fmt='o', color='C0', capsize=4,
                    zorder=3, label='mean ± seed spread' if x == 0 else None)
    ax.set_xticks(range(len(shown)), [e.name for e, _ in shown], rotation=35, ha='right',
                  fontsize=8)
    ax.set_ylabel('COCO box AP')
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_title(f'{suite.name}, {scale} scale', loc='left')
    ax.grid(axis='y', alpha=0.3)
    if shown:  # above the axes, where it hides no point
        ax.legend(fontsize=8, loc='lower right', bbox_to_anchor=(1.0, 1.0), ncol=1,
                  frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_suite_report(suite: Suite, scale: str, records: list[dict[str, Any]],
                       suite_dir: Path, plot: bool = True) -> None:
    """Write ``results.json`` and ``results.md`` (and ``results.png`` when ``plot``) for the
    suite's entries at ``scale``; the orderings that name one of them use every record given."""
    entries = suite.entries_at(scale)
    names = {e.name for e in entries}
    mine = [r for r in records if r['name'] in names]
    summaries = [(e, summarize(mine, e.name)) for e in entries]
    orderings = check_orderings(records, among=names)
    commits = sorted({r['commit'] for r in mine})
    write_json(suite_dir / 'results.json', {
        'suite': suite.name, 'scale': scale, 'commits': commits,
        'entries': [{'name': e.name, 'config': e.config, 'reference': e.reference,
                     'reference_source': e.reference_source,
                     'summary': None if s is None else asdict(s)} for e, s in summaries],
        'orderings': [asdict(o) for o in orderings],
        'runs': mine})
    (suite_dir / 'results.md').write_text(_markdown(suite, scale, summaries, orderings,
                                                    commits))
    if plot:
        _plot(suite, scale, mine, summaries, suite_dir / 'results.png')
