"""Drop-in for detectron2: the plugin's functions against fvcore's own, same arguments in the
same order (``fvcore.nn.sigmoid_focal_loss`` / ``sigmoid_focal_loss_star``)."""
import pytest
import torch

from plugin.ops import focal_loss_star, sigmoid_focal_loss

fvcore_nn = pytest.importorskip('fvcore.nn')

CASES = [(0.25, 2.0, 'sum'), (-1, 2.0, 'none'), (0.5, 0.5, 'mean'), (0.75, 1.0, 'sum')]


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 7, generator=g) * 4
    targets = (torch.rand(300, 7, generator=g) < 0.1).float()
    return x, targets


def _compare(ours_fn, theirs_fn, args):
    x, targets = _inputs()
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = ours_fn(ours_x, targets, *args), theirs_fn(theirs_x, targets, *args)
    ours.sum().backward()
    theirs.sum().backward()
    # fvcore computes in float32 with its own rounding: a few float32 ulps apart.
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=2e-5, atol=1e-7)


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('alpha,gamma,reduction', CASES)
def test_sigmoid_focal_loss_is_fvcores(alpha, gamma, reduction):
    _compare(sigmoid_focal_loss, fvcore_nn.sigmoid_focal_loss, (alpha, gamma, reduction))


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('alpha,gamma,reduction', CASES)
def test_focal_loss_star_is_fvcores(alpha, gamma, reduction):
    _compare(focal_loss_star, fvcore_nn.sigmoid_focal_loss_star, (alpha, gamma, reduction))


@pytest.mark.usefixtures('path')
def test_fvcore_defaults_of_the_star_loss():
    # sigmoid_focal_loss_star(inputs, targets) alone: alpha=-1 (none), gamma=1, no shift.
    _compare(focal_loss_star, fvcore_nn.sigmoid_focal_loss_star, ())


def test_compiled_is_fvcores(compiled):
    # detectron2's RetinaNet call, on the compiled kernels.
    _compare(sigmoid_focal_loss, fvcore_nn.sigmoid_focal_loss_jit, (0.25, 2.0, 'sum'))
