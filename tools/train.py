"""Train a detector with the plugin registered; same flags as MMDetection's tools/train.py.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
                          [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Several processes, on GPUs (nccl) or on CPU (gloo, chosen when there is no CUDA device):

    torchrun --nproc_per_node 2 tools/train.py CONFIG --launcher pytorch
"""

import _runtime  # noqa: F401  (first, before torch loads)
from _errors import explaining_unknown_types
import plugin  # noqa: F401  (registrations and the checkpoint-loading fix)
from plugin.compat import allow_cpu_launch, exit_after, resume_complete_checkpoints
from plugin.mmdet_tools import run_train

if __name__ == '__main__':
    allow_cpu_launch()
    resume_complete_checkpoints()  # --resume after a crash mid-save
    # multi-process: no finalization; every way out has a deadline
    exit_after(lambda: explaining_unknown_types(run_train))
