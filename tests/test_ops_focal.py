"""The core losses against independent float64 formulas (tests/reference.py)."""
import pytest
import torch
import reference as ref
from plugin.ops import (equalized_focal_gammas, equalized_focal_loss, focal_loss_star,
                        poly1_focal_loss, sigmoid_focal_loss, softmax_focal_loss)

torch.manual_seed(0)
N, C = 37, 6
RTOL = 1e-6


def _inputs(num=N, classes=C, scale=3.0):
    x = (torch.randn(num, classes, dtype=torch.float64) * scale).requires_grad_()
    labels = torch.randint(0, classes + 1, (num,))  # classes = background
    return x, labels


def _assert_value_and_grad(ours, reference, x):
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_ref,) = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(ours, reference, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=RTOL, atol=1e-12)


SIGMOID_CASES = [(0.25, 2.0), (0.75, 0.0), (None, 1.0), (0.5, 0.5), (0.1, 5.0),
                 ([0.1, 0.2, 0.3, 0.4, 0.5, 0.9], 2.0)]


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('alpha,gamma', SIGMOID_CASES)
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_sigmoid_focal_matches_formula(alpha, gamma, reduction):
    x, labels = _inputs()
    expected = ref.sigmoid_focal(x, ref.one_hot(labels, C), alpha, gamma)
    expected = {'none': expected, 'sum': expected.sum(), 'mean': expected.mean()}[reduction]
    _assert_value_and_grad(sigmoid_focal_loss(x, labels, alpha, gamma, reduction), expected, x)


@pytest.mark.usefixtures('path')
def test_sigmoid_focal_soft_targets_and_weight():
    x, _ = _inputs()
    t = torch.rand(N, C, dtype=torch.float64)
    w = torch.rand(N, dtype=torch.float64)
    expected = (ref.sigmoid_focal(x, t) * w[:, None]).sum()
    _assert_value_and_grad(sigmoid_focal_loss(x, t, reduction='sum', weight=w), expected, x)


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('weight_shape', ['row', 'entry'])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_class_index_targets_with_weights(weight_shape, reduction):
    # Class-index targets take a dense all-negative pass plus each row's label entry: weights
    # per row and per entry must reach that entry too, for every reduction.
    x, labels = _inputs()
    w = torch.rand(N, C, dtype=torch.float64) if weight_shape == 'entry' else torch.rand(
        N, dtype=torch.float64)
    w_full = w if w.dim() == 2 else w[:, None].expand(N, C)
    gammas = torch.linspace(2.0, 7.0, C, dtype=torch.float64)
    cases = [
        (sigmoid_focal_loss(x, labels, 0.25, 2.0, reduction, weight=w),
         ref.sigmoid_focal(x, ref.one_hot(labels, C), 0.25, 2.0)),
        (poly1_focal_loss(x, labels, 0.25, 2.0, reduction, epsilon=1.0, weight=w),
         ref.poly1_focal(x, ref.one_hot(labels, C), 0.25, 2.0, 1.0)),
        (equalized_focal_loss(x, labels, gammas, 2.0, 0.25, reduction, weight=w),
         ref.equalized_focal(x, ref.one_hot(labels, C), gammas, 2.0, 0.25)),
    ]
    for ours, elementwise in cases:
        expected = elementwise * w_full
        expected = {'none': expected, 'sum': expected.sum(), 'mean': expected.mean()}[reduction]
        _assert_value_and_grad(ours, expected, x)


@pytest.mark.usefixtures('path')
def test_sigmoid_focal_label_smoothing():
    x, labels = _inputs()
    t = ref.one_hot(labels, C) * 0.8 + 0.1
    _assert_value_and_grad(sigmoid_focal_loss(x, labels, label_smoothing=0.2),
                           ref.sigmoid_focal(x, t), x)


@pytest.mark.usefixtures('path')
def test_torchvision_alpha_convention():
    x, labels = _inputs()
    _assert_value_and_grad(sigmoid_focal_loss(x, labels, alpha=-1),
                           ref.sigmoid_focal(x, ref.one_hot(labels, C), None), x)


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('epsilon', [1.0, -1.0, 0.0])
def test_poly1_matches_formula(epsilon):
    x, labels = _inputs()
    expected = ref.poly1_focal(x, ref.one_hot(labels, C), 0.25, 2.0, epsilon)
    ours = poly1_focal_loss(x, labels, 0.25, 2.0, epsilon=epsilon)
    _assert_value_and_grad(ours, expected, x)


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('gamma,beta', [(2.0, 1.0), (4.0, 0.0), (1.0, -0.5)])
def test_focal_star_matches_formula(gamma, beta):
    x, labels = _inputs()
    expected = ref.focal_star(x, ref.one_hot(labels, C), gamma, beta)
    ours = focal_loss_star(x, labels, alpha=0.25, gamma=gamma, beta=beta)
    _assert_value_and_grad(ours, expected, x)


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('alpha,gamma', [(None, 0.0), (0.25, 2.0), (None, 0.5),
                                         ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 1.0)])
def test_softmax_focal_matches_formula(alpha, gamma):
    x, labels = _inputs(classes=C + 1)
    labels = labels.clamp(max=C)
    ours = softmax_focal_loss(x, labels, alpha, gamma)
    ref_alpha = alpha
    if isinstance(alpha, float):
        ref_alpha = [alpha] * C + [1 - alpha]
    _assert_value_and_grad(ours, ref.softmax_focal(x, labels, ref_alpha, gamma), x)


@pytest.mark.usefixtures('path')
def test_softmax_focal_gamma0_is_cross_entropy():
    x, labels = _inputs(classes=C + 1)
    labels = labels.clamp(max=C)
    expected = torch.nn.functional.cross_entropy(x, labels, reduction='none')
    _assert_value_and_grad(softmax_focal_loss(x, labels, None, 0.0), expected, x)


@pytest.mark.usefixtures('path')
def test_equalized_focal_matches_formula():
    x, labels = _inputs()
    gammas = torch.linspace(2.0, 10.0, C, dtype=torch.float64)
    expected = ref.equalized_focal(x, ref.one_hot(labels, C), gammas)
    _assert_value_and_grad(equalized_focal_loss(x, labels, gammas), expected, x)


def test_equalized_focal_gammas_from_statistics():
    pos = torch.tensor([1.0, 0.0, 5.0, 2.0])
    neg = torch.tensor([4.0, 3.0, 1.0, 0.0])
    # g = clamp(pos / neg, 0, 1); no statistics (neg = 0) -> g = 1
    expected = 2.0 + 8.0 * (1 - torch.tensor([0.25, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(equalized_focal_gammas(pos, neg, 2.0, 8.0), expected)


@pytest.mark.parametrize('fn', [
    lambda x, y: sigmoid_focal_loss(x, y, reduction='sum'),
    lambda x, y: sigmoid_focal_loss(x, y, 0.5, 0.5, 'mean', label_smoothing=0.1),
    lambda x, y: poly1_focal_loss(x, y, reduction='sum'),
    lambda x, y: focal_loss_star(x, y, 0.25, 2.0, 'sum', beta=1.0),
    lambda x, y: equalized_focal_loss(x, y, torch.linspace(2, 6, 4, dtype=torch.float64),
                                      reduction='sum'),
], ids=['sigmoid', 'sigmoid-gamma.5-smooth', 'poly1', 'fl-star', 'efl'])
@pytest.mark.usefixtures('path')
def test_gradcheck_sigmoid_family(fn):
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 3, 4])
    assert torch.autograd.gradcheck(lambda z: fn(z, labels), (x,))


@pytest.mark.usefixtures('path')
def test_gradcheck_softmax_and_none_reduction():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 2, 1, 3])
    w = torch.rand(5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: softmax_focal_loss(z, labels, 0.25, 1.5, 'none', weight=w), (x,))
    assert torch.autograd.gradcheck(
        lambda z: sigmoid_focal_loss(z, labels, reduction='none', weight=w), (x,))



@pytest.mark.usefixtures('path')
def test_unreduced_loss_backward_scales_its_cached_gradient():
    # A per-element (sigmoid) or per-row (softmax) loss, weighted after the call, as a mining
    # head does: the first backward scales the gradient computed in the forward pass.
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 3, 4, 1, 4])
    r = torch.rand(7, 4, dtype=torch.float64)
    (sigmoid_focal_loss(x, labels, reduction='none') * r).sum().backward()
    expected, = torch.autograd.grad((ref.sigmoid_focal(x, ref.one_hot(labels, 4)) * r).sum(), x)
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-14)
    x.grad = None
    softmax_labels = labels.clamp(max=3)
    (softmax_focal_loss(x, softmax_labels, None, 2.0, 'none') * r[:, 0]).sum().backward()
    expected, = torch.autograd.grad(
        (ref.softmax_focal(x, softmax_labels, None, 2.0) * r[:, 0]).sum(), x)
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-14)

ALL = {
    'sigmoid': lambda x, y: sigmoid_focal_loss(x, y, reduction='sum'),
    'poly1': lambda x, y: poly1_focal_loss(x, y, reduction='sum'),
    'fl-star': lambda x, y: focal_loss_star(x, y, 0.25, 2.0, 'sum', beta=1.0),
    'efl': lambda x, y: equalized_focal_loss(x, y, torch.full((x.shape[1],), 6.0),
                                             reduction='sum'),
    'softmax': lambda x, y: softmax_focal_loss(x, y.clamp(max=x.shape[1] - 1),
                                               reduction='sum'),
}


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('name', ALL)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_logits_and_half_precision_are_finite(name, dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 30.0], [60.0, -60.0, 1e4]]).to(dtype)
    x.requires_grad_()
    labels = torch.tensor([0, 1, 3])
    loss = ALL[name](x, labels)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad.dtype == dtype


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('name', ALL)
def test_zero_anchors_give_zero_loss_that_backpropagates(name):
    x = torch.zeros(0, 5, requires_grad=True)
    loss = ALL[name](x, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and x.grad is not None and x.grad.shape == (0, 5)


@pytest.mark.usefixtures('path')
def test_half_precision_close_to_float64():
    x, labels = _inputs(scale=2.0)
    expected = ref.sigmoid_focal(x, ref.one_hot(labels, C)).sum()
    ours = sigmoid_focal_loss(x.detach().to(torch.bfloat16), labels, reduction='sum')
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), expected.detach(), rtol=2e-2, atol=0)


@pytest.mark.parametrize('call,match', [
    (lambda x, y: sigmoid_focal_loss(x, y, gamma=-1.0), 'gamma=-1.0'),
    (lambda x, y: sigmoid_focal_loss(x, y, alpha=1.5), r'alpha=1.5 is outside \[0, 1\]'),
    (lambda x, y: sigmoid_focal_loss(x, y, alpha=[0.2, 0.3]), 'per-class alpha has 2 values'),
    (lambda x, y: sigmoid_focal_loss(x, y, reduction='avg'), "reduction='avg'"),
    (lambda x, y: sigmoid_focal_loss(x, y[:3]), 'class-index targets must have shape'),
    (lambda x, y: sigmoid_focal_loss(x, torch.rand(4, 2)), 'float .* targets must match'),
    (lambda x, y: sigmoid_focal_loss(x, y + 10), r'labels must lie in \[0, 6\]'),
    (lambda x, y: softmax_focal_loss(x, y), r'labels must lie in \[0, 5\]'),
    (lambda x, y: focal_loss_star(x, y, gamma=0.0), 'gamma=0.0 .* > 0'),
    (lambda x, y: sigmoid_focal_loss(x, y, weight=torch.ones(3)), 'weight of shape'),
])
@pytest.mark.usefixtures('path')
def test_bad_input_names_the_argument(call, match):
    x = torch.randn(5, 6)
    labels = torch.tensor([0, 6, 2, 5, 6])
    with pytest.raises(ValueError, match=match):
        call(x, labels)


def test_float32_log1p_polynomial_is_within_two_ulp():
    from plugin.ops.fast.log1p import log1p_polynomial
    e = torch.cat([torch.linspace(0, 1, 200_001), torch.logspace(-38, 0, 10_001)])
    ours = log1p_polynomial(e.float()).double()
    exact = torch.log1p(e.double())
    ulp = torch.finfo(torch.float32).eps * exact.abs()
    assert float(((ours - exact).abs() / ulp.clamp(min=1e-45)).max()) <= 2.0
    assert log1p_polynomial(torch.zeros(1)).item() == 0.0


@pytest.mark.usefixtures('kernels')
def test_float32_sigmoid_focal_matches_float64_elementwise():
    # float32 within ~16 ulp of float64 over the logit range, also where the loss or p_t
    # nearly vanishes (no cancellation); soft targets' gradient crosses zero, so it is
    # compared against its scale.
    x = torch.linspace(-15, 15, 6002)  # where the naive float64 reference is exact enough
    x = x.reshape(-1, 1).repeat(1, 2)
    labels = torch.tensor([0, 2]).repeat(x.shape[0] // 2 + 1)[:x.shape[0]]
    t = ref.one_hot(labels, 2)
    for targets, dense, soft in ((labels, t, False), (t.float(), t, False),
                                 (t.float() * 0.7, t * 0.7, True)):
        xf = x.clone().requires_grad_()
        ours = sigmoid_focal_loss(xf, targets, reduction='none')
        ours.sum().backward()
        x64 = x.double().requires_grad_()
        expected = ref.sigmoid_focal(x64, dense.double())
        expected.sum().backward()
        torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(xf.grad.double(), x64.grad, rtol=1e-6,
                                   atol=1e-6 * float(x64.grad.abs().max()) if soft else 0)


@pytest.mark.parametrize('normalizer', [7.0, torch.tensor(7.0, dtype=torch.float64)],
                         ids=['float', 'tensor'])
@pytest.mark.usefixtures('path')
def test_normalizer_divides_the_sum_in_the_fused_pass(normalizer):
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 2, 3, 1, 3, 3, 0, 2])
    loss = sigmoid_focal_loss(x, labels, reduction='sum', normalizer=normalizer)
    (loss * 3).backward()  # an incoming gradient other than one still scales
    expected = ref.sigmoid_focal(x, ref.one_hot(labels, 3)).sum() / 7
    g, = torch.autograd.grad(expected * 3, x)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(x.grad, g, rtol=1e-12, atol=0)


@pytest.mark.usefixtures('path')
def test_normalizer_errors_name_the_argument():
    x, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="normalizer divides a sum.*reduction='sum'"):
        sigmoid_focal_loss(x, labels, reduction='mean', normalizer=2.0)
    with pytest.raises(ValueError, match='normalizer must be > 0'):
        softmax_focal_loss(x, labels.clamp(max=2), reduction='sum', normalizer=0.0)


@pytest.mark.usefixtures('kernels')
@pytest.mark.parametrize('caches', [True, False], ids=['cpu-strategy', 'gpu-strategy'])
def test_both_gradient_strategies_match_the_formula(caches, monkeypatch):
    # A GPU computes the gradient in backward rather than with the loss: same numbers.
    from plugin.ops.fast import autograd
    monkeypatch.setattr(autograd, 'caches_gradient', lambda logits: caches)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 2, 3, 1, 3, 3, 0, 2])
    totals = []
    gammas = torch.tensor([2.0, 3.0, 4.5], dtype=torch.float64)
    loss = equalized_focal_loss(x, labels, gammas, reduction='sum', normalizer=4.0,
                                on_gradient_totals=totals.append)
    (loss * 3).backward()
    expected = ref.equalized_focal(x, ref.one_hot(labels, 3), gammas).sum() / 4
    g, = torch.autograd.grad(expected * 3, x)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(x.grad, g, rtol=1e-12, atol=0)
    t = ref.one_hot(labels, 3)
    torch.testing.assert_close(totals[0], torch.stack([(g.abs() * t).sum(0),
                                                       (g.abs() * (1 - t)).sum(0)]))


HALF_ULP = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


@pytest.mark.usefixtures('path')
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_is_float32_exact_on_the_rounded_inputs(dtype):
    # float16/bfloat16 logits are computed in float32: each loss within 1e-6 of the float64
    # formula on the same rounded logits (docs/cuda.md), the gradient within its own dtype's
    # rounding (float16's smallest subnormal where it underflows).
    x, labels = _inputs(num=400, scale=4.0)
    rounded = x.detach().to(dtype)
    x64 = rounded.double().requires_grad_()
    expected = ref.sigmoid_focal(x64, ref.one_hot(labels, C))
    expected.sum().backward()
    xh = rounded.clone().requires_grad_()
    ours = sigmoid_focal_loss(xh, labels, reduction='none')
    ours.sum().backward()
    assert ours.dtype == torch.float32 and xh.grad.dtype == dtype
    torch.testing.assert_close(ours.double(), expected.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(xh.grad.double(), x64.grad, rtol=HALF_ULP[dtype],
                               atol=float(torch.finfo(dtype).smallest_normal) * 2 ** -10)
