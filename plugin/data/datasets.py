"""``CheckedCocoDataset``: mmdet's ``CocoDataset`` that names a missing path and its fix.

Without it a missing ``data_root`` surfaces as a bare "No such file" from deep inside
mmengine's file I/O, with nothing saying which config field is wrong or how to get the data.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .errors import MissingDataError

_FIX = (
    'If this is the quick-start data, generate it with '
    '`python tools/generate_data.py --out {root}`; otherwise point the config at your '
    'data (data_root, ann_file and data_prefix of the dataloaders and ann_file of the '
    'evaluators, see configs/_base_/datasets/quickstart_coco.py).'
)


def missing_path_message(what: str, path: str, data_root: str | None) -> str:
    """The message for a missing ``path``: what it is, where it was looked for, the fix."""
    root = data_root or 'data/generated'
    where = Path(path) if os.path.isabs(path) else Path.cwd() / path
    return f'{what} {path!r} does not exist (looked for {where}). ' + _FIX.format(root=root)


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` that checks its local paths before loading the annotations."""

    def load_data_list(self) -> list[dict]:
        """Check data_root, ann_file and the image folder, then load as ``CocoDataset``."""
        # Remote storage (backend_args, s3://...) is left to the file backend to report.
        if self.backend_args is None and '://' not in str(self.ann_file):
            checks = [('data_root', self.data_root, True),
                      ('annotation file', self.ann_file, False),
                      ('image folder', self.data_prefix.get('img', ''), True)]
            for what, path, is_dir in checks:
                if path and not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
                    raise MissingDataError(missing_path_message(what, path, self.data_root))
        return super().load_data_list()
