"""Class-imbalance tools for MMDetection 3.x one-stage detectors.

``import plugin`` registers every component into mmdet's registries (``custom_imports``
works in any MMDet config) and lets torch load the checkpoints mmengine saves.
:mod:`plugin.ops` is the pure-PyTorch core and imports without mmdet.
"""
from importlib.util import find_spec

from . import ops
from .compat import allow_mmengine_checkpoints

__version__ = '0.1.0'

allow_mmengine_checkpoints()
if find_spec('mmdet') is not None:  # the core works without MMDetection
    from . import models  # noqa: F401
    from .data import datasets  # noqa: F401

__all__ = ['ops', 'allow_mmengine_checkpoints', '__version__']
