"""A small, deterministic COCO-format detection dataset with a realistic class imbalance.

Each image is a noisy, textured background with a few small filled shapes and some
unlabelled look-alikes. Class frequencies follow a Zipf law, most pixels are background and
some images hold no object at all: the regime one-stage detectors struggle with, small enough
to train from scratch on a CPU.

Pure numpy/cv2/json on purpose: it must run where mmdet is not installed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

# Ordered from most to least frequent: the Zipf rank of a class is its index here.
CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond')

# BGR colours (cv2 order), one per class and far apart in hue, so that a class is told by
# shape and colour together and the tail classes stay learnable from few examples.
_COLOURS = np.array(
    [
        (40, 40, 230),  # red
        (230, 80, 30),  # blue
        (40, 200, 40),  # green
        (20, 210, 230),  # yellow
        (210, 40, 210),  # magenta
        (230, 220, 40),  # cyan
    ],
    dtype=np.float64,
)

# Unlabelled shapes in the same colours: background that looks like an object.
_DISTRACTORS = ('frame', 'bar', 'half')

_SPLIT_IDS = {'train': 0, 'val': 1}


@dataclass(frozen=True)
class SyntheticSpec:
    """What one generated image looks like; every field changes the data."""

    size: int = 128  # square images, in pixels
    min_side: int = 8  # object sides are log-uniform in [min_side, max_side]
    max_side: int = 40
    empty_prob: float = 0.15  # share of images without any labelled object
    mean_objects: float = 3.0  # Poisson mean of the object count in a non-empty image
    max_objects: int = 10
    zipf_exponent: float = 1.6  # class k (0-based) is drawn with weight 1 / (k + 1) ** s
    mean_distractors: float = 1.5  # Poisson mean of unlabelled look-alike shapes per image
    clutter: int = 3  # low-contrast strokes per image: background that looks busy


def class_probabilities(spec: SyntheticSpec) -> np.ndarray:
    """Zipf probabilities of the classes, in ``CLASSES`` order."""
    weights = 1.0 / np.arange(1, len(CLASSES) + 1) ** spec.zipf_exponent
    return weights / weights.sum()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Smooth colour blobs (an upsampled coarse grid): a texture that a detector must learn
    # to ignore, rather than a flat colour it gets for free. Pixel noise comes at the end.
    coarse = rng.uniform(60, 170, size=(6, 6, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    size = img.shape[0]
    for _ in range(count):
        p0 = rng.integers(0, size, 2)
        p1 = np.clip(p0 + rng.integers(-size // 3, size // 3 + 1, 2), 0, size - 1)
        # Grey-ish and thin: distinct from the saturated objects, but not trivially so.
        grey = float(rng.uniform(40, 200))
        colour = tuple(grey + rng.uniform(-20, 20, 3))
        cv2.line(img, tuple(map(int, p0)), tuple(map(int, p1)), colour, 1, cv2.LINE_AA)


def _shape_mask(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A filled shape called ``name`` inside a ``side`` x ``side`` uint8 mask."""
    mask = np.zeros((side, side), np.uint8)
    last = side - 1
    mid = last / 2.0
    centre = (side // 2, side // 2)
    bar = max(2, side // 3)
    lo = (side - bar) // 2
    if name in ('circle', 'ring'):
        cv2.circle(mask, centre, side // 2, 255, -1)
        if name == 'ring':
            cv2.circle(mask, centre, max(1, side // 4), 0, -1)
    elif name in ('square', 'frame'):
        mask[:] = 255
        if name == 'frame':
            mask[bar // 2 + 1 : last - bar // 2, bar // 2 + 1 : last - bar // 2] = 0
    elif name == 'triangle':
        # Apex up or down at random: a flip augmentation must not change the class.
        apex, base = (0, last) if rng.random() < 0.5 else (last, 0)
        pts = np.array([[mid, apex], [0, base], [last, base]])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    elif name == 'cross':
        mask[lo : lo + bar, :] = 255
        mask[:, lo : lo + bar] = 255
    elif name == 'diamond':
        pts = np.array([[mid, 0], [last, mid], [mid, last], [0, mid]])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    elif name == 'bar':
        mask[lo : lo + bar, :] = 255
        if rng.random() < 0.5:
            mask = np.ascontiguousarray(mask.T)
    elif name == 'half':
        cv2.ellipse(mask, centre, (side // 2, side // 2), 0, 0, 180, 255, -1)
    return mask


def _place(
    rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int]]
) -> tuple[int, int] | None:
    # Nothing overlaps (a 2 px gap), so every box is the whole visible object.
    for _ in range(20):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        if all(x + side + 2 <= a or a + c + 2 <= x or y + side + 2 <= b or b + c + 2 <= y
               for a, b, c in taken):
            return x, y
    return None


def render_image(
    rng: np.random.Generator, spec: SyntheticSpec
) -> tuple[np.ndarray, list[dict]]:
    """One BGR uint8 image and its objects as dicts with ``category`` (0-based), ``bbox``
    (COCO xywh, pixels) and ``area`` (pixels covered by the shape)."""
    img = _background(rng, spec.size)
    _clutter(rng, img, spec.clutter)
    # (class index or None for a distractor, side): objects first, so they get the room.
    items: list[tuple[int | None, int]] = []
    if rng.random() >= spec.empty_prob:
        count = int(np.clip(rng.poisson(spec.mean_objects), 1, spec.max_objects))
        labels = rng.choice(len(CLASSES), size=count, p=class_probabilities(spec))
        sides = np.exp(rng.uniform(np.log(spec.min_side), np.log(spec.max_side), count))
        items += [(int(k), round(float(s))) for k, s in zip(labels, sides)]
    # Distractors are no larger than objects and, where that allows, at least 10 px, so
    # that their shape stays readable: they are hard negatives, not label noise.
    count = int(rng.poisson(spec.mean_distractors))
    sides = rng.integers(min(10, spec.max_side), spec.max_side + 1, count)
    items += [(None, int(s)) for s in sides]

    objects: list[dict] = []
    taken: list[tuple[int, int, int]] = []
    for label, side in items:
        where = _place(rng, spec.size, side, taken)
        if where is None:
            continue
        x, y = where
        taken.append((x, y, side))
        name = CLASSES[label] if label is not None else _DISTRACTORS[rng.integers(3)]
        mask = _shape_mask(name, side, rng)
        # Distractors borrow a class colour: colour alone must not tell object from not.
        base = _COLOURS[label if label is not None else rng.integers(len(CLASSES))]
        # Jitter the colour a little so that it is not an exact lookup key either.
        colour = np.clip(base + rng.normal(0, 15, 3), 0, 255).astype(np.float32)
        patch = img[y : y + side, x : x + side]
        patch[mask > 0] = colour
        if label is None:
            continue
        ys, xs = np.nonzero(mask)
        x0, y0 = x + int(xs.min()), y + int(ys.min())
        w, h = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        objects.append({'category': label, 'bbox': [x0, y0, w, h], 'area': len(xs)})
    # Noise over objects too, so their pixels are not a flat, exact colour.
    img += rng.standard_normal(img.shape, dtype=np.float32) * 12.0
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def write_split(
    out: Path, split: str, num_images: int, seed: int, spec: SyntheticSpec
) -> Path:
    """Write ``out/<split>/*.png`` and ``out/annotations/instances_<split>.json``.

    Image ``i`` depends only on (seed, split, i): a larger split extends a smaller one and
    the val split does not move when the train split grows.
    """
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
        img, objects = render_image(rng, spec)
        file_name = f'{index:06d}.png'
        if not cv2.imwrite(str(img_dir / file_name), img):
            raise OSError(f'could not write {img_dir / file_name}')
        image_id = index + 1
        images.append(
            {'id': image_id, 'file_name': file_name, 'width': spec.size, 'height': spec.size}
        )
        for obj in objects:
            annotations.append({
                'id': len(annotations) + 1,
                'image_id': image_id,
                'category_id': obj['category'] + 1,
                'bbox': obj['bbox'],
                'area': obj['area'],
                'iscrowd': 0,
            })
    coco = {
        'info': {'description': 'plugin quick-start synthetic data', 'seed': seed,
                 'split': split, 'spec': asdict(spec)},
        'licenses': [],
        'images': images,
        'annotations': annotations,
        'categories': [{'id': i + 1, 'name': n, 'supercategory': 'shape'}
                       for i, n in enumerate(CLASSES)],
    }
    ann_file = out / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    return ann_file


def generate(
    out: str | Path,
    seed: int = 0,
    num_train: int = 1000,
    num_val: int = 250,
    spec: SyntheticSpec | None = None,
) -> dict[str, Path]:
    """Write the train and val splits under ``out``; returns the annotation file of each."""
    spec = spec or SyntheticSpec()
    if spec.max_side > spec.size or spec.min_side < 6 or spec.min_side > spec.max_side:
        raise ValueError(
            f'object sides must satisfy 6 <= min_side <= max_side <= size, got '
            f'min_side={spec.min_side}, max_side={spec.max_side}, size={spec.size}'
        )
    out = Path(out)
    return {split: write_split(out, split, n, seed, spec)
            for split, n in (('train', num_train), ('val', num_val))}
