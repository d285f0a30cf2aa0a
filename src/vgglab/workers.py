"""What every loader worker process does first: die with the process that started it, and let go
of the run lock that process holds.

DataLoader workers are forked: without this, a main process killed with SIGKILL (no clean-up runs)
leaves its workers decoding until their queue notices, and each forked copy of the run lock's
descriptor keeps the ``flock`` held, so the run cannot be resumed until they are gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
_inherited: set[int] = set()  # descriptors a worker must close (the run lock's)


def keep_out_of_workers(fd: int) -> None:
    """Mark a descriptor (a held lock) that forked workers close as they start."""
    _inherited.add(fd)


def release_fd(fd: int) -> None:
    _inherited.discard(fd)


def worker_init(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader vgglab makes: SIGKILL when the parent dies (Linux),
    and its copies of the lock descriptors closed (the lock lives as long as its taker)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    for fd in list(_inherited):
        try:
            os.close(fd)
        except OSError:
            pass
