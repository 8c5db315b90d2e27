"""A suite's tables and figure: mean and spread over seeds beside the published number, the
orderings it bears on (the focal-loss paper's, the negatives grid's; exploratory), and the
comparisons declared before their seeds ran (confirmatory).

Every comparison ends in one of three words, from the AP differences paired by seed (a seed
fixes the initial weights and the data order of both sides): "above" or "below" where their
mean lies beyond ``SEPARATION_THRESHOLD_SE`` standard errors of that mean from 0, otherwise
"not separated". The threshold is printed with each result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .records import METRIC_KEYS, Summary, summarize, write_json
from .suites import (CLAIMS, CONFIRMATIONS, CONFIRMATORY_SEEDS, SEPARATION_THRESHOLD_SE,
                     Suite)

__all__ = ['Ordering', 'Separation', 'check_confirmations', 'check_orderings', 'separation',
           'write_suite_report']


@dataclass(frozen=True)
class Separation:
    """Paired differences (first - second, one per seed): their mean, its standard error
    (sample standard deviation / sqrt(n); NaN below two seeds), the sign count, and the
    verdict at ``threshold_se`` standard errors."""

    seeds: int
    mean: float
    standard_error: float
    above: int  # seeds where first > second
    below: int
    threshold_se: float
    verdict: str  # 'above', 'below' or 'not separated'

    def text(self) -> str:
        """One line: the verdict, the threshold, the mean +- SE and the sign count."""
        if self.seeds == 0:
            return 'not separated (no seed run by both sides)'
        if self.seeds == 1:
            return (f'not separated (one seed, no standard error); difference {self.mean:+.3f} '
                    f'AP')
        return (f'{self.verdict} (threshold {self.threshold_se:g} standard errors); paired '
                f'mean {self.mean:+.3f} ± {self.standard_error:.3f} AP over {self.seeds} '
                f'seeds, {self.above} above, {self.below} below, '
                f'{self.seeds - self.above - self.below} level')


def separation(differences: tuple[float, ...],
               threshold_se: float = SEPARATION_THRESHOLD_SE) -> Separation:
    """The :class:`Separation` of paired ``differences``. With fewer than two, nothing
    is separated: no standard error can be estimated."""
    n = len(differences)
    mean = sum(differences) / n if n else math.nan
    se = math.nan
    if n >= 2:
        se = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1) / n)
    verdict = 'not separated'
    if n >= 2 and mean - threshold_se * se > 0:
        verdict = 'above'
    elif n >= 2 and mean + threshold_se * se < 0:
        verdict = 'below'
    return Separation(seeds=n, mean=mean, standard_error=se,
                      above=sum(d > 0 for d in differences),
                      below=sum(d < 0 for d in differences), threshold_se=threshold_se,
                      verdict=verdict)


@dataclass(frozen=True)
class Ordering:
    """``better`` above ``worse`` in mean AP: by ``margin`` AP points, ``margin_in_spread``
    times the pooled seed spread sqrt((s_better^2 + s_worse^2) / 2); ``separation`` judges
    it on the seeds both ran. Exploratory: a best-of-several side is picked on these seeds."""

    claim: str
    better: str
    worse: str
    margin: float
    spread: float
    margin_in_spread: float
    separation: Separation
    seed_differences: tuple[float, ...] = ()  # better - worse, seed by seed, where both ran


@dataclass(frozen=True)
class ConfirmatoryResult:
    """A declared comparison (:data:`plugin.repro.suites.CONFIRMATIONS`) on the fresh seeds
    :data:`CONFIRMATORY_SEEDS` alone."""

    text: str
    first: str
    second: str
    separation: Separation
    seed_differences: tuple[float, ...]


def _best(summaries: dict[str, Summary], names: tuple[str, ...]) -> Summary | None:
    present = [summaries[n] for n in names if n in summaries]
    return max(present, key=lambda s: s.mean['AP'], default=None)


def check_orderings(records: list[dict[str, Any]],
                    among: set[str] | None = None) -> list[Ordering]:
    """The orderings of :data:`CLAIMS` among ``records`` (any suites of one scale); a claim
    whose two sides were not both run, or (given ``among``) that names none of those configs,
    is left out. The confirmatory seeds stay out: they test only what was declared."""
    records = [r for r in records if r['seed'] not in CONFIRMATORY_SEEDS]
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
        differences = _seed_differences(records, better.name, worse.name)
        out.append(Ordering(claim=claim.text, better=better.name, worse=worse.name,
                            margin=margin, spread=spread,
                            margin_in_spread=margin / spread if spread > 0 else math.nan,
                            separation=separation(differences),
                            seed_differences=differences))
    return out


def check_confirmations(records: list[dict[str, Any]],
                        among: set[str] | None = None) -> list[ConfirmatoryResult]:
    """The declared comparisons whose two sides have records on a confirmatory seed (and,
    given ``among``, that name one of those configs), on those seeds alone."""
    fresh = [r for r in records if r['seed'] in CONFIRMATORY_SEEDS]
    out = []
    for c in CONFIRMATIONS:
        if among is not None and among.isdisjoint((c.first, c.second)):
            continue
        differences = _seed_differences(fresh, c.first, c.second)
        if differences:
            out.append(ConfirmatoryResult(text=c.text, first=c.first, second=c.second,
                                          separation=separation(differences),
                                          seed_differences=differences))
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
              orderings: list[Ordering], confirmations: list[ConfirmatoryResult],
              commits: list[str]) -> str:
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
    lines += ['', '## Orderings (exploratory)', '',
              'Each claim\'s side that is the best of several configs was picked on the same '
              'seeds that measure it, so these margins are optimistic. The confirmatory seeds '
              f"({' '.join(map(str, CONFIRMATORY_SEEDS))}) are left out here.", '']
    if not orderings:
        lines.append('None checkable yet: no claim had both of its sides run.')
    for o in orderings:
        by_seed = ' '.join(f'{d:+.3f}' for d in o.seed_differences)
        lines.append(f'- {o.claim}: {o.better} vs {o.worse}: {o.separation.text()}; '
                     f'difference of means {o.margin:+.3f} AP, {o.margin_in_spread:+.1f} x the '
                     f'seed spread ({o.spread:.3f}); seed by seed: {by_seed or "none"}.')
    if confirmations:
        lines += ['', '## Confirmatory comparisons', '',
                  f"Declared before their seeds ran (plugin/repro/suites.py, CONFIRMATIONS); "
                  f"measured on the fresh seeds {' '.join(map(str, CONFIRMATORY_SEEDS))} "
                  f'alone.', '']
        for c in confirmations:
            by_seed = ' '.join(f'{d:+.3f}' for d in c.seed_differences)
            lines.append(f'- {c.text}: {c.first} vs {c.second}: {c.separation.text()}; '
                         f'seed by seed: {by_seed}.')
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
    confirmations = check_confirmations(records, among=names)
    commits = sorted({r['commit'] for r in mine})
    write_json(suite_dir / 'results.json', {
        'suite': suite.name, 'scale': scale, 'commits': commits,
        'entries': [{'name': e.name, 'config': e.config, 'reference': e.reference,
                     'reference_source': e.reference_source,
                     'summary': None if s is None else asdict(s)} for e, s in summaries],
        'orderings': [asdict(o) for o in orderings],
        'confirmations': [asdict(c) for c in confirmations],
        'runs': mine})
    (suite_dir / 'results.md').write_text(_markdown(suite, scale, summaries, orderings,
                                                    confirmations, commits))
    if plot:
        _plot(suite, scale, mine, summaries, suite_dir / 'results.png')
