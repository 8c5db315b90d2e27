"""Installing into an existing environment, as README "Installation" documents it: the
plugin's wheel with ``pip install --no-deps`` into a virtual environment that already has
torch, mmcv, mmdet and mmengine (here: sees the project's ``.venv`` through a ``.pth`` line),
then mmdet's own ``train.py`` on a config that loads the plugin through ``custom_imports``,
run from a folder outside the repository.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from train_runs import QUICKSTART, generate_data

ROOT = Path(__file__).resolve().parents[1]

# A user's config: the repository's quick-start model with the plugin's mining head and
# sampler (registered only if `import plugin` ran), loaded by custom_imports.
USER_CONFIG = f"""
_base_ = {str(QUICKSTART)!r}
custom_imports = dict(imports=['plugin'], allow_failed_imports=False)
model = dict(bbox_head=dict(type='MiningRetinaHead'),
             train_cfg=dict(sampler=dict(type='HardNegativeSampler', mode='soft')))
"""


def _run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f'{cmd}\n{log[-4000:]}'
    return log


@pytest.mark.slow
def test_wheel_installs_without_deps_and_trains_through_custom_imports(tmp_path):
    # Built from a copy of what the wheel is made of, so the build leaves nothing in the tree.
    source = tmp_path / 'source'
    shutil.copytree(ROOT / 'plugin', source / 'plugin',
                    ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('setup.cfg', 'pyproject.toml', 'README.md', 'LICENSE'):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / 'wheels'
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
          '--wheel-dir', wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob('mmdet_imbalance_plugin-*.whl')

    # The user's environment: its own interpreter and site-packages, plus the packages that
    # are already there (the project's torch/mmcv/mmdet). A path line in a .pth adds that
    # folder only; the .pth files in it (the repository's editable install) are not run.
    env_dir = tmp_path / 'user-env'
    _run([sys.executable, '-m', 'venv', env_dir], cwd=tmp_path)
    python = env_dir / 'bin' / 'python'
    purelib = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    user_site = Path(_run([python, '-c', purelib], cwd=tmp_path).strip())
    (user_site / 'existing_stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(OMP_NUM_THREADS='1', PLUGIN_COMPILE='0', PYTHONNOUSERSITE='1')

    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    probe = 'import plugin, torch, mmcv, mmdet; print(plugin.__file__)'
    _run([python, '-m', 'pip', 'install', '--no-deps', '--no-index', wheel], cwd=outside,
         env=env)
    plugin_file = Path(_run([python, '-c', probe], cwd=outside, env=env).strip())
    assert plugin_file.is_relative_to(user_site), (plugin_file, user_site)

    data = generate_data(tmp_path / 'data')
    config = outside / 'my_config.py'
    config.write_text(USER_CONFIG)
    mmdet_train = Path(sysconfig.get_paths()['purelib']) / 'mmdet' / '.mim' / 'tools' / 'train.py'
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    log = _run([python, mmdet_train, config, '--work-dir', outside / 'work', '--cfg-options',
                'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
                'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
                'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
                'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
                # after 3 steps every score sits near the prior: keep them, so COCO has results
                'model.test_cfg.score_thr=0.0',
                f'val_evaluator.ann_file={data}/annotations/instances_val.json',
                *[f'{loader}.dataset.data_root={data}/' for loader in loaders]],
               cwd=outside, env=env)
    assert 'Iter(train) [3/3]' in log, log[-3000:]
    assert 'coco/bbox_mAP' in log, log[-3000:]
    assert (outside / 'work' / 'iter_3.pth').exists()


def _readme_versions() -> dict[str, tuple[str, str]]:
    """README "Installation": package -> (tested, declared), from its versions table."""
    rows = re.findall(r'^\| (Python|torch|mmengine|mmcv|mmdet) \| ([^|]+) \| ([^|]+) \|$',
                      (ROOT / 'README.md').read_text(), flags=re.M)
    return {name: (tested.strip(), declared.strip()) for name, tested, declared in rows}


def test_readme_versions_are_the_ones_setup_pins_and_setup_cfg_declares():
    readme = _readme_versions()
    setup_sh = (ROOT / 'tools' / 'setup.sh').read_text()
    pinned = dict(re.findall(r'\b(torch|mmcv|mmengine|mmdet)==([\w.]+)', setup_sh))
    for name in ('torch', 'mmcv', 'mmengine', 'mmdet'):
        assert readme[name][0].startswith(pinned[name]), (name, readme[name], pinned[name])

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    declared = {re.match(r'[\w-]+', line).group(): line for line in
                (cfg['options']['install_requires'] + cfg['options.extras_require']['mmdet'])
                .split()}
    assert readme['Python'][1] == cfg['options']['python_requires'].replace('>=', '>= ')
    assert readme['torch'][1] == declared['torch'].replace('torch>=', '>= ')
    assert readme['mmengine'][1] == declared['mmengine'].split('==')[1]
    assert readme['mmdet'][1] == declared['mmdet'].split('==')[1]
    assert readme['mmcv'][1] == declared['mmcv'].replace('mmcv>=', '>= ').replace(',<', ', < ')
    assert readme['Python'][0] == f'{sys.version_info.major}.{sys.version_info.minor}'
