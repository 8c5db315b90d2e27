"""The generated quick-start dataset: determinism, imbalance, COCO loading, path errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from plugin.data import generate

ROOT = Path(__file__).resolve().parents[1]
DATASET_CONFIG = ROOT / 'configs' / '_base_' / 'datasets' / 'quickstart_coco.py'
SMALL = 32 * 32  # COCO's "small" object: area below 32^2 pixels


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('generated')
    generate(out, seed=0, num_train=300, num_val=40)
    return out


@pytest.fixture(scope='module')
def train_json(data_root: Path) -> dict:
    return json.loads((data_root / 'annotations' / 'instances_train.json').read_text())


def test_layout(data_root: Path, train_json: dict) -> None:
    assert sorted(p.name for p in (data_root / 'annotations').iterdir()) == [
        'instances_train.json', 'instances_val.json']
    assert len(list((data_root / 'train').glob('*.png'))) == 300
    assert len(list((data_root / 'val').glob('*.png'))) == 40
    names = [c['name'] for c in train_json['categories']]
    assert 5 <= len(names) <= 8 and len(set(names)) == len(names)
    assert len({c['id'] for c in train_json['categories']}) == len(names)
    image = train_json['images'][0]
    img = cv2.imread(str(data_root / 'train' / image['file_name']))
    assert img.shape == (image['height'], image['width'], 3) == (128, 128, 3)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, data_root: Path) -> None:
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        generate(tmp_path / name, seed=seed, num_train=6, num_val=3)
    a, b, c = (_digest(tmp_path / n) for n in 'abc')
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)
    # Image i depends on (seed, split, i) only: a small split is a prefix of a large one.
    big = _digest(data_root)
    assert all(a[k] == big[k] for k in a if k.endswith('.png'))


def test_imbalance(train_json: dict) -> None:
    per_image = Counter(a['image_id'] for a in train_json['annotations'])
    empty = sum(1 for img in train_json['images'] if img['id'] not in per_image)
    assert 0.05 <= empty / len(train_json['images']) <= 0.3

    counts = Counter(a['category_id'] for a in train_json['annotations'])
    ranked = [counts[c['id']] for c in train_json['categories']]
    assert min(ranked) > 0, 'every class, even the rarest, has examples'
    assert max(ranked) >= 5 * min(ranked), 'long tail'
    assert max(ranked) / sum(ranked) > 0.35, 'one head class dominates'

    areas = np.array([a['area'] for a in train_json['annotations']])
    assert np.mean(areas < SMALL) > 0.7, 'mostly small objects'
    assert np.any(areas >= SMALL), 'but not only'
    covered = sum(a['bbox'][2] * a['bbox'][3] for a in train_json['annotations'])
    assert covered / (len(train_json['images']) * 128 * 128) < 0.1, 'mostly background'


def test_boxes_are_tight_xywh(data_root: Path, train_json: dict) -> None:
    # The shapes are saturated colours on an unsaturated-ish texture: a box in xywh must
    # hold the object at its centre and background just outside its edge midpoints.
    files = {img['id']: img['file_name'] for img in train_json['images']}
    solid = {c['id'] for c in train_json['categories']
             if c['name'] in ('circle', 'square', 'diamond', 'cross')}
    inside, outside = [], []
    for ann in train_json['annotations'][:200]:
        x, y, w, h = ann['bbox']
        assert ann['iscrowd'] == 0 and 0 < ann['area'] <= w * h
        assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
        if ann['category_id'] not in solid:
            continue
        img = cv2.imread(str(data_root / 'train' / files[ann['image_id']])).astype(int)
        sat = img.max(axis=2) - img.min(axis=2)
        inside.append(sat[y + h // 2, x + w // 2])
        cx, cy = x + w // 2, y + h // 2
        ring = [(cy, x - 2), (cy, x + w + 1), (y - 2, cx), (y + h + 1, cx)]
        outside += [sat[r, c] for r, c in ring if 0 <= r < 128 and 0 <= c < 128]
    assert np.mean(np.array(inside) > 120) > 0.95
    assert np.mean(np.array(outside) > 120) < 0.2


def test_background_holds_unlabelled_look_alikes(data_root: Path, train_json: dict) -> None:
    # Hard negatives: saturated, object-sized blobs that no box covers. The texture alone
    # does not reach this saturation over 30 px (checked by eye and on data without them).
    boxes: dict[int, list] = {}
    for ann in train_json['annotations']:
        boxes.setdefault(ann['image_id'], []).append(ann['bbox'])
    with_blob = 0
    for image in train_json['images'][:100]:
        img = cv2.imread(str(data_root / 'train' / image['file_name'])).astype(int)
        sat = cv2.medianBlur(((img.max(axis=2) - img.min(axis=2)) > 140).astype(np.uint8), 3)
        for x, y, w, h in boxes.get(image['id'], []):
            sat[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = 0
        _, _, stats, _ = cv2.connectedComponentsWithStats(sat)
        with_blob += bool(np.any(stats[1:, cv2.CC_STAT_AREA] >= 30))
    assert with_blob >= 40


def test_pycocotools_scores_ground_truth_as_perfect(data_root: Path) -> None:
    coco_mod = pytest.importorskip('pycocotools.coco')
    from pycocotools.cocoeval import COCOeval

    gt = coco_mod.COCO(str(data_root / 'annotations' / 'instances_val.json'))
    dets = [{'image_id': a['image_id'], 'category_id': a['category_id'], 'bbox': a['bbox'],
             'score': 1.0} for a in gt.dataset['annotations']]
    ev = COCOeval(gt, gt.loadRes(dets), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_cli_writes_the_requested_split_sizes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location('gen', ROOT / 'tools' / 'generate_data.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(['--out', str(tmp_path), '--seed', '3', '--num-train', '4', '--num-val', '2',
              '--size', '64'])
    val = json.loads((tmp_path / 'annotations' / 'instances_val.json').read_text())
    assert len(val['images']) == 2 and val['images'][0]['width'] == 64
    assert len(list((tmp_path / 'train').glob('*.png'))) == 4


def _dataset(split: str, **overrides):
    pytest.importorskip('mmdet')
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import plugin.data.datasets  # noqa: F401  (registers CheckedCocoDataset)

    init_default_scope('mmdet')
    cfg = Config.fromfile(str(DATASET_CONFIG))[f'{split}_dataloader']['dataset']
    cfg.update(overrides)
    return DATASETS.build(cfg)


def test_mmdet_loads_through_the_config_pipeline(data_root: Path, train_json: dict) -> None:
    train = _dataset('train', data_root=str(data_root))
    # Background-only images are kept for training: they are the negatives.
    assert len(train) == len(train_json['images'])
    assert train.metainfo['classes'] == tuple(c['name'] for c in train_json['categories'])
    sample = train[0]
    assert tuple(sample['inputs'].shape) == (3, 128, 128)

    val = _dataset('val', data_root=str(data_root))
    val_json = json.loads((data_root / 'annotations' / 'instances_val.json').read_text())
    first = val_json['images'][0]['id']
    anns = [a for a in val_json['annotations'] if a['image_id'] == first]
    want = sorted([x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns))
    got = val[0]['data_samples'].gt_instances
    assert sorted(got.bboxes.numpy().tolist()) == want
    assert sorted(got.labels.tolist()) == sorted(a['category_id'] - 1 for a in anns)


def test_missing_data_root_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError) as err:
        _dataset('train', data_root=str(missing))
    assert str(missing) in str(err.value)
    assert 'tools/generate_data.py --out' in str(err.value)


def test_missing_ann_file_names_it(tmp_path: Path) -> None:
    (tmp_path / 'val').mkdir()
    with pytest.raises(FileNotFoundError) as err:
        _dataset('val', data_root=str(tmp_path))
    assert str(tmp_path / 'annotations' / 'instances_val.json') in str(err.value)
