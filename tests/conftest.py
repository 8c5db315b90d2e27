import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Set for the whole run (PLUGIN_COMPILE=0: no compiler here), compiled tests are skipped.
_NO_COMPILER = os.environ.get('PLUGIN_COMPILE') == '0'
# These start what a user starts (tools, training) in subprocesses: compiled, as for the user.
_USER_PATH_MODULES = {'test_quickstart', 'test_benchmarks'}

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


@pytest.fixture(autouse=True)
def _readable_path_by_default(request, monkeypatch):
    """In-process tests run the readable formulas unless they ask for ``compiled`` or
    ``kernels`` (compiling costs ~10-30 s per kernel and signature on 2 cores)."""
    if request.module.__name__ in _USER_PATH_MODULES or 'compiled' in request.fixturenames:
        return
    monkeypatch.setenv('PLUGIN_COMPILE', '0')


@pytest.fixture
def compiled(monkeypatch):
    """Run the fused kernels compiled, as in training; a fallback to eager is an error."""
    if _NO_COMPILER:
        pytest.skip('PLUGIN_COMPILE=0 for this run')
    import torch
    monkeypatch.setenv('PLUGIN_COMPILE', 'strict')
    # dynamo's recompile limit would otherwise run a frame eagerly without an error
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


@pytest.fixture
def kernels(monkeypatch):
    """Run the fused kernels eagerly (what runs where compiling a kernel failed)."""
    from plugin.ops import fast
    monkeypatch.setattr(fast, 'applies', lambda inputs: inputs.numel() > 0)


@pytest.fixture(params=['readable', 'kernels'])
def path(request):
    """Both eager paths: the readable formulas and the fused kernels run eagerly."""
    if request.param == 'kernels':
        request.getfixturevalue('kernels')
    return request.param
