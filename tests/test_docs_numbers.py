"""The prose numbers of README.md and docs/benchmarks.md against the run records they cite.

Every result table in docs/benchmarks.md is checked against the ``results.json`` its
"Records:" line names, and each sentence listed in ``CLAIMS`` must appear in its file with
the numbers recomputed here from the records (``docs/results/**``), at the printed precision.
A sentence that is reworded must be reworded here too; a number that drifts from its record
fails. Margins "in seed spreads" divide by the pooled spread sqrt((sd_a^2 + sd_b^2) / 2), as
the reports do; paired margins are means over the seeds both configs ran.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'docs' / 'results'


@cache
def suite(name: str) -> dict:
    return json.loads((RESULTS / 'quick' / name / 'results.json').read_text())


def summary(suite_name: str, config: str) -> dict:
    (entry,) = [e for e in suite(suite_name)['entries'] if e['name'] == config]
    return entry['summary']


def mean(suite_name: str, config: str, metric: str = 'AP') -> float:
    return summary(suite_name, config)['mean'][metric]


def spread(suite_name: str, config: str, metric: str = 'AP') -> float:
    return summary(suite_name, config)['std'][metric]


def pooled(a: tuple[str, str], b: tuple[str, str], metric: str = 'AP') -> float:
    return math.sqrt((spread(*a, metric) ** 2 + spread(*b, metric) ** 2) / 2)


def in_spreads(a: tuple[str, str], b: tuple[str, str], metric: str = 'AP') -> float:
    """(mean a - mean b) over the pooled seed spread."""
    return (mean(*a, metric) - mean(*b, metric)) / pooled(a, b, metric)


def runs(suite_name: str, config: str) -> dict[int, dict]:
    return {r['seed']: r for r in suite(suite_name)['runs'] if r['name'] == config}


def seed_differences(suite_name: str, a: str, b: str) -> list[float]:
    run_a, run_b = runs(suite_name, a), runs(suite_name, b)
    return [run_a[s]['AP'] - run_b[s]['AP'] for s in sorted(run_a.keys() & run_b.keys())]


def paired_t(differences: list[float]) -> float:
    return statistics.mean(differences) / (statistics.stdev(differences)
                                           / math.sqrt(len(differences)))


def paired_row(suite_name: str, a: str, b: str) -> tuple[float, ...]:
    """The seed-by-seed differences a - b, their mean, sd and paired t."""
    differences = seed_differences(suite_name, a, b)
    return (*differences, statistics.mean(differences), statistics.stdev(differences),
            paired_t(differences))


def wall_range(suite_name: str, commit: str | None = None) -> tuple[float, float]:
    times = [r['wall_time_s'] for r in suite(suite_name)['runs']
             if commit is None or r['commit'] == commit]
    return min(times), max(times)


def imbalance(name: str) -> dict:
    return json.loads((RESULTS / 'imbalance' / name / 'imbalance.json').read_text())


def easy_share(name: str, gamma: str) -> float:
    return imbalance(name)['per_gamma'][gamma]['loss_share_easy_negatives']


def short(x: float) -> str:
    """0.353 -> '.353', the README's style."""
    return f'{x:.3f}'.lstrip('0')


def signed_short(x: float) -> str:
    return ('+' if x >= 0 else '-') + short(abs(x))


FL, HARD_1D = ('table1b', 'table1b_fl_gamma2_alpha25'), ('table1d', 'table1d_ce_hard_negative_1to3')
OHEM_BEST = ('table1d', 'table1d_ohem_b256_nms07')
NEG = 'negatives'
HARD, T10, T1 = 'retinanet_r18_quick_ce_hard1to3', 'retinanet_r18_quick_ce_soft_t10', \
    'retinanet_r18_quick_ce_soft_t1'
ALPHA90 = ('table1a', 'table1a_ce_alpha90')
IMB_FL, IMB_CE = 'quick_fl_seed0', 'quick_ce_hard1to3_seed0'
GAMMA1 = ('table1b', 'table1b_fl_gamma1_alpha25')
SSD_MINING = ('ssd', 'ssd300_coco_mining')
OHEM_NMS07 = ('table1d_ohem_b256_nms07', 'table1d_ohem_b128_nms07')
OHEM_NMS05 = ('table1d_ohem_b128_nms05', 'table1d_ohem_1to3_b128_nms05')
FL_1200 = json.loads((RESULTS / 'quick' / 'fl_gamma2_1200_steps_seed0.json').read_text())
BENCH, README = 'docs/benchmarks.md', 'README.md'

CONF = 'negatives_confirmatory'


def confirmed(first: str, second: str) -> tuple[float, float, float]:
    """The fresh seeds' paired mean, its standard error and their ratio."""
    d = seed_differences(CONF, f'retinanet_r18_quick_{first}', f'retinanet_r18_quick_{second}')
    se = statistics.stdev(d) / math.sqrt(len(d))
    return statistics.mean(d), se, statistics.mean(d) / se


# (file, sentence with {} fields, the fields' values from the records)
CLAIMS: list[tuple[str, str, Callable[[], tuple]]] = [
    # the confirmatory comparisons on seeds 5-9
    (BENCH, 'above hard 1:3 mining**: {:+.3f} ± {:.3f} AP, 5 of 5 seeds, t {:.1f}',
     lambda: confirmed('ce_soft_t10', 'ce_hard1to3')),
    (BENCH, 'below soft mining at T 10**: {:+.3f} ± {:.3f}, 5 of 5 seeds below, t {:.1f}',
     lambda: confirmed('focal', 'ce_soft_t10')),
    (BENCH, 'soft to hard {:+.3f} ± {:.3f}, t {:.1f}',
     lambda: confirmed('ce_soft_t10_to_hard', 'ce_soft_t10')),
    (BENCH, 'hard to soft {:+.3f} ± {:.3f}, t {:.1f})',
     lambda: confirmed('ce_hard_to_soft_t10', 'ce_soft_t10')),
    (BENCH, '**DR Loss is far below** ({:+.3f} ± {:.3f}, 5 of 5)',
     lambda: confirmed('dr_loss', 'ce_soft_t10')[:2]),
    (README, 'soft mining at T 10 above hard 1:3 mining, {} +- {} AP (5 of 5 seeds)',
     lambda: ('+' + short(confirmed('ce_soft_t10', 'ce_hard1to3')[0]),
              short(confirmed('ce_soft_t10', 'ce_hard1to3')[1]))),
    # table1b: gamma 5 against gamma 2
    (BENCH, 'here {:.3f}, {:.1f} seed spreads)', lambda: (
        mean(*FL) - mean('table1b', 'table1b_fl_gamma5_alpha25'),
        in_spreads(FL, ('table1b', 'table1b_fl_gamma5_alpha25')))),
    (BENCH, 'above gamma 2 by {:.3f} AP ({:.1f} seed spreads)', lambda: (
        mean(*GAMMA1) - mean(*FL),
        in_spreads(GAMMA1, FL))),
    (BENCH, 'gamma 0 here) focal loss led by {:.3f} AP, {:.1f} seed spreads', lambda: (
        mean(*FL) - mean('table1b', 'table1b_fl_gamma0_alpha75'),
        in_spreads(FL, ('table1b', 'table1b_fl_gamma0_alpha75')))),
    # table1a: alpha .9 against .75
    (BENCH, '{:.3f} ± {:.3f} against {:.3f} ± {:.3f} ({:.1f} seed spreads)', lambda: (
        mean(*ALPHA90), spread(*ALPHA90), mean('table1a', 'table1a_ce_alpha75'),
        spread('table1a', 'table1a_ce_alpha75'),
        in_spreads(ALPHA90, ('table1a', 'table1a_ce_alpha75')))),
    # table1d: APm of focal loss against 1:3 mining and the best OHEM (b256 / .7)
    (BENCH, 'APm {:.3f} ± {:.3f} against {:.3f} ± {:.3f} for 1:3 mining: +{:.1f} spreads', lambda: (
        mean(*FL, 'APm'), spread(*FL, 'APm'), mean(*HARD_1D, 'APm'), spread(*HARD_1D, 'APm'),
        in_spreads(FL, HARD_1D, 'APm'))),
    (BENCH, "OHEM's, b256 / NMS .7: {:.3f} ± {:.3f}: +{:.1f})", lambda: (
        mean(*OHEM_BEST, 'APm'), spread(*OHEM_BEST, 'APm'), in_spreads(FL, OHEM_BEST, 'APm'))),
    (BENCH, '-{:.1f} spreads against 1:3 mining', lambda: (-in_spreads(FL, HARD_1D, 'AP50'),)),
    # the CE + 1:3 mining model in two suites
    (BENCH, '0.369 ± 0.007 at c027ffa, 0.360 ± 0.009 at 723a192 / 3860624, {:.1f} seed spreads '
     'apart', lambda: (in_spreads(HARD_1D, (NEG, HARD)),)),
    # ssd
    (BENCH, 'cost {:.3f} AP ({:.1f} spreads)', lambda: (
        mean('ssd', 'ssd300_coco_mining') - mean('ssd', 'ssd300_coco_mining_min_neg'),
        in_spreads(('ssd', 'ssd300_coco_mining'), ('ssd', 'ssd300_coco_mining_min_neg')))),
    (BENCH, 'SSD\'s softmax CE with 1:3 mining ({:.3f} ± {:.3f}) and focal loss ({:.3f} ± {:.3f}) '
     'were within one spread', lambda: (
         mean('ssd', 'ssd300_coco_mining'), spread('ssd', 'ssd300_coco_mining'),
         mean('ssd', 'ssd300_coco_focal'), spread('ssd', 'ssd300_coco_focal'))),
    # negatives: alpha .9 against hard mining and T 10
    (BENCH, 'reached {:.3f} ± {:.3f}, within one spread of hard mining ({:.3f} ± {:.3f})', lambda: (
        mean(*ALPHA90), spread(*ALPHA90), mean(NEG, HARD), spread(NEG, HARD))),
    (BENCH, '({:.3f} ± {:.3f}) by {:.1f} spreads', lambda: (
        mean(NEG, T10), spread(NEG, T10), in_spreads((NEG, T10), ALPHA90))),
    (BENCH, 'Temperature 1, the default, gave +{:.3f} (t = {:.1f})', lambda: (
        statistics.mean(seed_differences(NEG, T1, HARD)),
        paired_t(seed_differences(NEG, T1, HARD)))),
    (BENCH, '+{:.3f} AP, {:.1f} seed spreads, paired t = {:.1f} with 4 degrees of freedom',
     lambda: (
        statistics.mean(seed_differences(NEG, T10, HARD)), in_spreads((NEG, T10), (NEG, HARD)),
        paired_t(seed_differences(NEG, T10, HARD)))),
    (BENCH, 'Temperature 10 minus hard mining, seed by seed: {:+.3f}, {:+.3f}, {:+.3f} '
     '(mean {:+.3f})',
     lambda: (*seed_differences('negatives_1200', T10, HARD),
              statistics.mean(seed_differences('negatives_1200', T10, HARD)))),
    # run times against the records' wall_time_s
    (BENCH, '7 configs x 3 seeds at commit 3860624 ({:.0f}-{:.0f} s a run', lambda: wall_range(
        'table1a')),
    (BENCH, '(the soft sampler as it is on main), {:.0f}-{:.0f} s a run', lambda: wall_range(
        NEG, '723a192')),
    (BENCH, 'took {:.1f}-{:.1f} minutes each ({:.0f} minutes of runs in all)', lambda: (
        *(t / 60 for t in wall_range('table1d', 'c027ffa')),
        sum(r['wall_time_s'] for r in suite('table1d')['runs'] if r['commit'] == 'c027ffa') / 60)),
    (BENCH, 'took {:.0f}-{:.0f} s each where the machine was quiet', lambda: (
        min(wall_range(s)[0] for s in ('table1a', 'ssd', NEG)),
        max(wall_range(s)[1] for s in ('table1a', 'ssd', NEG)))),
    (BENCH, '({:.0f}-{:.0f} s a run in the 1,200-step', lambda: wall_range('negatives_1200')),
    (BENCH, 'gave {:.3f}, {:.3f}, {:.3f}, with the rare diamond class at {:.3f}, {:.3f}, {:.3f}',
     lambda: (*(r['AP'] for _, r in sorted(runs(*FL).items())),
              *(r['per_class_ap']['diamond'] for _, r in sorted(runs(*FL).items())))),
    # README summary rows
    (README, 'focal loss {} +- {}, CE + 1:3 mining {} +- {}, best OHEM (b256/.7) {} +- {}: not '
     'separated', lambda: tuple(map(short, (mean(*FL), spread(*FL), mean(*HARD_1D),
                                          spread(*HARD_1D), mean(*OHEM_BEST),
                                          spread(*OHEM_BEST))))),
    (README, 'best alpha-balanced CE at alpha .9 ({}), focal loss level with it ({}); best gamma 1 '
     '({})', lambda: (short(mean(*ALPHA90)), signed_short(mean(*FL) - mean(*ALPHA90)),
                      short(mean(*GAMMA1)))),
    (README, 'FL* (2, 1) {} level with focal loss {}; SSD\'s softmax CE + 1:3 mining {} vs focal '
     'loss {}: not separated; a floor of 32 negatives per image cost {} ({:.1f} spreads)',
     lambda: (short(mean('appendix', 'appendix_fl_star_gamma2_beta1')), short(mean(*FL)),
              short(mean(*SSD_MINING)), short(mean('ssd', 'ssd300_coco_focal')),
              short(mean(*SSD_MINING) - mean('ssd', 'ssd300_coco_mining_min_neg')),
              in_spreads(SSD_MINING, ('ssd', 'ssd300_coco_mining_min_neg')))),
    (README, 'T 10 {} +- {} vs hard {} +- {} ({}, seeds 0-4)', lambda: (
        short(mean(NEG, T10)), short(spread(NEG, T10)), short(mean(NEG, HARD)),
        short(spread(NEG, HARD)), signed_short(statistics.mean(seed_differences(NEG, T10, HARD))))),
    (README, 'hard {}, T 1 {}, T 10 {} (3 seeds)', lambda: tuple(
        short(mean('negatives_1200', c)) for c in (HARD, T1, T10))),
    (README, '{:.0f} negatives per positive anchor; easy negatives carry {:.0f}-{:.0f}% of CE\'s '
     'loss, {:.0f}-{:.0f}% of focal loss\'s', lambda: (
         imbalance(IMB_FL)['negatives_per_positive'],
         100 * easy_share(IMB_CE, '0.0'), 100 * easy_share(IMB_FL, '0.0'),
         100 * easy_share(IMB_CE, '2.0'), 100 * easy_share(IMB_FL, '2.0'))),
    (BENCH, "would take {:.0f}-{:.0f} % of its loss and ~{:.0f} % of its gradient from them. Focal "
     "loss (gamma 2) cuts the easy negatives' share of the loss to {:.0f}-{:.0f} % and of the "
     "gradient to {:.0f}-{:.0f} %", lambda: (
         100 * easy_share(IMB_CE, '0.0'), 100 * easy_share(IMB_FL, '0.0'),
         50 * sum(imbalance(n)['per_gamma']['0.0']['gradient_share_easy_negatives']
                  for n in (IMB_CE, IMB_FL)),
         100 * easy_share(IMB_CE, '2.0'), 100 * easy_share(IMB_FL, '2.0'),
         *(100 * imbalance(n)['per_gamma']['2.0']['gradient_share_easy_negatives']
           for n in (IMB_CE, IMB_FL)))),
    # the short summary and table1d
    (BENCH, 'level ({:+.3f} AP, {:.1f} spreads, against alpha .9; {:+.1f} spreads against the '
     "paper's alpha .75). Against CE with 1:3 mining: {:+.3f} ({:.1f} spreads). Against the best "
     'OHEM: {:+.3f} ({:.1f})', lambda: (
         mean(*FL) - mean(*ALPHA90), in_spreads(FL, ALPHA90),
         in_spreads(FL, ('table1a', 'table1a_ce_alpha75')),
         mean(*FL) - mean(*HARD_1D), -in_spreads(FL, HARD_1D),
         mean(*FL) - mean(*OHEM_BEST), -in_spreads(FL, OHEM_BEST))),
    (BENCH, 'beat both at NMS .5 ({:.3f}-{:.3f}), by {:.1f}-{:.1f} spreads', lambda: (
        min(mean('table1d', c) for c in OHEM_NMS05), max(mean('table1d', c) for c in OHEM_NMS05),
        min(in_spreads(('table1d', a), ('table1d', b)) for a in OHEM_NMS07 for b in OHEM_NMS05),
        max(in_spreads(('table1d', a), ('table1d', b)) for a in OHEM_NMS07 for b in OHEM_NMS05))),
    (BENCH, 'The seed spread (sample standard deviation over seeds 0, 1, 2; 1,000 validation '
     'images) was {:.3f}-{:.3f} AP in table1d, {:.3f} for focal loss', lambda: (
         min(e['summary']['std']['AP'] for e in suite('table1d')['entries']),
         max(e['summary']['std']['AP'] for e in suite('table1d')['entries']), spread(*FL))),
    (BENCH, 'at gamma 1 ({:.3f} ± {:.3f}) was {:.1f} spreads above alpha .9', lambda: (
        mean(*GAMMA1), spread(*GAMMA1), in_spreads(GAMMA1, ALPHA90))),
    # focal loss at 1,200 steps (one record) against seed 0 at 600
    (BENCH, 'reached AP {:.3f} (AP50 {:.3f}, APm {:.3f}) against {:.3f} for seed 0 at 600 steps, '
     'in {:.1f} minutes', lambda: (
         FL_1200['AP'], FL_1200['AP50'], FL_1200['APm'], runs(*FL)[0]['AP'],
         FL_1200['wall_time_s'] / 60)),
    (BENCH, 'So the 600-step schedule costs ~{:.2f} AP', lambda: (
        FL_1200['AP'] - runs(*FL)[0]['AP'],)),
    # soft minus hard mining, seed by seed: the table's rows
    *[(BENCH, f'| {label} | ' + ' | '.join(['{:+.3f}'] * 6) + ' | {:.3f} | {:.1f} |',
       lambda config=config: paired_row(NEG, config, HARD))
      for label, config in (('0.1', 'retinanet_r18_quick_ce_soft_t01'), ('1', T1), ('10', T10),
                            ('100', 'retinanet_r18_quick_ce_soft_t100'))],
]


@cache
def text(name: str) -> str:
    """The file with its line breaks and runs of spaces as single spaces (prose wraps)."""
    return re.sub(r'\s+', ' ', (ROOT / name).read_text())


@pytest.mark.parametrize('path, sentence, values', CLAIMS,
                         ids=[f'{p}:{s[:40]}' for p, s, _ in CLAIMS])
def test_prose_number_matches_its_records(path, sentence, values):
    expected = sentence.format(*values())
    assert expected in text(path), f'{path} should say: {expected!r}'


def _table_rows(path: str):
    """(records file, row cells) for every result-table row under a 'Records:' link."""
    records = None
    for line in (ROOT / path).read_text().splitlines():
        link = re.search(r'Records: \[`(docs/results/[^`]+\.json)`\]', line)
        if link:
            records = ROOT / link.group(1)
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if records is not None and len(cells) == 9 and re.fullmatch(r'[\d ]+', cells[1]):
            yield records, cells


def test_every_result_table_row_matches_its_records():
    checked = 0
    for records, cells in _table_rows(BENCH):
        entries = {e['name']: e['summary'] for e in json.loads(records.read_text())['entries']}
        assert cells[0] in entries, f'{cells[0]} is not in {records}'
        entry = entries[cells[0]]
        assert cells[1] == ' '.join(map(str, entry['seeds'])), cells
        for metric, cell in zip(('AP', 'AP50', 'AP75', 'APs', 'APm'), cells[2:7]):
            std = entry['std'][metric]  # one seed: no spread printed
            printed = f"{entry['mean'][metric]:.3f}" + ('' if std is None or math.isnan(std)
                                                        else f' ± {std:.3f}')
            assert cell == printed, f'{records.parent.name} {cells[0]} {metric}: {cell}'
        checked += 1
    # table1d 7, table1b 7, table1a 7, appendix 4, ssd 3, negatives 9, at 1,200 steps 3
    assert checked >= 40, checked
