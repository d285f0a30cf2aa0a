"""Where decoded datasets live on disk, and how files are written without ever leaving half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ..errors import VgglabError


def cache_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("VGGLAB_CACHE") or Path.home() / ".cache" / "vgglab"
    return Path(root).expanduser()


def fingerprint(*parts) -> str:
    """A short stable key from strings/numbers (paths, sizes, mtimes, settings)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
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
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` via ``write(tmp_path)`` into a temporary file, fsync, then rename.

    A crash or a full disk at any moment leaves the previous file untouched. An OSError
    becomes a one-line VgglabError that says the old file was kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise VgglabError(f"could not write {path}: {exc.strerror or exc}; {kept} (free some disk space and retry)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(obj: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_tensors(path: str | Path) -> dict:
    """Load a torch file of tensors and plain values; never unpickles code."""
    return torch.load(path, map_location="cpu", weights_only=True)
