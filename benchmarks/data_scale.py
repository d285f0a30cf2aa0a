"""Peak memory of opening an ImageFolder dataset, per tree size and storage (issue 20).

Generates ImageNet-like JPEG trees (benchmarks/jpeg_tree.py) and, for each, runs one child
process per measurement (a fresh cache each time) that opens the dataset at 224 px
(``load_dataset``: decode, statistics, cache) and reports its peak RSS with the cache file's size.

    python benchmarks/data_scale.py --sizes 1000,10000 [--root /tmp/vgglab-trees]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from vgglab.data import load_dataset
from vgglab.data.config import DataConfig
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch and vgglab imported
t = time.perf_counter()
ds = load_dataset(DataConfig(dataset="imagefolder", root=sys.argv[1], image_size=224, cache_dir=sys.argv[2], val_size=0))
seconds = time.perf_counter() - t
cache = ds.cache_file.stat().st_size if ds.cache_file and ds.cache_file.exists() else 0
print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base": base, "cache": cache,
                  "images": len(ds.train) + len(ds.test), "seconds": seconds}))
"""


def measure(tree: Path) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", CHILD, str(tree), cache], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.train.speed import cpu_model

    print(f"machine: {cpu_model()}, peak RSS of one process opening an ImageFolder tree at 224 px (stored at 256)")
    print("(growth: peak RSS minus the RSS after importing torch and vgglab)")
    print(f"{'images':>8} {'storage':>8} {'peak RSS MB':>12} {'growth MB':>10} {'cache MB':>9} {'growth/cache':>12} {'seconds':>8}")
    for n in (int(v) for v in a.sizes.split(",")):
        tree = make_tree(Path(a.root) / f"jpeg{n}", n)
        r = measure(tree)
        grow = r["peak_rss"] - r["base"]
        print(f"{r['images']:>8} {'memory':>8} {r['peak_rss'] / 1e6:>12.0f} {grow / 1e6:>10.0f} {r['cache'] / 1e6:>9.0f} "
              f"{grow / max(r['cache'], 1):>12.2f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
