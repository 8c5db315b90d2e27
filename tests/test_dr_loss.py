"""DR loss (plugin.ops.dr_loss, DRLoss) against a float64 reference written here from the
paper's equations (Qian et al., CVPR 2020, eqs. for q-, q+, P-, P+ and the smoothed hinge),
with plain loops over images and entries, and the limits the paper states."""
import copy
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import det_batch, mmdet_config
from mmdet.registry import MODELS
from mmengine.config import Config

import plugin  # noqa: F401
from plugin.ops import dr_loss

PAPER = dict(pos_lambda=1.0, neg_lambda=0.1 / math.log(3.5), margin=0.5, smoothness=6.0,
             scale=4.0)


def _reference(logits, labels, weights=None, grouping='image', pos_lambda=1.0,
               neg_lambda=0.1 / math.log(3.5), margin=0.5, smoothness=6.0, scale=4.0):
    """Sum over groups of tau / L log(1 + exp(L (P- - P+ + gamma))), float64 loops.

    logits (B, A, C) float64, labels (B, A) with C = background, weights (B, A) or None.
    P- = sum_j w_j exp(p_j / lambda-) p_j / sum_j w_j exp(p_j / lambda-) over negatives
    (every class but the label of an anchor of weight > 0), P+ likewise with -p / lambda+
    over positives; a side without entries takes its ideal value (P+ = 1, P- = 0)."""
    num_images, num_anchors, num_classes = logits.shape
    groups = ([[b] for b in range(num_images)] if grouping == 'image'
              else [list(range(num_images))])
    total = logits.new_zeros(())
    for images in groups:
        pos, neg = [], []
        for b in images:
            for a in range(num_anchors):
                w = 1.0 if weights is None else float(weights[b, a])
                if w <= 0:
                    continue
                for c in range(num_classes):
                    p = 1 / (1 + torch.exp(-logits[b, a, c]))
                    (pos if int(labels[b, a]) == c else neg).append((w, p))

        def expected(entries, inverse_temperature, empty):
            if not entries:
                return logits.new_tensor(empty)
            numerator = sum(w * torch.exp(p * inverse_temperature) * p for w, p in entries)
            return numerator / sum(w * torch.exp(p * inverse_temperature) for w, p in entries)
        z = expected(neg, 1 / neg_lambda, 0.0) - expected(pos, -1 / pos_lambda, 1.0) + margin
        total = total + scale / smoothness * torch.log(1 + torch.exp(smoothness * z))
    return total


def _problem(num_images=3, num_anchors=12, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_images, num_anchors, num_classes, generator=g,
                         dtype=torch.float64) * 2
    labels = torch.full((num_images, num_anchors), num_classes)
    positive = torch.rand(num_images, num_anchors, generator=g) < 0.3
    labels[positive] = torch.randint(0, num_classes, (int(positive.sum()),), generator=g)
    labels[1] = num_classes  # an image without positives
    labels[0, :2] = torch.tensor([0, num_classes - 1])
    weights = (torch.rand(num_images, num_anchors, generator=g) > 0.2).double()
    weights[0, :2] = 1.0
    return logits, labels, weights


def _value_and_grad(fn, logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize('grouping', ['image', 'batch'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_values_and_gradients_equal_the_reference(grouping, dtype):
    logits, labels, weights = _problem()
    got, got_grad = _value_and_grad(dr_loss, logits.to(dtype), labels, weights.to(dtype),
                                    grouping=grouping)
    want, want_grad = _value_and_grad(_reference, logits, labels, weights, grouping)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5,
                                                                            atol=1e-7)
    torch.testing.assert_close(got.double(), want, **tol)
    torch.testing.assert_close(got_grad.double(), want_grad, **tol)


@pytest.mark.parametrize('constants', [
    dict(pos_lambda=0.3, neg_lambda=2.0, margin=0.2, smoothness=3.0, scale=1.5),
    dict(pos_lambda=5.0, neg_lambda=0.05, margin=-0.1, smoothness=10.0, scale=0.5)])
def test_every_constant_enters_as_in_the_paper(constants):
    logits, labels, weights = _problem(seed=1)
    got, got_grad = _value_and_grad(dr_loss, logits, labels, weights, **constants)
    want, want_grad = _value_and_grad(_reference, logits, labels, weights, **constants)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_defaults_are_the_papers():
    logits, labels, weights = _problem(seed=2)
    torch.testing.assert_close(dr_loss(logits, labels, weights),
                               dr_loss(logits, labels, weights, **PAPER))
    assert PAPER['neg_lambda'] == pytest.approx(0.0798, abs=1e-4)


def test_rows_are_one_group_and_batch_grouping_pools_the_images():
    logits, labels, weights = _problem(seed=3)
    pooled = dr_loss(logits.flatten(0, 1), labels.flatten(), weights.flatten())
    torch.testing.assert_close(dr_loss(logits, labels, weights, grouping='batch'), pooled)
    per_image = dr_loss(logits, labels, weights, reduction='none')
    assert per_image.shape == (3,)
    torch.testing.assert_close(per_image.sum(), dr_loss(logits, labels, weights))
    torch.testing.assert_close(per_image.mean(),
                               dr_loss(logits, labels, weights, reduction='mean'))
    for b in range(3):
        torch.testing.assert_close(per_image[b], dr_loss(logits[b], labels[b], weights[b]))


def _expected_score_from_loss(loss, smoothness=6.0, scale=4.0, margin=0.5, other=0.0):
    """Invert tau l(z): z = log(exp(L loss / tau) - 1) / L, then P = z - margin + other."""
    z = torch.log(torch.expm1(smoothness * loss / scale)) / smoothness
    return z - margin + other


def test_negative_temperature_limits_are_the_hardest_and_the_mean_score():
    """No positives: P+ = 1 and the loss gives P- back. lambda- -> 0: max p-; -> inf: mean."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 30, 3, generator=g, dtype=torch.float64)
    labels = torch.full((1, 30), 3)
    p = torch.sigmoid(logits)
    for neg_lambda, want in [(1e-5, p.max()), (1e6, p.mean())]:
        loss = dr_loss(logits, labels, neg_lambda=neg_lambda)
        torch.testing.assert_close(_expected_score_from_loss(loss, other=1.0), want,
                                   rtol=1e-5, atol=1e-6)


def test_positive_temperature_limits_are_the_hardest_and_the_mean_score():
    """One class, every anchor positive: P- = 0. lambda+ -> 0: min p+; -> inf: mean."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 30, 1, generator=g, dtype=torch.float64)
    labels = torch.zeros(1, 30, dtype=torch.long)
    p = torch.sigmoid(logits)
    for pos_lambda, want in [(1e-5, p.min()), (1e6, p.mean())]:
        loss = dr_loss(logits, labels, pos_lambda=pos_lambda)
        torch.testing.assert_close(-_expected_score_from_loss(loss), want, rtol=1e-5,
                                   atol=1e-6)


def test_ignored_anchors_take_no_part_and_weights_count_as_copies():
    logits, labels, _ = _problem(num_images=2, seed=6)
    weights = torch.ones(2, 12, dtype=torch.float64)
    weights[:, 3:6] = 0
    kept = torch.ones(12, dtype=torch.bool)
    kept[3:6] = False
    extreme = logits.clone()
    extreme[:, 3:6] = 30.0  # ignored "negatives" that would be the hardest by far
    loss, grad = _value_and_grad(dr_loss, extreme, labels, weights)
    for b in range(2):
        torch.testing.assert_close(
            dr_loss(logits[b, kept], labels[b, kept]).reshape(()),
            dr_loss(extreme, labels, weights, reduction='none')[b])
    assert grad[:, 3:6].abs().max() == 0 and torch.isfinite(grad).all()
    twice = torch.ones(1, 12, dtype=torch.float64)
    twice[0, 0] = 2
    doubled = torch.cat([logits[:1], logits[:1, :1]], 1)
    torch.testing.assert_close(dr_loss(logits[:1], labels[:1], twice),
                               dr_loss(doubled, torch.cat([labels[:1], labels[:1, :1]], 1)))


def test_empty_sides_take_their_ideal_score_with_finite_gradients():
    logits = torch.randn(2, 5, 3, dtype=torch.float64)
    labels = torch.full((2, 5), 3)
    weights = torch.ones(2, 5, dtype=torch.float64)
    weights[1] = 0  # image 1: nothing at all
    x = logits.clone().requires_grad_()
    loss = dr_loss(x, labels, weights, reduction='none')
    grad, = torch.autograd.grad(loss.sum(), x)
    empty = 4.0 / 6.0 * math.log1p(math.exp(6.0 * (0.0 - 1.0 + 0.5)))
    assert loss[1].item() == pytest.approx(empty)
    assert torch.isfinite(grad).all() and grad[1].abs().max() == 0 and grad[0].abs().sum() > 0


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_close(dtype):
    logits, labels, weights = _problem(num_anchors=200, seed=7)
    logits = logits * 8  # saturated sigmoids
    x = logits.to(dtype).requires_grad_()
    loss = dr_loss(x, labels, weights.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss.double(), _reference(logits.to(dtype).double(), labels,
                                                         weights), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(neg_lambda=0.0), 'neg_lambda'), (dict(pos_lambda=-1.0), 'pos_lambda'),
    (dict(smoothness=0.0), 'smoothness'), (dict(scale=-1.0), 'scale'),
    (dict(margin=float('nan')), 'margin'), (dict(grouping='level'), 'grouping'),
    (dict(reduction='avg'), 'reduction')])
def test_bad_arguments_name_the_field(kwargs, match):
    logits, labels, _ = _problem()
    with pytest.raises(ValueError, match=match):
        dr_loss(logits, labels, **kwargs)


def test_targets_must_be_class_indices():
    logits, labels, _ = _problem()
    with pytest.raises(TypeError, match='class indices'):
        dr_loss(logits, torch.zeros_like(logits))


# --- the mmdet adapter and the heads -------------------------------------------------------

def test_adapter_passes_the_config_and_ignores_avg_factor():
    logits, labels, weights = _problem(seed=8)
    constants = dict(pos_lambda=0.5, neg_lambda=0.2, margin=0.3, smoothness=4.0, scale=2.0)
    loss = MODELS.build(dict(type='DRLoss', use_sigmoid=True, loss_weight=0.5, **constants))
    rows = (logits.flatten(0, 1), labels.flatten(), weights.flatten())
    want = 0.5 * _reference(*(t.unsqueeze(0) for t in rows), **constants)
    torch.testing.assert_close(loss(*rows, avg_factor=17.0), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss(logits, labels, weights),
                               0.5 * _reference(logits, labels, weights, **constants))
    mean = MODELS.build(dict(type='DRLoss', reduction='mean', grouping='image'))
    torch.testing.assert_close(mean(logits, labels, weights),
                               _reference(logits, labels, weights) / 3)


@pytest.mark.parametrize('cfg, match', [
    (dict(use_sigmoid=False), 'use_sigmoid'), (dict(neg_lambda=0), 'neg_lambda'),
    (dict(grouping='level'), 'grouping'), (dict(reduction='none'), 'reduction')])
def test_adapter_config_errors_name_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='DRLoss', **cfg))


def test_adapter_refuses_a_per_anchor_loss_and_per_element_weights():
    logits, labels, weights = _problem()
    loss = MODELS.build(dict(type='DRLoss'))
    with pytest.raises(ValueError, match='PseudoSampler'):
        loss(logits, labels, reduction_override='none')
    with pytest.raises(ValueError, match='per-anchor weight'):
        loss(logits, labels, torch.ones_like(logits))


NUM_CLASSES = 5


def _mining_head(sampler, kind='retina'):
    base = 'retinanet/retinanet_r50_fpn_1x_coco.py' if kind == 'retina' else 'ssd/ssd300_coco.py'
    cfg = mmdet_config(base)
    head = copy.deepcopy(cfg.model.bbox_head)
    head.update(num_classes=NUM_CLASSES, train_cfg=copy.deepcopy(cfg.model.train_cfg),
                test_cfg=cfg.model.test_cfg)
    if kind == 'retina':
        head.update(type='MiningRetinaHead', in_channels=8, feat_channels=8, stacked_convs=1)
    else:
        head.update(type='MiningSSDHead', in_channels=(8,) * 6)
    head.loss_cls = dict(type='DRLoss', use_sigmoid=True)
    head.train_cfg.sampler = sampler
    return MODELS.build(head)


def _head_problem(num_images=3, num_anchors=40, seed=9):
    logits, labels, weights = _problem(num_images, num_anchors, NUM_CLASSES, seed)
    positive = labels < NUM_CLASSES
    return dict(cls_score=logits.float().requires_grad_(),
                bbox_pred=torch.randn(num_images, num_anchors, 4, requires_grad=True),
                anchors=torch.tensor([0.0, 0.0, 8.0, 8.0]).expand(num_images, num_anchors, 4),
                labels=labels, label_weights=weights.float(),
                bbox_targets=torch.randn(num_images, num_anchors, 4),
                bbox_weights=positive.float().unsqueeze(2).expand(-1, -1, 4).clone(),
                avg_factor=float(positive.sum()))


@pytest.mark.parametrize('kind', ['retina', 'ssd'])
def test_mining_heads_rank_each_image_over_all_levels(kind):
    head = _mining_head(dict(type='PseudoSampler'), kind)
    assert head.cls_out_channels == NUM_CLASSES  # sigmoid scores, no background output
    problem = _head_problem()
    losses = head.loss_by_batch(**problem, level_sizes=[25, 10, 5] if kind == 'retina' else None)
    (loss_cls,) = losses['loss_cls']  # one ranking per image, all levels together
    want = _reference(problem['cls_score'].detach().double(), problem['labels'],
                      problem['label_weights'].double())
    torch.testing.assert_close(loss_cls.double(), want, rtol=1e-5, atol=1e-6)
    loss_cls.backward()
    grad = problem['cls_score'].grad
    assert torch.isfinite(grad).all() and grad[problem['label_weights'] == 0].abs().max() == 0


def test_mining_retina_head_with_a_loss_ranked_sampler_says_to_use_pseudo_sampler():
    head = _mining_head(dict(type='HardNegativeSampler', neg_pos_ratio=3))
    with pytest.raises(ValueError, match='PseudoSampler'):
        head.loss_by_batch(**_head_problem(), level_sizes=[25, 10, 5])


def _train_step(model, batch):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(sum(v) if isinstance(v, list) else v for v in losses.values())
    total.backward()
    optimizer.step()
    return losses, total


def test_quick_config_trains_a_step_with_mining_retina_head():
    cfg = Config.fromfile('configs/negatives/retinanet_r18_quick_dr_loss.py')
    assert cfg.model.bbox_head.type == 'MiningRetinaHead'
    assert cfg.model.train_cfg.sampler.type == 'PseudoSampler'
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.bbox_head.loss_cls).__name__ == 'DRLoss'
    batch = model.data_preprocessor(det_batch([3, 0], 128, num_classes=6), training=True)
    losses, total = _train_step(model, batch)
    assert len(losses['loss_cls']) == 1 and torch.isfinite(total)
    grad = model.bbox_head.retina_cls.weight.grad
    assert grad is not None and grad.abs().sum() > 0


# mmdet's RetinaHead in a process that never imports the plugin itself: the config's
# custom_imports registers DRLoss, and RetinaHead calls it once per FPN level.
_STOCK_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from helpers import det_batch
    register_all_modules()
    assert 'plugin' not in sys.modules
    cfg = Config.fromfile(sys.argv[1])
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.bbox_head).__name__ == 'RetinaHead'
    assert type(model.bbox_head.loss_cls).__name__ == 'DRLoss'
    batch = model.data_preprocessor(det_batch([3, 0], 128), training=True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert len(losses['loss_cls']) == 5, losses
    total = sum(sum(v) for v in losses.values())
    total.backward()
    grad = model.bbox_head.retina_cls.weight.grad
    assert torch.isfinite(total) and grad.abs().sum() > 0 and torch.isfinite(grad).all()
    print('ok', float(sum(losses['loss_cls'])))
""")


def test_stock_retina_head_trains_with_dr_loss_through_custom_imports(tmp_path):
    config = tmp_path / 'retinanet_dr.py'
    config.write_text(textwrap.dedent("""
        _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['plugin'], allow_failed_imports=False)
        model = dict(backbone=dict(init_cfg=None), bbox_head=dict(
            loss_cls=dict(_delete_=True, type='DRLoss', use_sigmoid=True)))
    """))
    root = Path(__file__).parent.parent
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(root), str(root / 'tests')]))
    done = subprocess.run([sys.executable, '-c', _STOCK_SCRIPT, str(config)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and 'ok' in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize('config, scales', [
    ('configs/negatives/retinanet_r18_quick_dr_loss.py', ('quick',)),
    ('configs/negatives/retinanet_r50_fpn_600px_1x_coco_dr_loss.py', ('quick', 'coco'))])
def test_quick_scale_runs_carry_the_dr_loss_method(config, scales):
    """tools/reproduce.py's quick runs take the head, loss_cls and sampler of the config."""
    from plugin.repro.scales import ScaleOptions, build_run_config
    from plugin.repro.suites import SuiteEntry

    root = Path(__file__).parent.parent
    options = ScaleOptions(scale='quick', data_root='data/generated', repo_root=str(root))
    cfg = build_run_config(SuiteEntry(config, scales=scales), options, seed=0)
    head = cfg.model.bbox_head
    assert head.type == 'MiningRetinaHead' and cfg.model.train_cfg.sampler.type == 'PseudoSampler'
    assert dict(head.loss_cls) == dict(type='DRLoss', use_sigmoid=True, reduction='mean',
                                       loss_weight=1.0)
    assert head.num_classes == 6  # the quick data's
