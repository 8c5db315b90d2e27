"""The suites of ``tools/reproduce.py``: which configs each one runs, and the published numbers.

An entry names one config file. COCO configs (``configs/ablations``, ``configs/ssd``) run as
they are at the coco scale; at the quick and coco128 scales their method (head type,
classification loss, sampler) is put on the quick-scale RetinaNet (:mod:`plugin.repro.scales`).
Configs written for the quick start (``configs/negatives``) run at those two scales only.

References are COCO box AP as published: the focal-loss paper (Lin et al. 2017, Table 1: (a)
and (b) ResNet-50-FPN at 600 px, (d) ResNet-101-FPN) or mmdet's model zoo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ['CLAIMS', 'CONFIRMATIONS', 'CONFIRMATORY_SEEDS', 'SCALES', 'SUITES',
           'SEPARATION_THRESHOLD_SE', 'Claim', 'Confirmation', 'Suite', 'SuiteEntry',
           'get_suite']

SCALES = ('quick', 'coco128', 'coco', 'coco-short')
QUICK_SCALES = ('quick', 'coco128')
COCO_SCALES = ('coco', 'coco-short')


@dataclass(frozen=True)
class SuiteEntry:
    """One config of a suite.

    Args:
        config: path from the repository root.
        reference: published COCO box AP (0-100), or None where none is published.
        reference_source: where ``reference`` comes from.
        scales: the scales the entry runs at.
    """

    config: str
    reference: float | None = None
    reference_source: str = ''
    scales: tuple[str, ...] = SCALES

    @property
    def name(self) -> str:
        """The config's file name without ``.py``: the run's folder and table row."""
        return Path(self.config).stem


@dataclass(frozen=True)
class Suite:
    """A named list of entries."""

    name: str
    description: str
    entries: tuple[SuiteEntry, ...]

    def entries_at(self, scale: str) -> tuple[SuiteEntry, ...]:
        """The entries that run at ``scale``."""
        return tuple(e for e in self.entries if scale in e.scales)


def _paper(config: str, ap: float | None, table: str) -> SuiteEntry:
    return SuiteEntry(config=f'configs/ablations/{config}.py', reference=ap,
                      reference_source=f'paper {table}' if ap is not None else '')


_FL = 'table1b_fl_gamma2_alpha25'

SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite('table1a', 'alpha-balanced cross entropy (gamma 0), alpha .10 ... .999', tuple(
        _paper(f'table1a_ce_alpha{a}', ap, 'Table 1(a)') for a, ap in (
            ('10', 0.0), ('25', 10.8), ('50', 30.2), ('75', 31.1), ('90', 30.8),
            ('99', 28.7), ('999', 25.1)))),
    Suite('table1b', 'focal loss, gamma and alpha', tuple(
        _paper(f'table1b_fl_{c}', ap, 'Table 1(b)') for c, ap in (
            ('gamma0_alpha75', 31.1), ('gamma01_alpha75', 31.4), ('gamma02_alpha75', 31.9),
            ('gamma05_alpha50', 32.9), ('gamma1_alpha25', 33.7), ('gamma2_alpha25', 34.0),
            ('gamma5_alpha25', 32.2)))),
    # Seven of the thirteen settings: focal loss, the 1:3 mining baseline, the paper's best
    # OHEM (batch 128, NMS .5), its best at NMS .7 and its worst, and OHEM 1:3's best.
    Suite('table1d', 'focal loss vs cross entropy with 1:3 hard negative mining vs OHEM', (
        _paper(_FL, 36.0, 'Table 1(d), R101'),
        _paper('table1d_ce_hard_negative_1to3', None, ''),
        _paper('table1d_ohem_b128_nms05', 32.8, 'Table 1(d), R101'),
        _paper('table1d_ohem_b256_nms07', 31.8, 'Table 1(d), R101'),
        _paper('table1d_ohem_b128_nms07', 31.1, 'Table 1(d), R101'),
        _paper('table1d_ohem_b512_nms05', 27.6, 'Table 1(d), R101'),
        _paper('table1d_ohem_1to3_b128_nms05', 31.1, 'Table 1(d), R101'),
    )),
    Suite('appendix', "FL* (the paper's Appendix A) beside focal loss and cross entropy", (
        _paper('appendix_fl_star_gamma2_beta1', None, ''),
        _paper('appendix_fl_star_gamma4_beta0', None, ''),
        _paper(_FL, 34.0, 'Table 1(b)'),
        _paper('table1a_ce_alpha75', 31.1, 'Table 1(a)'),
    )),
    Suite('ssd', 'SSD300 with 1:3 hard negative mining vs SSD300 with focal loss', (
        SuiteEntry('configs/ssd/ssd300_coco_mining.py', 25.5, 'mmdet model zoo'),
        SuiteEntry('configs/ssd/ssd300_coco_mining_min_neg.py'),
        SuiteEntry('configs/ssd/ssd300_coco_focal.py'),
    )),
    Suite('negatives', 'how hard to mine negatives: hard, soft at several temperatures and on '
          'a schedule, none, focal, focal + mining, GHM-C, PISA, DR Loss', (
        *(SuiteEntry(f'configs/negatives/retinanet_r18_quick_{c}.py', scales=QUICK_SCALES)
          for c in ('ce_hard1to3', 'ce_soft_t01', 'ce_soft_t1', 'ce_soft_t10',
                    'ce_soft_t100', 'ce_alpha75', 'focal', 'focal_hard1to3', 'ghmc',
                    # the temperature schedules; PISA and DR Loss as outside references
                    'ce_soft_t10_to_hard', 'ce_hard_to_soft_t10', 'pisa', 'dr_loss')),
        # The same grid at the paper's Table 1 setting (R50-FPN, 600 px), and SSD300.
        *(SuiteEntry(f'configs/negatives/retinanet_r50_fpn_600px_1x_coco_{c}.py',
                     scales=COCO_SCALES)
          for c in ('ce_hard1to3', 'ce_soft_t01', 'ce_soft_t1', 'ce_soft_t10',
                    'ce_soft_t100', 'ce_alpha75', 'focal', 'focal_hard1to3', 'ghmc',
                    # the temperature schedules; PISA and DR Loss as outside references
                    'ce_soft_t10_to_hard', 'ce_hard_to_soft_t10', 'pisa', 'dr_loss')),
        SuiteEntry('configs/ssd/ssd300_coco_mining.py', 25.5, 'mmdet model zoo',
                   scales=COCO_SCALES),
        SuiteEntry('configs/ssd/ssd300_coco_mining_soft.py', scales=COCO_SCALES),
    )),
)}

# The orderings each report checks, wherever both sides were run (plugin.repro.report).
FOCAL_LOSS = _FL
ALPHA_BALANCED_CE = tuple(f'table1a_ce_alpha{a}' for a in
                          ('10', '25', '50', '75', '90', '99', '999')) + (
    'table1b_fl_gamma0_alpha75',)
HARD_NEGATIVE_1TO3 = 'table1d_ce_hard_negative_1to3'
OHEM = tuple(f'table1d_ohem_{r}b{b}_nms{n}' for r in ('', '1to3_')
             for b in (128, 256, 512) for n in ('05', '07'))
_NEG = 'retinanet_r18_quick_'
_SOFT = tuple(f'{_NEG}ce_soft_t{t}' for t in ('01', '1', '10', '100'))


@dataclass(frozen=True)
class Claim:
    """The best run (in mean AP) among the ``better`` configs above the best among ``worse``.
    A best-of-several side is chosen on the same seeds, so its margin is optimistic."""

    text: str
    better: tuple[str, ...]
    worse: tuple[str, ...]


CLAIMS = (
    Claim("the paper: focal loss (gamma 2, alpha .25) above the best alpha-balanced CE",
          (FOCAL_LOSS,), ALPHA_BALANCED_CE),
    Claim("the paper: focal loss above CE with 1:3 hard negative mining", (FOCAL_LOSS,),
          (HARD_NEGATIVE_1TO3,)),
    Claim("the paper: focal loss above the best OHEM", (FOCAL_LOSS,), OHEM),
    Claim("negatives: soft mining at its best temperature above hard 1:3 mining", _SOFT,
          (f'{_NEG}ce_hard1to3',)),
    Claim("negatives: hard 1:3 mining above no mining (alpha-balanced CE)",
          (f'{_NEG}ce_hard1to3',), (f'{_NEG}ce_alpha75',)),
    Claim("negatives: focal loss above soft mining at its best temperature", (f'{_NEG}focal',),
          _SOFT),
    Claim("negatives: focal loss + 1:3 mining above focal loss alone",
          (f'{_NEG}focal_hard1to3',), (f'{_NEG}focal',)),
    Claim("negatives: GHM-C above focal loss (the GHM paper's claim)", (f'{_NEG}ghmc',),
          (f'{_NEG}focal',)),
)


# Confirmatory comparisons of the negatives grid (quick scale, 600 steps), declared on
# 2026-12-06 before any of their seeds ran. The soft temperature is the best of four on seeds
# 0-4 (T 10, mean AP .387; docs/results/quick/negatives); the fresh seeds 5-9 alone test them.
CONFIRMATORY_SEEDS = (5, 6, 7, 8, 9)
# Above / below only where the mean paired difference lies beyond this many standard errors
# of that mean; otherwise "not separated".
SEPARATION_THRESHOLD_SE = 2.0
_HARD, _BEST_SOFT = f'{_NEG}ce_hard1to3', f'{_NEG}ce_soft_t10'
_SOFT_TO_HARD, _HARD_TO_SOFT = f'{_NEG}ce_soft_t10_to_hard', f'{_NEG}ce_hard_to_soft_t10'


@dataclass(frozen=True)
class Confirmation:
    """A comparison declared before the seeds that test it: ``first`` minus ``second`` in AP,
    paired by seed over :data:`CONFIRMATORY_SEEDS` only."""

    text: str
    first: str
    second: str


CONFIRMATIONS = (
    Confirmation('soft mining at the best temperature of seeds 0-4 (T 10) vs hard 1:3 mining',
                 _BEST_SOFT, _HARD),
    Confirmation('focal loss vs soft mining at T 10', f'{_NEG}focal', _BEST_SOFT),
    Confirmation('temperature schedule T 10 -> 0 (soft to hard) vs its start, constant T 10',
                 _SOFT_TO_HARD, _BEST_SOFT),
    Confirmation('temperature schedule T 10 -> 0 (soft to hard) vs its end, hard 1:3 mining',
                 _SOFT_TO_HARD, _HARD),
    Confirmation('temperature schedule T 0 -> 10 (hard to soft) vs its start, hard 1:3 mining',
                 _HARD_TO_SOFT, _HARD),
    Confirmation('temperature schedule T 0 -> 10 (hard to soft) vs its end, constant T 10',
                 _HARD_TO_SOFT, _BEST_SOFT),
    Confirmation('DR Loss vs soft mining at T 10', f'{_NEG}dr_loss', _BEST_SOFT),
)


def get_suite(name: str) -> Suite:
    """The suite called ``name``; a clear error naming the allowed ones otherwise."""
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; allowed: {', '.join(SUITES)}")
    return SUITES[name]
