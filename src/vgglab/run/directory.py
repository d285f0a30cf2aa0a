"""The run directory: made new (or refused when it holds something), and locked."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import VgglabError
from .files import BEST, CONFIG, LAST, METRICS, RESULTS, WEIGHTS
from .lock import LOCK_NAME, RunLock


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
