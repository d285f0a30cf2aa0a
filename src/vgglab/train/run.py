"""The run directory: its files, the metrics log, and where to print progress."""

from __future__ import annotations

import contextlib
import csv
import io
import sys
import time
from collections import defaultdict
from pathlib import Path

from ..data.cache import atomic_write
from ..errors import VgglabError

METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "seconds", "images_per_s"]
TIMING_COLUMNS = {"seconds", "images_per_s"}


class PhaseClock:
    """Wall-clock seconds per phase of a run (data, whitening, speed probe, training, validation,
    checkpoints, final test), written to results.json as ``timings`` to show where a run's time goes
    outside its epochs."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t

    def summary(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def new_run_dir(out: str | Path | None, name: str) -> Path:
    """``out`` exactly, or ``runs/<name>-<timestamp>``; an existing non-empty folder is refused."""
    path = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise VgglabError(f"run directory {path} already exists and is not empty: pass another --out, or --resume {path} to continue it")
    path.mkdir(parents=True, exist_ok=True)
    return path


class MetricsLog:
    """``metrics.csv``: one row per finished epoch; accuracies as fractions."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, last_epoch: int) -> None:
        """Keep rows up to ``last_epoch`` (a resumed run rewrites later ones, never duplicates)."""
        keep = [r for r in self.rows() if int(r["epoch"]) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(keep)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def append(self, row: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def progress_mode(setting: str) -> str:
    """``bar`` on an interactive terminal, else one ``line`` per epoch (CI logs stay readable)."""
    if setting != "auto":
        return setting
    return "bar" if sys.stderr.isatty() else "line"
