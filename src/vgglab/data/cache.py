"""Where decoded datasets live on disk, and their keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..files import atomic_write, tensor_bytes, torch_save


def cache_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("VGGLAB_CACHE") or Path.home() / ".cache" / "vgglab"
    return Path(root).expanduser()


def fingerprint(*parts) -> str:
    """A short stable key from strings/numbers (paths, sizes, mtimes, settings)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode("utf-8", "surrogateescape"))  # a name with non-UTF-8 bytes (os.fsdecode's surrogates)
        h.update(b"\0")
    return h.hexdigest()[:20]


def tree_fingerprint(root: Path) -> str:
    """Key of a folder tree from every file's relative path, size and mtime (no reading)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def save_tensors(obj: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch_save(obj, tmp), needed=tensor_bytes(obj))


def load_tensors(path: str | Path) -> dict:
    """Load a torch file of tensors and plain values; never unpickles code."""
    return torch.load(path, map_location="cpu", weights_only=True)
