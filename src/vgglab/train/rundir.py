"""The run directory, and the wall-clock time each phase of a run takes."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path

from ..errors import VgglabError
from ..runfiles import BEST, CONFIG, LAST, METRICS, RESULTS, WEIGHTS
from .runlock import LOCK_NAME, RunLock


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


def new_run_dir(out: str | Path | None, name: str, lock: RunLock) -> Path:
    """``out`` exactly, or ``runs/<name>-<timestamp>``, made and locked; an existing non-empty
    folder is refused (checked again once locked: two new runs into one folder, one proceeds)."""
    path = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and not path.is_dir():
        raise VgglabError(f"--out {path} is a file; give a folder for the run")
    _refuse_used(path)
    path.mkdir(parents=True, exist_ok=True)
    lock.acquire(path)
    try:
        _refuse_used(path)
    except VgglabError:
        lock.release()
        raise
    return path


def _refuse_used(path: Path) -> None:
    if not path.is_dir() or not any(p.name != LOCK_NAME for p in path.iterdir()):
        return
    if (
        (path / CONFIG).is_file()
        and not (path / LAST).is_file()
        and not any((path / n).exists() for n in (BEST, WEIGHTS, RESULTS, METRICS))
    ):
        raise VgglabError(
            f"{path} holds a run that stopped before its first checkpoint: restart it in place with "
            f"`vgglab train --resume {path}` (--set may change any setting, nothing was trained), or pass another --out"
        )
    raise VgglabError(
        f"run directory {path} already exists and is not empty: pass another --out, or --resume {path} to continue it"
    )
