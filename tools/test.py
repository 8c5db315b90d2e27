"""Test a checkpoint with the plugin registered; same flags as MMDetection's tools/test.py.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show]
                         [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...] [--launcher ...]
"""

import _runtime  # noqa: F401  (first, before torch loads)
from _errors import explaining_unknown_types
import plugin  # noqa: F401  (registrations and the checkpoint-loading fix)
from plugin.compat import allow_cpu_launch, exit_after
from plugin.mmdet_tools import run_test

if __name__ == '__main__':
    allow_cpu_launch()  # torchrun ... --launcher pytorch without CUDA
    # multi-process: no finalization; every way out has a deadline
    exit_after(lambda: explaining_unknown_types(run_test))
