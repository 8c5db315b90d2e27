"""Determinism: two quick-start trainings with the same seed log the same loss sequence."""
from __future__ import annotations

from train_runs import QUICKSTART, check, generate_data, logged_steps, short_run_options, train

MAX_ITERS = 2


def test_same_seed_same_losses(tmp_path):
    data = generate_data(tmp_path / 'data')
    options = short_run_options(data, MAX_ITERS)
    runs = []
    for name in ('first', 'second'):
        check(train([str(QUICKSTART), '--work-dir', str(tmp_path / name), *options]))
        runs.append(logged_steps(tmp_path / name))
    first, second = runs
    assert sorted(first) == list(range(1, MAX_ITERS + 1))
    # Bitwise on CPU: same data order, same flips, same initial weights, same arithmetic.
    for step in first:
        assert [first[step][key] for key in ('loss_cls', 'loss_bbox', 'grad_norm')] == \
            [second[step][key] for key in ('loss_cls', 'loss_bbox', 'grad_norm')], step
    # A sequence that moves: a run that learned nothing would also repeat itself.
    assert len({step['loss'] for step in first.values()}) == MAX_ITERS
