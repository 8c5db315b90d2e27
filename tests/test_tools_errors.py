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
