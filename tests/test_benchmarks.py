"""The benchmark tools run end to end at tiny sizes, on the compiled kernels the user runs
(their figures are not asserted)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('args', [
    ['tools/benchmark_losses.py', '--anchors', '500', '--classes', '8', '--repeats', '1'],
    ['tools/benchmark_mining.py', '--images', '2', '--retina-anchors', '2000', '--repeats', '1'],
    # It also checks that its selections equal mmcv's NMS, image by image.
    ['tools/benchmark_ohem.py', '--images', '2', '--repeats', '1'],
], ids=['losses', 'mining', 'ohem'])
def test_benchmark_prints_its_table(args):
    env = dict(os.environ)
    if env.get('PLUGIN_COMPILE') != '0':  # a kernel that falls back to eager fails the run
        env['PLUGIN_COMPILE'] = 'strict'
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '| variant | median ms |' in out.stdout and 'x faster' in out.stdout
    if env['PLUGIN_COMPILE'] == 'strict' and 'losses' in args[0]:
        assert 'sigmoid_focal.value_and_grad compiled' in out.stdout
