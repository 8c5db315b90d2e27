"""Reproduce the focal-loss paper's comparisons: a suite of configs over seeds at a scale.

    python tools/reproduce.py SUITE --scale quick|coco128|coco --seeds 0 1 2 --out DIR
                              [--data-root DIR] [--only NAME ...] [--iters N]
                              [--launcher none|pytorch|slurm --gpus N] [--dry-run]
                              [--report-only]

Suites: table1a, table1b, table1d, appendix, ssd, negatives (plugin/repro/suites.py).
Finished runs are skipped and interrupted ones resume: run the same command again.
"""

import sys
from pathlib import Path

# Runs from a checkout without installing the plugin.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.repro.reproduce_cli import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
