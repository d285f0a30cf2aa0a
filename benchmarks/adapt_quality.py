"""Which way of adapting a pretrained VGG wins on a few photos per class, with weights trained here.

No ImageNet weights exist on this project's machines, so the "pretrained" network is trained here: a
VGG-11-BN (width 0.5, a cifar head of two 256-wide FC layers) on CIFAR-10's classes 0-4 (airplane,
automobile, bird, cat, deer; 25,000 images). It is then adapted to classes 5-9 (dog, frog, horse,
ship, truck) from 50 training images per class (5 of them the validation split), and tested on
their 5,000 test images, five ways, each on ``--seeds`` different draws of the 50 images:

- probe: ``probe_imagefolder`` (fc7, C chosen on validation);
- probe + views: the same with ``probe.views=8`` (padded crops and flips), the head fitted by L-BFGS on
  every view at once, or trained by the recipe's SGD and schedule one view per image per epoch;
- LP-FT: fine-tuning every layer, starting from the probe run (``init_mode: exact``); and the same with
  the features frozen (BatchNorm in eval mode) for the first 5 epochs;
- fine-tune: every layer, from the pretrained weights but the class layer (``all-but-last``);
- scratch: the same network and schedule from a random init.

Each run's test top-1 and wall time are printed; then the mean, standard deviation and lowest per way.

    python benchmarks/adapt_quality.py --cifar ~/data/cifar10 [--seeds 3] [--pretrain-epochs 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

OLD, NEW = ["airplane", "automobile", "bird", "cat", "deer"], ["dog", "frog", "horse", "ship", "truck"]
MODEL = {"name": "vgg11_bn", "options": {"width": 0.5, "head": {"type": "cifar", "hidden": 256}}}


def link_tree(src: Path, dst: Path, classes: list[str], per_class: int | None, seed: int) -> Path:
    """An ImageFolder tree of symlinks: ``per_class`` training images per class drawn with ``seed``, every test image."""
    if (dst / "done").exists():
        return dst
    rng = random.Random(seed)
    for split in ("train", "test"):
        for c in classes:
            files = sorted((src / split / c).iterdir())
            if split == "train" and per_class is not None:
                files = rng.sample(files, per_class)
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                os.symlink(f, dst / split / c / f.name)
    (dst / "done").write_text("")
    return dst


def finetune(tree: Path, cache: Path, init: str | None, mode: str, epochs: int, lr: float, seed: int) -> dict:
    train = {"epochs": epochs, "seed": seed, "precision": "fp32"}
    if init:
        train.update(init_from=init, init_mode=mode)
    return {
        "name": "adapt",
        "data": {
            "dataset": "imagefolder",
            "root": str(tree),
            "image_size": 32,
            "val_size": 25,
            "batch_size": 32,
            "eval_batch_size": 500,
            "storage": "memory",
            "cache_dir": str(cache),
        },
        "augment": {"crop": "pad", "padding": 4, "flip": True},
        "model": MODEL,
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": train,
        "log": {"progress": "none"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", default=os.environ.get("VGGLAB_CIFAR10"), help="the CIFAR-10 ImageFolder tree")
    ap.add_argument("--work", default="/tmp/vgglab-adapt-quality")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each fine-tune and of training from scratch")
    a = ap.parse_args()
    if not a.cifar:
        raise SystemExit("give --cifar (the CIFAR-10 ImageFolder tree) or set VGGLAB_CIFAR10")
    import vgglab
    from vgglab.machine import cpu_model
    from vgglab.run.checkpoint import load_checkpoint

    work, cifar = Path(a.work), Path(a.cifar).expanduser()
    cache = work / "cache"
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; pretraining on {', '.join(OLD)}; adapting to {', '.join(NEW)}")
    pre_dir = work / "pretrain"
    if not (pre_dir / "results.json").exists():
        t = time.perf_counter()
        recipe = finetune(link_tree(cifar, work / "old", OLD, None, 0), cache, None, "", a.pretrain_epochs, 0.05, 0)
        recipe["data"].update(val_size=0, batch_size=128)
        res = vgglab.fit(recipe, out=pre_dir, log=lambda *_: None)
        print(
            f"pretrained: test top-1 {100 * res.metrics['test_top1']:.2f}% on classes 0-4 in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
    norm = load_checkpoint(pre_dir)["normalization"]
    pinned = [f"augment.mean={norm['mean']}", f"augment.std={norm['std']}"]
    results: dict[str, list[tuple[float, float]]] = {}

    def record(way: str, seed: int, recipe, out: Path, overrides: list[str] | None = None) -> str:
        t = time.perf_counter()
        res = vgglab.fit(recipe, overrides, out=out, log=lambda *_: None)
        seconds = time.perf_counter() - t
        results.setdefault(way, []).append((res.metrics["test_top1"], seconds))
        print(f"{way:<16} seed {seed}: test top-1 {100 * res.metrics['test_top1']:6.2f}%  {seconds:6.1f}s", flush=True)
        return str(res.run_dir)

    for seed in range(a.seeds):
        tree = link_tree(cifar, work / f"new-{seed}", NEW, 50, seed)
        out = work / f"seed{seed}"
        probe_sets = [
            f"data.root={tree}",
            "data.image_size=32",
            "data.storage=memory",
            "data.val_size=25",
            "data.eval_batch_size=500",
            f"data.cache_dir={cache}",
            f"train.init_from={pre_dir}",
            "model.name=vgg11_bn",
            "augment.crop=pad",
            "augment.padding=4",
            f"train.seed={seed}",
            "log.progress=none",
            *pinned,
        ]
        probe_run = record("probe", seed, "probe_imagefolder", out / "probe", probe_sets)
        views = [*probe_sets, "probe.views=8"]
        record("views, L-BFGS", seed, "probe_imagefolder", out / "views", [*views, "probe.head=logistic"])
        record("views, SGD head", seed, "probe_imagefolder", out / "views-sgd", [*views, "probe.head=sgd"])
        lpft = finetune(tree, cache, probe_run, "exact", a.epochs, 0.01, seed)
        lpft["augment"].update(mean=norm["mean"], std=norm["std"])
        record("LP-FT", seed, lpft, out / "lpft")
        # the probe's head was fitted on eval-mode BatchNorm descriptors: frozen features (BatchNorm in eval
        # mode) for the first epochs let the head settle before batch statistics reach it
        lpft["train"].update(freeze=["features"], unfreeze_after=5)
        record("LP-FT, frozen 5", seed, lpft, out / "lpft-frozen")
        ft = finetune(tree, cache, str(pre_dir), "all-but-last", a.epochs, 0.01, seed)
        ft["augment"].update(mean=norm["mean"], std=norm["std"])
        record("fine-tune", seed, ft, out / "ft")
        record("scratch", seed, finetune(tree, cache, None, "", a.epochs, 0.05, seed), out / "scratch")
    print(f"\n{'way':<16} {'runs':>4} {'mean top-1':>10} {'std':>6} {'lowest':>7} {'mean s':>7}")
    for way, rows in results.items():
        accs = [100 * r for r, _ in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(
            f"{way:<16} {len(rows):>4} {statistics.mean(accs):>9.2f}% {sd:>6.2f} {min(accs):>6.2f}% {statistics.mean(s for _, s in rows):>7.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
