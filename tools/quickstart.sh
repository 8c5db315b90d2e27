#!/usr/bin/env bash
# The main job on the embedded default: generate the quick-start dataset (once), train the
# quick-start RetinaNet from scratch with the plugin's focal loss, and evaluate it (COCO AP).
# Extra arguments go to `mim train` (e.g. --cfg-options train_cfg.max_iters=200).
set -euo pipefail
cd "$(dirname "$0")/.."
# PyTorch's CPU allocator asks for transparent huge pages for large tensors: page faults on
# fresh gradient buffers were half the loss time here (docs/benchmarks.md, Huge pages).
export THP_MEM_ALLOC_ENABLE="${THP_MEM_ALLOC_ENABLE:-1}"
[ -f data/generated/annotations/instances_val.json ] \
  || .venv/bin/python tools/generate_data.py --out data/generated
exec .venv/bin/mim train mmdet configs/quickstart/retinanet_r18_quickstart.py \
  --work-dir work_dirs/quickstart "$@"
