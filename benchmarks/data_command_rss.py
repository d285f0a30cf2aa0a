"""Peak memory of ``vgglab data`` on a streamed ImageFolder tree (issue 26, item 3): the process
tree's peak RSS (main and loader workers, polled every 50 ms) at two tree sizes and an input side,
with the ratio of the larger tree to the smaller. Bounded memory means a ratio near 1 and a peak
that does not grow with the image side beyond one bounded batch.

    python benchmarks/data_command_rss.py [--sizes 1000,4000] [--side 448]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402


def peak_rss(cmd: list[str]) -> tuple[int, float, int]:
    """(peak RSS of the process and its children in bytes, seconds, exit status)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps, peak, done = psutil.Process(proc.pid), [0], threading.Event()

    def poll():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode:
        print(err.decode()[-2000:], file=sys.stderr)
    return peak[0], time.perf_counter() - t, proc.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.machine import machine_label

    print(f"machine: {machine_label()}")
    peaks = []
    for n in [int(v) for v in a.sizes.split(",")]:
        tree = make_tree(Path(a.root) / f"jpeg{n}", n)
        with tempfile.TemporaryDirectory() as cache:
            cmd = [
                sys.executable,
                "-m",
                "vgglab",
                "data",
                "--dataset",
                "imagefolder",
                "--data-root",
                str(tree),
                "--set",
                "data.storage=stream",
                "--set",
                f"data.image_size={a.side}",
                "--set",
                f"data.cache_dir={cache}",
            ]
            rss, seconds, code = peak_rss(cmd)
        peaks.append(rss)
        print(
            f"vgglab data, streamed tree of {n:,} training images at {a.side} px: peak RSS {rss / 2**20:,.0f} MB "
            f"({seconds:.1f} s, exit {code})"
        )
    print(f"peak ratio {peaks[-1] / peaks[0]:.3f} ({a.sizes.split(',')[-1]} images over {a.sizes.split(',')[0]})")


if __name__ == "__main__":
    main()
