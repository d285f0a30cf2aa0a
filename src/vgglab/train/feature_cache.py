"""Descriptors of images by a frozen network, computed once and kept on disk.

A cache is a folder ``<cache root>/features/<key>/`` whose key covers everything that changes a
descriptor (the weights' SHA-256, the layer, the preprocessing, the view, the precision: see
:func:`cache_key`); inside it, descriptors are rows of shard files, each row named by its image's
fingerprint (:func:`image_keys`: a file's resolved path, size and modification time, or a cached
image's pixels). Shards are written as they are computed, each atomically: a run stopped by Ctrl-C
keeps every shard it finished and the next run computes only what is missing; a changed or added
file has a new fingerprint and is computed again, nothing else. Memory holds one shard at a time
while computing, and the rows a fit asks for when reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch

from ..data.cache import cache_root, fingerprint
from ..data.split import Split
from ..data.stream import StreamSplit
from ..errors import VgglabError
from ..files import WriteError, atomic_write, write_text

VERSION = 1  # of how descriptors are computed: a change here makes every older cache a miss
IDENTITY = "identity.json"  # what the key stands for, readable by a person


class FeatureCacheError(VgglabError):
    pass


def file_sha256(path: Path, cache_dir: str | None = None) -> str:
    """The SHA-256 of a weights file, remembered by (resolved path, size, mtime) so that a 500 MB file
    is hashed once, not on every run."""
    path = Path(path).resolve()
    st = path.stat()
    memo_file = features_root(cache_dir) / "weights-sha256.json"
    stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo.get(stamp), str):
        return memo[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    memo[stamp] = h.hexdigest()
    try:
        write_text(memo_file, json.dumps(memo, indent=1))
    except WriteError:
        pass  # only a memo: the hash is computed again next time
    return memo[stamp]


def image_keys(split: Split | StreamSplit) -> list[str]:
    """One fingerprint per image of ``split``: a streamed file by its resolved path, size and
    modification time (not read); a cached image by its pixels."""
    if isinstance(split, StreamSplit):
        keys = []
        for name in split.files:
            p = (split.root / name).resolve()
            st = p.stat()
            keys.append(fingerprint(os.fsencode(p), st.st_size, st.st_mtime_ns))
        return keys
    x = split.x.cpu().numpy()
    return [hashlib.sha256(x[i].tobytes()).hexdigest()[:20] for i in range(len(x))]


def check_writable(folder: Path) -> None:
    """One line, naming the folder and the fix, when descriptors could not be written into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FeatureCacheError(
            f"cannot write the feature cache in {folder}: {exc.strerror or exc}; set data.cache_dir (or $VGGLAB_CACHE) "
            "to a writable folder with space"
        ) from None


def features_root(cache_dir: str | None) -> Path:
    return cache_root(cache_dir) / "features"


def cache_key(identity: dict) -> str:
    return fingerprint(VERSION, json.dumps(identity, sort_keys=True))


class FeatureCache:
    """The descriptors of one (weights, layer, preprocessing, view, precision) in ``root``."""

    def __init__(self, cache_dir: str | None, identity: dict):
        self.identity = identity
        self.dir = features_root(cache_dir) / cache_key(identity)
        self._index: dict[str, tuple[Path, int]] | None = None

    def check_writable(self) -> None:
        """Refuse, before any descriptor is computed, a cache folder that cannot be written."""
        check_writable(self.dir)
        if not (self.dir / IDENTITY).is_file():
            write_text(self.dir / IDENTITY, json.dumps(self.identity, indent=1, sort_keys=True))

    def index(self) -> dict[str, tuple[Path, int]]:
        """Image fingerprint -> (shard, row) of every descriptor on disk; a damaged shard is skipped
        (its images are computed again)."""
        if self._index is None:
            self._index = {}
            for shard in sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []:
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys = z["keys"]
                except (OSError, ValueError, KeyError):
                    continue
                for row, key in enumerate(keys.tolist()):
                    self._index[key] = (shard, row)
        return self._index

    def missing(self, keys: list[str]) -> list[int]:
        """Positions in ``keys`` without a descriptor on disk."""
        have = self.index()
        return [i for i, k in enumerate(keys) if k not in have]

    def add(self, keys: list[str], x: torch.Tensor) -> None:
        """Write one shard of descriptors (N, D) for ``keys`` (N), atomically."""
        arr = x.detach().float().cpu().numpy()
        path = self.dir / f"shard-{uuid.uuid4().hex}.npz"

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), x=arr)

        try:
            atomic_write(path, write, needed=arr.nbytes + 64 * len(keys))
        except WriteError as exc:
            raise FeatureCacheError(
                f"{exc}; the descriptors computed so far are kept. Free space, or set data.cache_dir to another folder"
            ) from None
        index = self.index()
        for row, key in enumerate(keys):
            index[key] = (path, row)

    def read(self, keys: list[str]) -> np.ndarray:
        """The descriptors (N, D) of ``keys``, each on disk; one shard open at a time."""
        index = self.index()
        lost = [k for k in keys if k not in index]
        if lost:
            raise FeatureCacheError(
                f"{len(lost)} descriptors are missing from {self.dir} (was it cleaned while running?); run again"
            )
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            shard, row = index[key]
            by_shard.setdefault(shard, []).append((pos, row))
        out: np.ndarray | None = None
        for shard, rows in by_shard.items():
            with np.load(shard, allow_pickle=False) as z:
                x = z["x"]
            if out is None:
                out = np.empty((len(keys), x.shape[1]), dtype=np.float32)
            out[[p for p, _ in rows]] = x[[r for _, r in rows]]
        return out if out is not None else np.empty((0, 0), dtype=np.float32)
