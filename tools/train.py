"""Train a detector with the plugin registered; same flags as MMDetection's tools/train.py.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                          [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
"""

import _runtime  # noqa: F401  (first, before torch loads)
import plugin  # noqa: F401  (registrations and the checkpoint-loading fix)
from plugin.cli import run_train

if __name__ == '__main__':
    raise SystemExit(run_train())
