"""A run's MLflow record: ``mlflow_run.json`` (which MLflow run a run directory logs to, read strictly and
written atomically), whether a copied directory still belongs to that run, and the lock that keeps two
processes from creating a new SQLite store's tables at once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

from ..files import write_text
from ..run.files import MLFLOW_ID as ID_FILE
from ..strict import ConfigError

_ID_RE = re.compile(r"[0-9a-zA-Z_-]{1,64}")


def read_id_file(path: Path) -> dict | None:
    """``mlflow_run.json`` as vgglab writes it (``run_id``, ``tracking_uri``, ``run_dir`` since
    it is kept), or None when there is none. A file of any other shape is one line naming it and
    the fix: a guess would log this run into some other MLflow run."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        for key in ("run_id", "tracking_uri"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"no {key} string")
        if not _ID_RE.fullmatch(data["run_id"]):
            raise ValueError(f"run_id {data['run_id'][:40]!r} is not an MLflow run id")
        if not isinstance(data.get("run_dir", ""), str):
            raise ValueError("run_dir is not a path")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not the MLflow run record vgglab writes ({why(exc)}); restore it, or delete it to "
            "log this run as a new MLflow run (or set log.mlflow: false)"
        ) from None
    return {k: data[k] for k in ("run_id", "tracking_uri", "run_dir") if k in data}


def write_id_file(path: Path, run_id: str, uri: str, run_dir: str) -> None:
    write_text(path, json.dumps({"run_id": run_id, "tracking_uri": uri, "run_dir": run_dir}, indent=1))


def still_owns(saved: dict) -> bool:
    """Whether the directory an id file was written for still holds that MLflow run (then a
    second directory holding the same file is a copy, not the run moved)."""
    try:
        other = read_id_file(Path(saved["run_dir"]) / ID_FILE)
    except ConfigError:
        return True  # damaged there: still not ours to continue
    return other is not None and other["run_id"] == saved["run_id"]


@contextlib.contextmanager
def store_lock(uri: str):
    """For a SQLite store, an flock on its folder while a run is created: MLflow creates a new
    store's tables on first use, and two processes doing it at once fail ("table already exists")."""
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None
    if path is None or sys.platform == "win32" or path.startswith("file:") or "?" in path:  # no flock on Windows
        yield
        return
    folder = Path(path).parent
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # MLflow reports the folder's problem itself
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:200].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
