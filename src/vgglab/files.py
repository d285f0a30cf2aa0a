"""How vgglab writes files: atomically (a temporary file renamed into place), with one line for a
full disk or an unwritable folder, and never over a run's own files or the file being read."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import torch

from .errors import VgglabError
from .memory import human


def atomic_write(path: str | Path, write, needed: int | None = None) -> None:
    """Write ``path`` via ``write(tmp_path)`` into a temporary file beside it, fsync, then rename.

    A crash, a full disk or an unwritable folder at any moment leaves the previous file untouched
    and no temporary file behind; an OSError becomes one :class:`WriteError` line naming the path,
    and for a full disk the space needed (``needed`` bytes, else what was written before it
    failed) and the space free there. ``write`` must raise OSError when a write fails (plain
    Python file I/O does; ``torch.save`` to a path does not, so :func:`torch_save` opens the file).
    """
    path = Path(path)
    refuse_special(path)
    tmp = None
    try:
        tmp = temp_beside(path)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        written = os.path.getsize(tmp) if tmp and os.path.exists(tmp) else 0
        raise write_error(path, exc, needed or written, at_least=needed is None) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def temp_beside(path: Path, suffix: str = ".tmp") -> str:
    """A new, empty temporary file in ``path``'s folder (made if missing), to be renamed onto ``path``:
    the one place a file vgglab writes gets its mode, the one the user's umask gives any new file
    (``tempfile.mkstemp`` makes it private to its owner, which a rename would carry onto the result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, new_file_mode())
        else:  # Windows
            os.chmod(tmp, new_file_mode())
    finally:
        os.close(fd)
    return tmp


def named(path: str | Path) -> bool:
    """Whether ``path`` names anything, a link too (broken or a loop): then it is the user's file, never a
    name to look up elsewhere (a shipped recipe)."""
    return os.path.lexists(path)


def broken_link(path: str | Path) -> str | None:
    """One line for a symbolic link that leads nowhere (its target missing, or a loop of links); else None."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: fix the link, or name the file itself"
    except (OSError, RuntimeError):  # ELOOP (RuntimeError before Python 3.13)
        return f"{path} is a symbolic link that leads back to itself (a loop): fix the link, or name the file itself"
    return None


def new_file_mode() -> int:
    """The mode the user's umask gives a new file: 0o644 under umask 022, 0o600 under 077, 0o664 under 002."""
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux names it without changing it (os.umask sets it process-wide, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder (following links):
    "a FIFO (named pipe)", "a character device" (what /dev/null is), ...; else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def refuse_special(path: str | Path, flag: str | None = None) -> None:
    """vgglab writes files by renaming a finished temporary file over the target: over a FIFO or a
    device (``/dev/null``) that would replace the node itself with a regular file, so it is refused."""
    kind = special_kind(path)
    if kind is not None:
        what = f"{flag} {path}" if flag else str(path)
        raise VgglabError(
            f"{what} is {kind}; vgglab writes only regular files (it would replace the node): give the path of a regular file"
        )


def refuse_link(path: str | Path) -> None:
    """A file vgglab appends to or reads as its own (metrics.csv) must not be a symbolic link:
    writing through one would change whatever it points to. (Atomic writes replace a link itself.)"""
    if Path(path).is_symlink():
        raise VgglabError(
            f"{path} is a symbolic link; vgglab writes its run files only as plain files: replace the link "
            "with the file it points to (or remove it), then retry"
        )


class WriteError(VgglabError):
    """A file that could not be written; earlier files stay as they were."""


def write_error(path: Path, exc: OSError, needed: int = 0, at_least: bool = False) -> WriteError:
    """One line for a failed write: what, where, why, the space it needs and what to do."""
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(next(p for p in (path.parent, *path.parents) if p.exists())).free
        except (OSError, StopIteration):
            free = 0
        size = f"{'more than ' if at_least else 'about '}{human(needed)}" if needed else "more space"
        return WriteError(
            f"could not write {path}: {reason} (it needs {size}; {human(free)} free there); {kept}. "
            "Free some space or write elsewhere"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"could not write {path}: {reason}; {kept}. Choose a folder you can write to")
    return WriteError(f"could not write {path}: {reason}; {kept}")


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested dict/list: the size a torch or safetensors file will have."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def torch_save(obj, path: str | Path) -> None:
    """``torch.save`` into an open file: a failed write is an OSError (to a path, torch raises
    ``RuntimeError: [enforce fail at inline_container.cc]``, which says nothing of a full disk), and
    a write stopped by Ctrl-C or SIGTERM is that KeyboardInterrupt (torch's writer, closing, raises
    a RuntimeError over it)."""
    with open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as exc:  # torch's writer, closing after the failed write, raises its own error
            cause = exc.__context__  # an OSError, or a Ctrl-C/SIGTERM that stopped the write midway
            while cause is not None and not isinstance(cause, (OSError, KeyboardInterrupt)):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def write_text(path: str | Path, text: str) -> None:
    """A text file (config, results, report), written atomically. A file name with bytes that are
    not UTF-8 (Python holds them as surrogates) is written with the byte escaped (``\\udce9``)."""
    data = text.encode("utf-8", "backslashreplace")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), needed=len(data))


def check_output_dir(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a folder a command writes its files into (made when missing)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VgglabError(f"{flag} {out} is a file; give a folder for this command's outputs")
    return out
