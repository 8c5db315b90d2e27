"""The compiled kernels (the default path in training): numerics, dynamic shapes, fallback."""
import warnings

import pytest
import torch
import reference as ref
from plugin.ops import fusion, sigmoid_focal_loss, softmax_focal_loss


def test_compiled_sigmoid_focal_matches_formula_without_recompiling(compiled):
    from torch._dynamo.utils import counters
    frames = []
    for num in (3000, 1700, 2511):  # anchor counts change from batch to batch
        x = (torch.randn(num, 8, dtype=torch.float64) * 3).requires_grad_()
        labels = torch.randint(0, 9, (num,))
        w = torch.rand(num, dtype=torch.float64)
        ours = sigmoid_focal_loss(x, labels, reduction='sum', weight=w)
        (g_ours,) = torch.autograd.grad(ours, x)
        expected = (ref.sigmoid_focal(x, ref.one_hot(labels, 8)) * w[:, None]).sum()
        (g_ref,) = torch.autograd.grad(expected, x)
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-12)
        frames.append(counters['frames']['ok'])
    assert fusion.first_compile_seconds()  # the kernels did compile
    assert frames[0] == frames[1] == frames[2], 'a new anchor count recompiled the kernels'


def test_no_compiler_falls_back_to_eager_with_one_warning(compiled, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError('no C++ compiler found')
        return run
    monkeypatch.setattr(torch, 'compile', broken_compile)
    kernel = fusion.FusedKernel(lambda x: x * 2)
    with pytest.warns(RuntimeWarning, match='torch.compile is unavailable'):
        assert kernel(torch.ones(3)).tolist() == [2, 2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert kernel(torch.ones(2)).tolist() == [2, 2]
    assert not fusion.compile_enabled()


def test_compiled_efl_statistics_match_the_gradient(compiled):
    from mmdet.registry import MODELS
    loss_fn = MODELS.build(dict(type='EqualizedFocalLoss', num_classes=6)).train()
    x = torch.randn(500, 6, requires_grad=True)
    labels = torch.randint(0, 7, (500,))
    loss_fn(x, labels, avg_factor=20.0).backward()
    t = ref.one_hot(labels, 6).float()
    torch.testing.assert_close(loss_fn.pos_grad, (x.grad.abs() * t).sum(0))
    torch.testing.assert_close(loss_fn.neg_grad, (x.grad.abs() * (1 - t)).sum(0))


@torch._dynamo.config.patch(recompile_limit=2)  # restored afterwards (monkeypatch deletes it)
def test_many_signatures_stay_compiled(compiled):
    # dynamo's recompile limit is per code object: dtypes, target kinds and parameters
    # beyond it must not push a loss into eager mode.
    from torch._dynamo.utils import counters
    signatures = [(torch.float32, True, 1.0), (torch.float32, False, 1.0),
                  (torch.float64, True, 3.0)]
    for dtype, hard, gamma in signatures:
        x = torch.randn(64, 5, dtype=dtype, requires_grad=True)
        labels = torch.randint(0, 6, (64,))
        targets = labels if hard else ref.one_hot(labels, 5).to(dtype)
        before = counters['frames']['ok']
        loss = sigmoid_focal_loss(x, targets, gamma=gamma, reduction='sum')
        loss.backward()
        assert counters['frames']['ok'] > before, f'{dtype} {hard} {gamma} ran eagerly'
        expected = ref.sigmoid_focal(x.detach().double(), ref.one_hot(labels, 5), gamma=gamma)
        torch.testing.assert_close(loss.double(), expected.sum(), rtol=1e-5, atol=0)


def test_the_wrapper_adds_no_full_size_copies():
    # Around the kernels (here trivial ones), a bfloat16 loss must not convert its logits:
    # a float32 copy would double the memory the fused kernels save.
    from torch.utils._python_dispatch import TorchDispatchMode

    class FullSizeOps(TorchDispatchMode):
        def __init__(self, shape):
            super().__init__()
            self.shape, self.seen = shape, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.shape == self.shape \
                    and func is not torch.ops.aten.detach.default:  # a view, not a copy
                self.seen.append(str(func))
            return out

    kernels = fusion.LossKernels(lambda x, t, w, r: x.sum(),
                                 lambda x, t, w, g, r: torch.ones_like(x))
    x = torch.randn(64, 5, dtype=torch.bfloat16, requires_grad=True)
    with FullSizeOps(x.shape) as mode:
        fusion.fused_loss(kernels, x, torch.zeros(64, dtype=torch.long), None, 'sum', (),
                          normalizer=4.0).backward()
    assert mode.seen == ['aten.ones_like.default'], mode.seen  # the gradient, nothing else


def test_compiled_float32_matches_float64_elementwise(compiled):
    # The compiled float32 loop uses the log1p polynomial: still within ~16 ulp everywhere.
    x = torch.linspace(-15, 15, 3001).reshape(-1, 1).repeat(1, 2)  # naive reference exact here
    labels = torch.tensor([0, 2]).repeat(x.shape[0] // 2 + 1)[:x.shape[0]]
    xf = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # no eager fallback
        ours = sigmoid_focal_loss(xf, labels, reduction='none')
    ours.sum().backward()
    x64 = x.double().requires_grad_()
    expected = ref.sigmoid_focal(x64, ref.one_hot(labels, 2))
    expected.sum().backward()
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(xf.grad.double(), x64.grad, rtol=1e-6, atol=0)


def test_compiled_softmax_focal_matches_float64_where_the_label_shift_overflows(compiled):
    # The compiled CPU loop sums exp(x - x_label) in one sweep. Rows where a logit exceeds the
    # label's by 200 overflow that sum: they must be recomputed, not returned as inf or nan.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 7, generator=g) * 3
    labels = torch.randint(0, 7, (600,), generator=g)
    x[:4, 0], labels[:4] = 200.0, 3
    x[4:8, 5], labels[4:8] = 200.0, 5  # the label far ahead: every other term underflows
    xf = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # no eager fallback
        ours = softmax_focal_loss(xf, labels, 0.25, 2.0, 'none')
    ours.sum().backward()
    x64 = x.double().requires_grad_()
    expected = ref.softmax_focal(x64, labels, [0.25] * 6 + [0.75], 2.0)
    expected.sum().backward()
    assert ours[:4].isfinite().all()
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xf.grad.double(), x64.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('reduction', ['sum', 'none'])
def test_compiled_class_index_targets_with_per_entry_weights(compiled, reduction):
    x = torch.randn(300, 5, dtype=torch.float64) * 3
    labels = torch.randint(0, 6, (300,))
    w = torch.rand(300, 5, dtype=torch.float64)
    xf = x.clone().requires_grad_()
    ours = sigmoid_focal_loss(xf, labels, 0.25, 2.0, reduction, weight=w)
    ours.sum().backward()
    x64 = x.clone().requires_grad_()
    expected = ref.sigmoid_focal(x64, ref.one_hot(labels, 5)) * w
    expected = expected.sum() if reduction == 'sum' else expected
    expected.sum().backward()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(xf.grad, x64.grad, rtol=1e-6, atol=1e-12)
