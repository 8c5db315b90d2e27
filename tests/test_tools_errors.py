"""tools/_errors.py: a config naming an unknown type ends in one line naming the closest
registered types (mmengine's own KeyError is the input)."""
import sys
from pathlib import Path

import pytest
from mmdet.registry import MODELS, TASK_UTILS

import plugin  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
from _errors import explaining_unknown_types, unknown_type_message  # noqa: E402


def _key_error(registry, cfg) -> KeyError:
    with pytest.raises(KeyError) as info:
        registry.build(cfg)
    return info.value


@pytest.mark.parametrize('registry,name,suggestion', [
    (MODELS, 'SigmoidFocalLos', "did you mean 'SigmoidFocalLoss'?"),
    (MODELS, 'EqualisedFocalLoss', "did you mean 'EqualizedFocalLoss' or"),
    (TASK_UTILS, 'HardNegSampler', "did you mean 'HardNegativeSampler'?"),
])
def test_misspelt_type_names_the_closest_registered_one(registry, name, suggestion):
    message = unknown_type_message(_key_error(registry, dict(type=name)))
    assert message.startswith(f"type '{name}' is not in mmdet's ") and suggestion in message


def test_unknown_type_without_close_name_and_other_key_errors(capsys):
    message = unknown_type_message(_key_error(MODELS, dict(type='Xyzzy')))
    assert 'did you mean' not in message and "custom_imports=dict(imports=['plugin'])" in message
    assert unknown_type_message(KeyError('some_key')) is None
    with pytest.raises(KeyError):
        explaining_unknown_types(lambda: {}['some_key'])
    assert explaining_unknown_types(lambda: MODELS.build(dict(type='SigmoidFocalLos'))) == 2
    assert capsys.readouterr().err.startswith("error: type 'SigmoidFocalLos'")


def test_a_checkpoint_from_another_model_is_one_line_not_an_evaluation(tmp_path):
    """tools/test.py loads its checkpoint strictly: 6-class weights under a 3-class config."""
    import os
    import subprocess

    import torch
    from mmengine.config import Config
    from train_runs import QUICKSTART, ROOT, generate_data, short_run_options

    cfg = Config.fromfile(str(QUICKSTART))
    model = MODELS.build(cfg.model)  # the quick-start model: 6 classes
    checkpoint = tmp_path / 'six_classes.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    data = generate_data(tmp_path / 'data')
    env = dict(os.environ, OMP_NUM_THREADS='1', PLUGIN_COMPILE='0')
    run = subprocess.run(
        [sys.executable, 'tools/test.py', str(QUICKSTART), str(checkpoint), '--work-dir',
         str(tmp_path / 'work'), *short_run_options(data, 1), 'model.bbox_head.num_classes=3'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, (run.stdout + run.stderr)[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint '{checkpoint}' does not fit the model of")
    assert 'size mismatch for bbox_head.retina_cls.weight' in last
    assert 'bbox_mAP' not in run.stdout + run.stderr
