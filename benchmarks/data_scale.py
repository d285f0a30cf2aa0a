"""Peak memory per tree size: opening an ImageFolder dataset (issue 20), and a whole streamed
``vgglab train`` run and ``vgglab eval`` of it (issue 26).

Generates ImageNet-like JPEG trees (benchmarks/jpeg_tree.py) and, for each, runs one child
process per measurement (a fresh cache each time) that opens the dataset at 224 px (memory:
decode, statistics, cache; stream: the index, then one streamed epoch) and reports the peak RSS
of its process tree (workers included) with the cache file's size.

``--whole-run`` instead runs the commands themselves as child processes and samples the RSS of
each one's process tree (loader workers included) every 50 ms: ``vgglab train`` of one epoch,
streamed (index, statistics, a training epoch with scale jittering, validation, checkpoints,
the final test), then ``vgglab eval`` of the run's test split. The model is a narrow VGG-11 at
96 px so that the data path, not the network, is what grows with the tree.

    python benchmarks/data_scale.py --sizes 1000,10000 [--root /tmp/vgglab-trees]
    python benchmarks/data_scale.py --whole-run --sizes 1000,20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402

CHILD = r"""
import json, sys, threading, time
import psutil
from vgglab.data import load_dataset
from vgglab.data.config import AugmentConfig, DataConfig
from vgglab.data.stream import make_loader

me, peak, done = psutil.Process(), [0], threading.Event()
def tree_rss():
    total = me.memory_info().rss
    for c in me.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], tree_rss())
        time.sleep(0.05)
base = tree_rss()  # torch and vgglab imported
threading.Thread(target=sample, daemon=True).start()
storage = sys.argv[3]
aug = AugmentConfig(crop="scale", scale_min=256, scale_max=512) if storage == "stream" else AugmentConfig(crop="pad", padding=0)
t = time.perf_counter()
ds = load_dataset(DataConfig(dataset="imagefolder", root=sys.argv[1], image_size=224, cache_dir=sys.argv[2], val_size=0,
                             storage=storage), aug)
seconds = time.perf_counter() - t
if storage == "stream":  # and one streamed epoch of training batches
    ld = make_loader(ds.train, 64, image_size=224, norm=ds.normalization(aug), augment=aug, shuffle=True, drop_last=True,
                     workers=2, channels_last=False)
    ld.set_epoch(1)
    for x, y in ld:
        pass
done.set()
cache = ds.cache_file.stat().st_size if ds.cache_file and ds.cache_file.exists() else 0
print(json.dumps({"peak_rss": max(peak[0], tree_rss()), "base": base, "cache": cache,
                  "images": len(ds.train) + len(ds.test), "seconds": seconds}))
"""


def measure(tree: Path, storage: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", CHILD, str(tree), cache, storage], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


RUN_RECIPE = {
    "name": "data_scale",
    # evaluation batches of 50: at 1,000 images validation (55) and test (100) already span two
    # batches, so the sizes compare the data path at equal batch memory
    "data": {
        "dataset": "imagefolder",
        "image_size": 96,
        "storage": "stream",
        "batch_size": 64,
        "eval_batch_size": 50,
        "val_size": 0.05,
        "workers": 2,
    },
    "augment": {"crop": "scale", "scale_min": 96, "scale_max": 160, "flip": True},
    "model": {"name": "vgg11_bn", "options": {"width": 0.125, "head": "gap"}},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "schedule": {"name": "none"},
    "train": {"epochs": 1, "precision": "fp32", "channels_last": False},
    "log": {"progress": "none"},
}


def tree_peak(cmd: list[str], env: dict) -> tuple[int, float]:
    """(peak RSS of the command's process tree, seconds) of one command run to its end."""
    import os
    import time

    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-2000:]}")
    return peak, time.perf_counter() - t


def measure_run(tree: Path) -> dict:
    """Peak process-tree RSS and time of a whole streamed training run of ``tree``, then of its eval."""
    import yaml

    with tempfile.TemporaryDirectory() as work:
        recipe = {**RUN_RECIPE, "data": {**RUN_RECIPE["data"], "root": str(tree), "cache_dir": f"{work}/cache"}}
        (Path(work) / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        vgglab = [sys.executable, "-m", "vgglab"]
        train = tree_peak([*vgglab, "train", "--config", f"{work}/recipe.yaml", "--out", f"{work}/run"], env)
        ev = tree_peak([*vgglab, "eval", f"{work}/run", "--device", "cpu", "--out", f"{work}/ev"], env)
        images = sum(1 for p in tree.rglob("*.jpg"))
    return {"images": images, "train": train, "eval": ev}


def main_whole_run(a) -> None:
    from vgglab.machine import cpu_model

    print(
        f"machine: {cpu_model()}, peak RSS of the process tree (workers included) of whole streamed commands: "
        f"`vgglab train` (1 epoch: index, statistics, training with scale jitter {RUN_RECIPE['augment']['scale_min']}-"
        f"{RUN_RECIPE['augment']['scale_max']} px, validation, checkpoints, test; {RUN_RECIPE['model']['name']} width 0.125 at "
        f"{RUN_RECIPE['data']['image_size']} px, batches of 64, evaluation batches of 50, 2 workers), then `vgglab eval` of the run"
    )
    print(f"{'images':>8} {'command':>8} {'peak RSS MB':>12} {'vs first':>9} {'seconds':>8}")
    first = {}
    for n in (int(v) for v in a.sizes.split(",")):
        r = measure_run(make_tree(Path(a.root) / f"jpeg{n}", n))
        for cmd in ("train", "eval"):
            peak, secs = r[cmd]
            first.setdefault(cmd, peak)
            print(f"{r['images']:>8} {cmd:>8} {peak / 1e6:>12.0f} {peak / first[cmd]:>9.2f} {secs:>8.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--whole-run", action="store_true", help="whole streamed train and eval commands instead of opening the data")
    ap.add_argument("--storages", default="memory,stream")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    if a.whole_run:
        return main_whole_run(a)
    from vgglab.machine import cpu_model

    print(
        f"machine: {cpu_model()}, peak RSS of the process tree opening an ImageFolder tree at 224 px (memory: decode, "
        "statistics, cache at 256 px; stream: index, then one epoch of scale-jittered batches of 64 with 2 workers)"
    )
    print("(growth: peak RSS minus the RSS after importing torch and vgglab; seconds: opening only)")
    print(
        f"{'images':>8} {'storage':>8} {'peak RSS MB':>12} {'growth MB':>10} {'cache MB':>9} {'growth/cache':>12} {'seconds':>8}"
    )
    for n in (int(v) for v in a.sizes.split(",")):
        tree = make_tree(Path(a.root) / f"jpeg{n}", n)
        for storage in a.storages.split(","):
            r = measure(tree, storage)
            grow = r["peak_rss"] - r["base"]
            ratio = f"{grow / r['cache']:>12.2f}" if r["cache"] else f"{'-':>12}"  # stream caches only an index
            print(
                f"{r['images']:>8} {storage:>8} {r['peak_rss'] / 1e6:>12.0f} {grow / 1e6:>10.0f} {r['cache'] / 1e6:>9.0f} "
                f"{ratio} {r['seconds']:>8.1f}"
            )


if __name__ == "__main__":
    main()
