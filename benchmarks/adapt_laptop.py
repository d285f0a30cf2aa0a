"""Adapting a pretrained VGG-16 on a laptop: the probe recipe against one epoch of fine-tuning, side by side.

On a generated JPEG tree of phone-like photos (default 250 training and 150 test images of 1000 x 750
px, 2 classes) and torchvision-format weights that are random but fixed (no download here: VGG-16 for
the probe, VGG-16-BN for the fine-tune, each written once as the .pth file torchvision would fetch), it
runs each command as a child process and samples the RSS of its process tree (loader workers
included) every 50 ms:

  (a) ``vgglab train --config probe_imagefolder``, the first run: descriptors computed into a fresh
      feature cache, the head fitted, the checkpoint written;
  (b) the same recipe again with another ``probe.c_grid``: every descriptor read from the cache;
  (c) ``vgglab train --config finetune_imagefolder --set train.epochs=1``: the whole command and its
      one epoch's seconds from metrics.csv (the recipe runs 15).

``--sizes 250,2000`` repeats (a) on a larger tree to show its memory does not grow with the photos.
Precision is the recipes' ``auto``; the machine and any ATEN_CPU_CAPABILITY in the environment are
printed with the figures.

    python benchmarks/adapt_laptop.py [--work /tmp/vgglab-adapt] [--sizes 250,2000]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/adapt_laptop.py --only-probe
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from data_scale import tree_peak  # noqa: E402
from jpeg_tree import make_tree  # noqa: E402


def weights(path: Path, arch: str) -> Path:
    """torchvision's ``arch`` with its own random init (seed 0), saved as its state dict."""
    if not path.exists():
        import torch
        import torchvision

        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/vgglab-adapt")
    ap.add_argument("--train", type=int, default=250)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--sizes", default="", help="more training-set sizes for (a) alone, e.g. 2000")
    ap.add_argument("--only-probe", action="store_true", help="(a) and (b) only")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    from vgglab.machine import cpu_capability, cpu_model, native_bf16

    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "VGGLAB_PROGRESS_S": "60"}
    isa = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    tag = "-".join(isa.values()).lower() or "native"
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch capability {cpu_capability()}, native bf16 {native_bf16()}"
        + (f", {' '.join(f'{k}={v}' for k, v in isa.items())}" if isa else "")
    )
    vgg16 = weights(work / "vgg16-random.pth", "vgg16")
    vgg16_bn = weights(work / "vgg16_bn-random.pth", "vgg16_bn")
    vgglab = [sys.executable, "-m", "vgglab", "train"]

    def probe(tree: Path, cache: Path, out: Path, *more: str):
        if out.exists():
            import shutil

            shutil.rmtree(out)
        sets = [f"data.root={tree}", f"train.init_from={vgg16}", f"data.cache_dir={cache}", "log.progress=line", *more]
        peak, secs = tree_peak([*vgglab, "--config", "probe_imagefolder", *(f"--set={s}" for s in sets), "--out", str(out)], env)
        res = json.loads((out / "results.json").read_text())
        return peak, secs, res

    print(f"{'run':<44} {'photos':>7} {'seconds':>8} {'peak RSS MB':>12} {'test top-1':>10} {'computed':>9}")
    for n in [a.train] + [int(s) for s in a.sizes.split(",") if s and int(s) != a.train]:
        tree = make_tree(work / f"photos{n}", n, a.test, classes=a.classes, shape=(1000, 750))
        cache = work / f"cache-{tag}-{n}"
        if cache.exists():
            import shutil

            shutil.rmtree(cache)
        rows = [("(a) probe, first run", *probe(tree, cache, work / f"probe-a-{tag}-{n}"))]
        if n == a.train:
            rows.append(
                (
                    "(b) probe again, probe.c_grid=[0.05,0.5,5]",
                    *probe(tree, cache, work / f"probe-b-{tag}-{n}", "probe.c_grid=[0.05,0.5,5]"),
                )
            )
        for what, peak, secs, res in rows:
            print(
                f"{what:<44} {n + a.test:>7} {secs:>8.1f} {peak / 1e6:>12.0f} {100 * res['test_top1']:>9.1f}% "
                f"{res['probe']['descriptors_computed']:>9}",
                flush=True,
            )
    if a.only_probe:
        return
    tree = work / f"photos{a.train}"
    out, cache = work / f"finetune-{tag}", work / f"cache-{tag}-ft"
    for old in (out, cache):  # a first run, as (a) is: the speed probe measures, nothing is cached
        if old.exists():
            import shutil

            shutil.rmtree(old)
    sets = [f"data.root={tree}", f"train.init_from={vgg16_bn}", f"data.cache_dir={cache}", "train.epochs=1"]
    peak, secs = tree_peak(
        [*vgglab, "--config", "finetune_imagefolder", *(f"--set={s}" for s in sets), "--out", str(out), "--quiet"], env
    )
    with open(out / "metrics.csv") as f:
        epoch = list(csv.DictReader(f))[0]
    res = json.loads((out / "results.json").read_text())
    print(
        f"{'(c) finetune_imagefolder, 1 of 15 epochs':<44} {a.train + a.test:>7} {secs:>8.1f} {peak / 1e6:>12.0f} "
        f"{100 * res['test_top1']:>9.1f}% {'-':>9}   (the epoch itself: {float(epoch['seconds']):.1f} s; phases: {res['timings']})"
    )


if __name__ == "__main__":
    main()
