"""The run directory, and the wall-clock time each phase of a run takes."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path

from ..errors import VgglabError


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
