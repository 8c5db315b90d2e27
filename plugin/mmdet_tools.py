"""Entry points behind ``tools/train.py`` and ``tools/test.py``: MMDetection's own scripts.

One training route: these run the ``tools/train.py`` / ``tools/test.py`` that ship with mmdet
(what ``mim train mmdet`` runs), with the plugin imported, so configs need no
``custom_imports``. What they add, because mmdet's scripts lack it:
- a config, checkpoint or ``--out`` file that does not exist (or is not a pickle) ends in a
  one-line error instead of a traceback;
- a missing dataset ends in one line naming ``tools/generate_data.py``
  (:class:`plugin.data.errors.MissingDataError`);
- checkpoints that mmengine saves load under torch's ``weights_only`` default
  (:func:`plugin.compat.allow_mmengine_checkpoints`);
- ``tools/test.py`` loads its checkpoint strictly: one from another model is a one-line
  error naming the first mismatch, not an evaluation of partly random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import runpy
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from plugin.compat import allow_mmengine_checkpoints
from plugin.data.errors import MissingDataError

__all__ = ['run_test', 'run_train']


def _mmdet_script(name: str) -> dict:
    import mmdet
    path = Path(mmdet.__file__).parent / '.mim' / 'tools' / f'{name}.py'
    if not path.is_file():
        sys.exit(f'error: {path} is missing; install mmdet from PyPI (pip or mim), which '
                 f'ships its tools')
    return runpy.run_path(str(path), run_name=f'mmdet_tools_{name}')


def _run(name: str, argv: Sequence[str] | None,
         check: Callable[[argparse.Namespace], None]) -> int:
    """mmdet's ``tools/NAME.py`` with ``argv``: arguments checked first, then its main()."""
    allow_mmengine_checkpoints()
    script = _mmdet_script(name)
    saved = sys.argv
    sys.argv = [f'tools/{name}.py', *(sys.argv[1:] if argv is None else argv)]
    try:
        args = script['parse_args']()
        check(args)
        strict = name == 'test' and not args.tta  # TTA wraps the model: keys differ
        with _strict_checkpoint_loading(strict):
            script['main']()
    except MissingDataError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except _CheckpointMismatch as err:
        print(f'error: checkpoint {args.checkpoint!r} does not fit the model of {args.config!r}'
              f' (trained with another config?): {err}', file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


class _CheckpointMismatch(Exception):
    """A checkpoint's weights do not fit the model (names or shapes)."""


@contextlib.contextmanager
def _strict_checkpoint_loading(strict: bool) -> Iterator[None]:
    """tools/test.py evaluates the checkpoint it is given: mmengine loads non-strictly, so one
    from another model would only log a size mismatch and evaluate partly random weights."""
    if not strict:
        yield
        return
    from mmengine.runner import Runner
    load = Runner.load_checkpoint

    def load_strictly(self, filename, *args, **kwargs):
        kwargs['strict'] = True
        try:
            return load(self, filename, *args, **kwargs)
        except RuntimeError as err:
            # mmengine's message: a header line, then one line per mismatch
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise _CheckpointMismatch(lines[1] if len(lines) > 1 else str(err)) from err

    Runner.load_checkpoint = load_strictly
    try:
        yield
    finally:
        Runner.load_checkpoint = load


def _require_file(path: str, what: str, prog: str) -> None:
    # mmengine also loads http(s)://, open-mmlab://, torchvision:// ...; those are its to check.
    if '://' not in path and not Path(path).is_file():
        _fail(prog, f"{what} '{path}' does not exist")


def _fail(prog: str, message: str) -> None:
    print(f'usage: see {prog} --help\n{prog}: error: {message}', file=sys.stderr)
    raise SystemExit(2)


def _check_train(args: argparse.Namespace) -> None:
    _require_file(args.config, 'config file', 'tools/train.py')
    if args.resume not in (None, 'auto'):
        _require_file(args.resume, 'checkpoint to resume from', 'tools/train.py')


def _check_test(args: argparse.Namespace) -> None:
    _require_file(args.config, 'config file', 'tools/test.py')
    _require_file(args.checkpoint, 'checkpoint', 'tools/test.py')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        _fail('tools/test.py', f"--out must name a .pkl or .pickle file, got '{args.out}'")


def run_train(argv: Sequence[str] | None = None) -> int:
    """``tools/train.py``: mmdet's training script; returns the exit status."""
    return _run('train', argv, _check_train)


def run_test(argv: Sequence[str] | None = None) -> int:
    """``tools/test.py``: mmdet's test script; returns the exit status."""
    return _run('test', argv, _check_test)
