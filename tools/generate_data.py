"""Write the quick-start dataset: a small COCO-format detection set, deterministic per seed.

    python tools/generate_data.py --out data/generated --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Runs from a checkout without installing the plugin.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.data.synthetic import CLASSES, SyntheticSpec, generate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults are what the quick-start configs expect."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/generated', help='output folder')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=1000)
    parser.add_argument('--num-val', type=int, default=250)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate both splits and print what was written."""
    args = parse_args(argv)
    # Object sizes are fixed in pixels; only their upper bound follows a small image.
    default = SyntheticSpec()
    spec = SyntheticSpec(size=args.size, max_side=min(default.max_side, args.size))
    start = time.perf_counter()
    ann_files = generate(args.out, args.seed, args.num_train, args.num_val, spec)
    for split, ann_file in ann_files.items():
        coco = json.loads(ann_file.read_text())
        counts = [0] * len(CLASSES)
        for ann in coco['annotations']:
            counts[ann['category_id'] - 1] += 1
        per_class = ', '.join(f'{n}={c}' for n, c in zip(CLASSES, counts))
        print(f'{split}: {len(coco["images"])} images, {len(coco["annotations"])} boxes '
              f'({per_class}) -> {ann_file}')
    print(f'done in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
