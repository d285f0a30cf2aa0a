"""Every file and folder a training run owns in its directory, named once.

The writers (the engine, the reporter, the lock, the split record, MLflow's id file) take their
names from here, and so does the guard that keeps other commands' outputs (``--out`` of export,
report, features) off them: a new run file added here is protected without a second list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import VgglabError
from ..files import refuse_special

CONFIG = "config.yaml"  # the resolved config (and what auto resolved to)
LAST = "last.pt"  # the full training state after the latest epoch
BEST = "best.pt"  # the state of the epoch selected on validation
WEIGHTS = "model.safetensors"  # the selected weights with their metadata
METRICS = "metrics.csv"  # one row per finished epoch
RESULTS = "results.json"  # the final validation and test metrics
INIT_REPORT = "init_report.txt"  # what train.init_from copied
LOCK = "run.lock"  # held by the process writing the run
SPLITS = "splits.json.gz"  # which files the run trained and validated on (ImageFolder trees)
MLFLOW_ID = "mlflow_run.json"  # the MLflow run this run logs to
TENSORBOARD = "tensorboard"  # TensorBoard's event files (a folder)
PROBE = "probe.json"  # a probe run's regularisation grid, its scores and the choice (vgglab.train.linear_probe)

RUN_FILES = (CONFIG, LAST, BEST, WEIGHTS, METRICS, RESULTS, INIT_REPORT, LOCK, SPLITS, MLFLOW_ID, TENSORBOARD, PROBE)


def is_run_dir(path: Path) -> bool:
    """A folder ``vgglab train`` wrote: its config beside a checkpoint, metrics or a lock."""
    path = Path(path)
    return (path / CONFIG).is_file() and ((path / LAST).is_file() or (path / METRICS).is_file() or (path / LOCK).exists())


def remove_stale_temp_files(run_dir: Path) -> int:
    """Remove the temporary files (regular files only) that an atomic write of a run file
    (``.last.pt.<random>.tmp``) left behind when its process was killed (SIGKILL, a power cut) before
    it could remove them; returns how many went. Only the process holding the run's lock writes
    these, so once the lock is taken they are all stale."""
    removed = 0
    prefixes = tuple(f".{name}." for name in RUN_FILES)
    with contextlib.suppress(OSError):
        for path in Path(run_dir).iterdir():
            if path.name.startswith(prefixes) and path.name.endswith(".tmp") and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
    return removed


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def check_output_file(out: str | Path, reading: Sequence[str | Path] = (), flag: str = "--out", example: str = "out") -> Path:
    """``out`` as a path a command may write one file to: not a folder, not the file (or one of the
    run's files) being read, and not one of any run's own files (:data:`RUN_FILES`). An existing
    file there is replaced, atomically, by the caller."""
    out = Path(out)
    if out.is_dir():
        raise VgglabError(f"{flag} {out} is a folder; give a file path, e.g. {out / example}")
    refuse_special(out, flag)
    for target in dict.fromkeys((out, _resolved(out))):  # a link into a run directory is its file too
        if target.name in RUN_FILES and is_run_dir(target.parent):
            raise VgglabError(
                f"{flag} {out} would replace run {target.parent}'s own {target.name}; write elsewhere, "
                f"e.g. {target.parent / 'export' / example}"
            )
    for src in map(Path, reading):
        if _resolved(out) == _resolved(src):
            raise VgglabError(f"{flag} {out} is the file being read; write the output elsewhere, e.g. {out.parent / example}")
    return out
