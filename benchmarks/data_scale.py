"""Peak memory of opening an ImageFolder dataset, per tree size and storage (issue 20).

Generates ImageNet-like JPEG trees (benchmarks/jpeg_tree.py) and, for each, runs one child
process per measurement (a fresh cache each time) that opens the dataset at 224 px (memory:
decode, statistics, cache; stream: the index, then one streamed epoch) and reports the peak RSS
of its process tree (workers included) with the cache file's size.

    python benchmarks/data_scale.py --sizes 1000,10000 [--root /tmp/vgglab-trees]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--storages", default="memory,stream")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.train.speed import cpu_model

    print(f"machine: {cpu_model()}, peak RSS of the process tree opening an ImageFolder tree at 224 px (memory: decode, "
          "statistics, cache at 256 px; stream: index, then one epoch of scale-jittered batches of 64 with 2 workers)")
    print("(growth: peak RSS minus the RSS after importing torch and vgglab; seconds: opening only)")
    print(f"{'images':>8} {'storage':>8} {'peak RSS MB':>12} {'growth MB':>10} {'cache MB':>9} {'growth/cache':>12} {'seconds':>8}")
    for n in (int(v) for v in a.sizes.split(",")):
        tree = make_tree(Path(a.root) / f"jpeg{n}", n)
        for storage in a.storages.split(","):
            r = measure(tree, storage)
            grow = r["peak_rss"] - r["base"]
            ratio = f"{grow / r['cache']:>12.2f}" if r["cache"] else f"{'-':>12}"  # stream caches only an index
            print(f"{r['images']:>8} {storage:>8} {r['peak_rss'] / 1e6:>12.0f} {grow / 1e6:>10.0f} {r['cache'] / 1e6:>9.0f} "
                  f"{ratio} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
