"""Images/s of vgglab's streaming loader against torchvision's reference pipeline, side by side in
one process with the same number of workers (issue 20), on generated JPEG trees:

- ImageNet-like (sides 333-500 px, ~100 kB) and 12-megapixel photos (4000 x 3000);
- vgglab: StreamLoader with augment.crop resized at 224 (decode at reduced DCT size when the
  crop allows, one resampling of the crop box, flip; normalised on the device);
- torchvision: ImageFolder + DataLoader + v2 RandomResizedCrop(224) + RandomHorizontalFlip +
  ToImage + ToDtype(float32, scale=True) + Normalize (its reference train.py's transform);
- the limit: PIL's single-core full decode rate of the same files (no resize), and with draft.

    python benchmarks/data_throughput.py [--workers 1] [--images 400] [--photos 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402


def rate(batches, limit: int) -> float:
    it = iter(batches)
    next(it)  # workers started, first batch in: not timed
    n, t = 0, time.perf_counter()
    for x, _ in it:
        n += len(x)
        if n >= limit:
            break
    return n / (time.perf_counter() - t)


def vgglab_rate(tree: Path, workers: int, batch: int, limit: int, cache: str) -> float:
    from vgglab.data import load_dataset
    from vgglab.data.config import AugmentConfig, DataConfig
    from vgglab.data.stream import make_loader

    aug = AugmentConfig(crop="resized", scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    ds = load_dataset(
        DataConfig(dataset="imagefolder", root=str(tree), image_size=224, storage="stream", cache_dir=cache, val_size=0), aug
    )
    ld = make_loader(
        ds.train,
        batch,
        image_size=224,
        norm=ds.normalization(aug),
        augment=aug,
        shuffle=True,
        drop_last=True,
        workers=workers,
        channels_last=False,
    )
    ld.set_epoch(1)
    return rate(ld, limit)


def torchvision_rate(tree: Path, workers: int, batch: int, limit: int) -> float:
    from torchvision import datasets
    from torchvision.transforms import v2

    tf = v2.Compose(
        [
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ds = datasets.ImageFolder(str(tree / "train"), transform=tf)
    ld = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    return rate(ld, limit)


def decode_rate(tree: Path, n: int, draft: int | None = None) -> float:
    from PIL import Image

    files = sorted((tree / "train").rglob("*.jpg"))[:n]
    t = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
    return len(files) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=400, help="ImageNet-like images timed per pipeline")
    ap.add_argument("--photos", type=int, default=32, help="12-megapixel photos timed per pipeline")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.machine import cpu_model

    torch.set_num_threads(1)
    print(f"machine: {cpu_model()}, {a.workers} worker(s) each, batch {a.batch}, 224-px random-resized crops + flip")
    trees = [
        ("ImageNet-like 333-500 px", make_tree(Path(a.root) / "jpeg1000", 1000), a.images),
        (
            "photos 4000x3000",
            make_tree(Path(a.root) / "photos", a.photos + 2 * a.batch, n_test=10, shape=(4000, 3000), quality=85),
            a.photos,
        ),
    ]
    with tempfile.TemporaryDirectory() as cache:
        for name, tree, limit in trees:
            tv = torchvision_rate(tree, a.workers, a.batch, limit)
            vg = vgglab_rate(tree, a.workers, a.batch, limit, cache)
            full = decode_rate(tree, min(limit, 60))
            print(
                f"{name}: vgglab {vg:.1f} img/s, torchvision {tv:.1f} img/s, ratio {vg / tv:.2f}; "
                f"PIL decode on one core: full {full:.1f} img/s, reduced DCT (draft 224) {decode_rate(tree, min(limit, 60), 224):.1f} img/s"
            )


if __name__ == "__main__":
    main()
