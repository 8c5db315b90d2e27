"""Test a checkpoint with the plugin registered; same flags as MMDetection's tools/test.py.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show]
                         [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...] [--launcher ...]
"""

import _runtime  # noqa: F401  (first, before torch loads)
import plugin  # noqa: F401  (registrations and the checkpoint-loading fix)
from plugin.cli import run_test

if __name__ == '__main__':
    raise SystemExit(run_test())
