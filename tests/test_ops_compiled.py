"""The compiled kernels (the default path in training): numerics, dynamic shapes, fallback."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import reference as ref
from plugin.ops import (equalized_focal_loss, fast, focal_loss_star, poly1_focal_loss,
                        sigmoid_focal_loss, softmax_focal_loss)

ROOT = Path(__file__).resolve().parents[1]


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
    kernel = fast.SIGMOID_FOCAL.value_and_grad
    assert kernel.compile_seconds and kernel.failure is None  # this kernel did compile
    assert frames[0] == frames[1] == frames[2], 'a new anchor count recompiled the kernels'


def _double(x):
    return x * 2


def test_a_failing_kernel_falls_back_alone_with_one_warning(compiled, monkeypatch, tmp_path,
                                                            caplog):
    # Compiling fails, also when retried in a fresh cache directory: this kernel runs eagerly
    # with one warning naming the cause, the directory and the fix; other kernels still
    # compile (no process-wide latch).
    monkeypatch.setenv('PLUGIN_COMPILE', '1')
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'cache'))
    real_compile, attempts = torch.compile, []

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            attempts.append(fn)
            raise RuntimeError('no C++ compiler found')
        return run
    monkeypatch.setattr(torch, 'compile', broken_compile)
    kernel = fast.CompiledKernel(_double, name='broken')
    with caplog.at_level(logging.WARNING, logger='plugin.ops.fast.compile'):
        assert kernel(torch.ones(3)).tolist() == [2, 2, 2]
        assert kernel(torch.ones(2)).tolist() == [2, 2]
    assert len(attempts) == 2, 'one retry, then eager for good'
    assert kernel.failure and 'no C++ compiler found' in kernel.failure
    (record,) = caplog.records
    assert 'no C++ compiler found' in record.message and 'PLUGIN_COMPILE=0' in record.message
    assert str(tmp_path / 'cache') in record.message
    assert 'plugin-inductor-' in record.message  # the fresh directory it tried
    assert fast.compile_enabled()
    monkeypatch.setattr(torch, 'compile', real_compile)
    other = fast.CompiledKernel(_double, name='other')
    assert other(torch.ones(2)).tolist() == [2, 2] and other.failure is None
    assert other.compile_seconds, 'another kernel still compiles'


def test_strict_mode_raises_instead_of_falling_back(compiled, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError('no C++ compiler found')
        return run
    monkeypatch.setattr(torch, 'compile', broken_compile)
    with pytest.raises(RuntimeError, match='no C[+][+] compiler'):
        fast.CompiledKernel(_double, name='strict')(torch.ones(3))


def test_compiled_efl_statistics_match_the_float64_formula(compiled):
    from mmdet.registry import MODELS
    loss_fn = MODELS.build(dict(type='EqualizedFocalLoss', num_classes=6)).train()
    x = torch.randn(500, 6, requires_grad=True)
    labels = torch.randint(0, 7, (500,))
    loss_fn(x, labels, avg_factor=20.0).backward()
    # The gradient of the float64 formula (no statistics yet: every gamma_j = gamma_b).
    x64 = x.detach().double().requires_grad_()
    t = ref.one_hot(labels, 6)
    eps = torch.finfo(torch.float32).eps  # mmdet's avg_factor epsilon
    loss64 = ref.equalized_focal(x64, t, torch.full((6,), 2.0, dtype=torch.float64)).sum()
    (g,) = torch.autograd.grad(loss64 / (20.0 + eps), x64)
    torch.testing.assert_close(loss_fn.pos_grad.double(), (g.abs() * t).sum(0), rtol=1e-5,
                               atol=1e-9)
    torch.testing.assert_close(loss_fn.neg_grad.double(), (g.abs() * (1 - t)).sum(0),
                               rtol=1e-5, atol=1e-9)


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

    loss = fast.FusedLoss(lambda x, t, w, s, *, reduction: x.sum(),
                          lambda x, t, w, s, *, reduction: torch.ones_like(x), name='trivial')
    x = torch.randn(64, 5, dtype=torch.bfloat16, requires_grad=True)
    with FullSizeOps(x.shape) as mode:
        loss(x, torch.zeros(64, dtype=torch.long), reduction='sum', normalizer=4.0).backward()
    assert mode.seen == ['aten.ones_like.default'], mode.seen  # the gradient, nothing else


def test_compiled_float32_matches_float64_elementwise(compiled):
    # The compiled float32 loop uses the log1p polynomial: still within ~16 ulp everywhere.
    x = torch.linspace(-15, 15, 3001).reshape(-1, 1).repeat(1, 2)  # naive reference exact here
    labels = torch.tensor([0, 2]).repeat(x.shape[0] // 2 + 1)[:x.shape[0]]
    xf = x.clone().requires_grad_()
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


TRUNCATION_SCRIPT = """
import torch
from plugin.ops.fast import CompiledKernel


def shifted(x):
    return x * 2 + 1


kernel = CompiledKernel(shifted)
print(kernel(torch.arange(4.0)).tolist(), kernel.failure, len(kernel.compile_seconds))
"""


def test_truncated_cache_entries_are_compiled_again_in_a_fresh_directory(compiled, tmp_path):
    # A process killed while compiling can leave truncated .so files in the cache; the next
    # process must compile the kernel again (once, in a fresh directory), not run eagerly.
    cache = tmp_path / 'cache'
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), PLUGIN_COMPILE='1',
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))

    def run():
        out = subprocess.run([sys.executable, '-c', TRUNCATION_SCRIPT], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out
    assert run().stdout.split('\n')[0] == '[1.0, 3.0, 5.0, 7.0] None 1'
    libraries = list(cache.rglob('*.so'))
    assert libraries, 'the first run left compiled kernels in the cache'
    for library in libraries:
        library.write_bytes(library.read_bytes()[:64])
    second = run()
    assert second.stdout.split('\n')[0] == '[1.0, 3.0, 5.0, 7.0] None 1', second.stderr[-3000:]
    assert 'compiled in a fresh one' in second.stderr and str(cache) in second.stderr


FAMILY = {
    'sigmoid': (lambda x, y, w: sigmoid_focal_loss(x, y, 0.25, 2.0, 'sum', weight=w),
                lambda x, t: ref.sigmoid_focal(x, t, 0.25, 2.0)),
    'poly1': (lambda x, y, w: poly1_focal_loss(x, y, 0.25, 2.0, 'sum', epsilon=1.0, weight=w),
              lambda x, t: ref.poly1_focal(x, t, 0.25, 2.0, 1.0)),
    'fl-star': (lambda x, y, w: focal_loss_star(x, y, 0.25, 2.0, 'sum', beta=1.0, weight=w),
                lambda x, t: ref.focal_star(x, t, 2.0, 1.0, 0.25)),
    'efl': (lambda x, y, w: equalized_focal_loss(x, y, GAMMAS, 2.0, 0.25, 'sum', weight=w),
            lambda x, t: ref.equalized_focal(x, t, GAMMAS, 2.0, 0.25)),
}
GAMMAS = torch.linspace(2.0, 6.0, 5, dtype=torch.float64)


@pytest.mark.parametrize('name', FAMILY)
def test_compiled_family_matches_formula(compiled, name):
    # One signature per loss (float64, class indices, per-row weight, sum): the compiled
    # kernels against the float64 formula, value and gradient.
    ours_fn, formula = FAMILY[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(700, 5, dtype=torch.float64, generator=g) * 3
    labels = torch.randint(0, 6, (700,), generator=g)
    w = torch.rand(700, dtype=torch.float64, generator=g)
    xf, x64 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ours_fn(xf, labels, w)
    ours.backward()
    expected = (formula(x64, ref.one_hot(labels, 5)) * w[:, None]).sum()
    expected.backward()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(xf.grad, x64.grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_compiled_half_precision_is_float32_exact_on_the_rounded_inputs(compiled, dtype):
    # As the eager test in test_ops_focal.py, on the compiled kernels.
    g = torch.Generator().manual_seed(2)
    rounded = (torch.randn(400, 6, generator=g) * 4).to(dtype)
    labels = torch.randint(0, 7, (400,), generator=g)
    x64 = rounded.double().requires_grad_()
    expected = ref.sigmoid_focal(x64, ref.one_hot(labels, 6))
    expected.sum().backward()
    xh = rounded.clone().requires_grad_()
    ours = sigmoid_focal_loss(xh, labels, reduction='none')
    ours.sum().backward()
    torch.testing.assert_close(ours.double(), expected.detach(), rtol=1e-6, atol=0)
    ulp = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dtype]
    torch.testing.assert_close(xh.grad.double(), x64.grad, rtol=ulp,
                               atol=float(torch.finfo(dtype).smallest_normal) * 2 ** -10)
