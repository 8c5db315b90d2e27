import os
import sys
from pathlib import Path

import pytest

# Kernels run eagerly unless a test opts in (compiling costs ~30 s per kernel on 2 cores).
os.environ.setdefault('PLUGIN_COMPILE', '0')
sys.path.insert(0, str(Path(__file__).parent))

try:  # models in tests are built outside a Runner: set mmdet's default scope once
    from mmdet.utils import register_all_modules
except ImportError:
    pass
else:
    import logging

    from mmengine.logging import MMLogger
    register_all_modules()
    # init_weights logs one line per parameter
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)


@pytest.fixture
def compiled(monkeypatch):
    """Run the fused kernels compiled, as in training."""
    from plugin.ops import fusion
    monkeypatch.setenv('PLUGIN_COMPILE', '1')
    monkeypatch.setattr(fusion, '_compile_failed', False)
