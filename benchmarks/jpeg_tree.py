"""ImageNet-like JPEG trees for the data benchmarks and tests: ``train/<class>/*.jpg`` and
``test/<class>/*.jpg``, random sides (default 333-500 px, ImageNet's typical range), smooth colour
fields plus grain so that files land near ImageNet's ~100 kB at quality 90."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    coarse = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 18, (h, w, 3))
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def make_tree(
    root: str | Path,
    n_train: int,
    n_test: int | None = None,
    classes: int = 10,
    sides=(333, 500),
    seed: int = 0,
    quality: int = 90,
    shape: tuple[int, int] | None = None,
) -> Path:
    """Write the tree (skipped when ``root`` already holds it); returns ``root``. ``shape``: every
    image (width, height), e.g. (4000, 3000) for phone photos; else sides drawn from ``sides``."""
    root = Path(root)
    n_test = n_test if n_test is not None else max(classes, n_train // 10)
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % classes
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            w, h = shape or (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
            make_image(rng, w, h).save(d / f"{i:06d}.jpg", quality=quality)
    (root / "done").write_text("")
    return root


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--sides", default="333,500")
    a = ap.parse_args()
    lo, hi = (int(v) for v in a.sides.split(","))
    print(make_tree(a.root, a.train, sides=(lo, hi)))
