"""Training images/s from the streamed storage against the memory storage on the same JPEG tree,
same model and settings, side by side in one process (issue 20): vgg11_bn at 224, SGD, batch 32,
augment.crop resized + flip; the arms alternate, twice each.

    python benchmarks/stream_training.py [--steps 6] [--width 1.0] [--workers auto]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.data import load_dataset
    from vgglab.data.config import AugmentConfig, DataConfig
    from vgglab.data.stream import make_loader
    from vgglab.machine import cpu_model
    from vgglab.models import create_model

    tree = make_tree(Path(a.root) / "jpeg1000", 1000)
    aug = AugmentConfig(crop="resized", scale=(0.35, 1.0))
    workers = a.workers if a.workers == "auto" else int(a.workers)
    model = create_model("vgg11_bn", num_classes=10, input_size=224, width=a.width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loaders = {}
    with tempfile.TemporaryDirectory() as cache:
        for storage in ("memory", "stream"):
            ds = load_dataset(
                DataConfig(dataset="imagefolder", root=str(tree), image_size=224, storage=storage, cache_dir=cache, val_size=0),
                aug,
            )
            loaders[storage] = make_loader(
                ds.train,
                a.batch,
                image_size=224,
                norm=ds.normalization(aug),
                augment=aug,
                shuffle=True,
                drop_last=True,
                workers=workers,
            )
        rates = {k: [] for k in loaders}
        for round_ in range(2):
            for name, ld in loaders.items():
                ld.set_epoch(round_ + 1)
                it = iter(ld)
                x, y = next(it)  # warm-up step: workers started, first batch in
                torch.nn.functional.cross_entropy(model(x), y).backward()
                n, t = 0, time.perf_counter()
                for _ in range(a.steps):
                    x, y = next(it)
                    opt.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                    n += len(x)
                rates[name].append(n / (time.perf_counter() - t))
                del it
    mem, st = (max(rates[k]) for k in ("memory", "stream"))
    print(f"machine: {cpu_model()}, vgg11_bn width {a.width} at 224, batch {a.batch}, fp32 channels_last, workers {workers}")
    print(f"memory {mem:.2f} img/s, stream {st:.2f} img/s (best of 2 rounds of {a.steps} steps), stream/memory {st / mem:.2f}")


if __name__ == "__main__":
    main()
