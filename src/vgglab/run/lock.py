"""One process at a time writes a run directory: ``RUN_DIR/run.lock``, held for the whole run.

The lock is an advisory ``flock`` on that file, so the kernel lets go of it however the holder
ends (an exception, Ctrl-C, SIGKILL, a power cut); the file names the holder (pid, host, command,
start time) for the message a second process prints. A file left behind by a holder that is
gone is a stale lock: the next run takes it over with a note. Where ``fcntl`` is missing
(Windows), the file is created exclusively and a holder is alive when its pid is.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

import psutil

from ..errors import VgglabError
from ..workers import keep_out_of_workers, release_fd
from . import files as runfiles

if sys.platform != "win32":  # Windows has no fcntl: the lock is an exclusively created file there
    import fcntl

LOCK_NAME = runfiles.LOCK


class RunLocked(VgglabError):
    """Another live process is writing this run directory."""


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started is not None else "at an unknown time"
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (`{holder.get('command', '?')}`, started {when})"


def _in_use(path: Path, holder: dict) -> RunLocked:
    return RunLocked(
        f"run directory {path.parent} is in use by {_describe(holder)}; wait for it to finish or stop it, then retry"
    )


# the holder fields and their types, as acquire() writes them
_FIELDS = {"pid": int, "host": str, "started": float, "command": str}


def _read(fd: int) -> dict:
    """The holder the lock file names: only the fields acquire() writes, each of its type (the
    flock, not the file, says whether a holder is alive: a damaged file only loses the description)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 65536).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    holder = {}
    for key, kind in _FIELDS.items():
        value = float(data[key]) if kind is float and type(data.get(key)) is int else data.get(key)
        if type(value) is kind and (not isinstance(value, float) or 0 <= value < 2**40):  # a time localtime() can show
            holder[key] = value
    return holder


def _open_lock(path: Path, flags: int) -> int:
    """The lock file itself, never what a symbolic link in its place points to (writing the lock
    through a link would replace another file), and never inherited by a process the run execs."""
    try:
        if path.is_symlink():  # O_NOFOLLOW refuses one too, where the system has it
            raise OSError(errno.ELOOP, "a symbolic link")
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VgglabError(
                f"{path} is a symbolic link; vgglab writes its lock only as a plain file: remove the link, then retry"
            ) from None
        raise


class RunLock:
    """``acquire(run_dir)`` once, ``release()`` on any exit (idempotent). ``log`` prints the note
    about a stale lock taken over."""

    def __init__(self, log=print):
        self.log = log
        self.path: Path | None = None
        self.fd: int | None = None

    def acquire(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / LOCK_NAME
        fd = self._lock_flock(path) if sys.platform != "win32" else self._lock_exclusive(path)
        previous = _read(fd)
        if previous and previous.get("pid") != os.getpid():
            self.log(f"note: took over the lock of {path.parent} left by {_describe(previous)}, which is no longer running")
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self.path, self.fd = path, fd
        keep_out_of_workers(fd)
        removed = runfiles.remove_stale_temp_files(path.parent)  # ours alone to write now: any left are a killed write's
        if removed:
            self.log(
                f"note: removed {removed} temporary file{'s' if removed != 1 else ''} that a killed write left in {path.parent}"
            )

    def _lock_flock(self, path: Path) -> int:
        while True:
            fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise _in_use(path, holder) from None
            try:  # a holder that released between our open and flock removed the file: lock the one there now
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return fd
            os.close(fd)

    def _lock_exclusive(self, path: Path) -> int:
        while True:
            try:
                return _open_lock(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                fd = _open_lock(path, os.O_RDWR)
                holder = _read(fd)
                if holder.get("pid") and psutil.pid_exists(holder["pid"]) and holder.get("host") == socket.gethostname():
                    os.close(fd)
                    raise _in_use(path, holder) from None
                return fd  # stale: its process is gone

    def release(self) -> None:
        if self.fd is None or self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            release_fd(self.fd)
            os.close(self.fd)
            self.fd = self.path = None
