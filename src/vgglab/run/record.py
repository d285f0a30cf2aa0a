"""Which files a run's tree held and which it validated on (``splits.json.gz`` in its run
directory), and what changed in the tree since: a resumed run keeps its validation split as it
was, so no image it selected checkpoints by becomes a training image, and it says what was added
or removed.

Only ImageFolder trees have file names; CIFAR and the digits are fixed and need no record.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..data.errors import DataError
from ..files import atomic_write
from .files import SPLITS

VERSION = 1


def record_of(ds) -> dict | None:
    """``{"tree": files per folder split, "val": the carved validation files}`` (None without files)."""
    if ds.listing is None:
        return None
    return {"version": VERSION, "tree": ds.listing, "val": list(ds.val.files) if ds.val is not None else []}


def write_record(run_dir: Path, ds) -> None:
    """Record the dataset's files in the run directory (nothing for sources without files)."""
    record = record_of(ds)
    if record is None:
        return
    data = gzip.compress(json.dumps(record).encode(), compresslevel=6)
    atomic_write(Path(run_dir) / SPLITS, lambda tmp: Path(tmp).write_bytes(data))


def read_record(run_dir: Path) -> dict | None:
    """The record a run wrote, or None when it has none (a run of another source, or one made
    before records were kept). A damaged record is one line, not a silent re-carve."""
    path = Path(run_dir) / SPLITS
    if not path.exists():
        return None
    try:
        with gzip.open(path, "rb") as f:
            blob = json.loads(f.read())
        if not isinstance(blob, dict) or blob.get("version") != VERSION:
            raise ValueError("not a split record of this version")
        lists = [blob["val"], *blob["tree"].values()]
        if not all(isinstance(v, list) and all(isinstance(f, str) for f in v) for v in lists):
            raise ValueError("file lists that are not lists of names")
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{path} cannot be read ({exc}): it records which images this run validated on; restore it from a "
            f"backup, or delete it to carve the validation split anew (images may then move between splits)"
        ) from None
    return blob


def describe_changes(recorded: dict, ds) -> str | None:
    """One line naming what changed in the tree since the record was written (None: nothing)."""
    now = record_of(ds)
    if now is None:
        return None
    parts, example = [], None
    for name in sorted(set(recorded["tree"]) | set(now["tree"])):
        before, after = set(recorded["tree"].get(name, [])), set(now["tree"].get(name, []))
        added, removed = sorted(after - before), sorted(before - after)
        if added or removed:
            parts.append(f"{name} +{len(added):,} / -{len(removed):,} images")
            example = example or (added or removed)[0]
    if not parts:
        return None
    val = ""
    if recorded["val"]:
        kept = len(set(recorded["val"]) & set(now["val"]))
        val = f"; the validation split is kept as recorded ({kept:,} of its {len(recorded['val']):,} images still there)"
    return f"note: the data changed since this run last started: {', '.join(parts)} (e.g. {example}){val}"
