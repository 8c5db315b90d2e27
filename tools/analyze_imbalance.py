"""Class imbalance of a detector on a data split, and the focal-loss paper's Figure 4.

    python tools/analyze_imbalance.py CONFIG CHECKPOINT|none [--split val|train]
        [--max-images N] [--gammas 0 0.5 1 2 5] [--alpha A] [--out DIR] [--cfg-options ...]

Prints positives and negatives per image and the share of the classification loss and of its
gradient from (easy) negatives per gamma; writes DIR/imbalance.json and DIR/figure4.png.
"""

import sys
from pathlib import Path

# Runs from a checkout without installing the plugin.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _runtime  # noqa: E402, F401  (before torch loads)

from plugin.repro.imbalance_cli import main  # noqa: E402

if __name__ == '__main__':
    raise SystemExit(main())
