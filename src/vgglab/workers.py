"""What every loader worker process does first: die with the process that started it, and let go
of the run lock that process holds.

DataLoader workers are forked: without this, a main process killed with SIGKILL (no clean-up runs)
leaves its workers decoding until their queue notices, and each forked copy of the run lock's
descriptor keeps the ``flock`` held, so the run cannot be resumed until they are gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing.util
import os
import signal
import sys
import threading

from .signals import ignore_in_worker

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
_inherited: set[int] = set()  # descriptors a worker must close (the run lock's)


def keep_out_of_workers(fd: int) -> None:
    """Mark a descriptor (a held lock) that forked workers close as they start."""
    _inherited.add(fd)


def release_fd(fd: int) -> None:
    _inherited.discard(fd)


def share_temp_dir() -> None:
    """multiprocessing's temporary folder (``pymp-*`` in $TMPDIR), made here before workers fork, so that
    they inherit it instead of each making its own, which a worker stopped by a signal never removes;
    this process removes it on every exit that runs Python's clean-up (Ctrl-C, SIGTERM, SIGHUP, an error)."""
    multiprocessing.util.get_temp_dir()


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
    ignore_in_worker()  # Ctrl-C or SIGTERM to the process group: the main process stops the workers


def quiet_shutdown_races() -> None:
    """Leave out the one traceback a stopped loader can print beside the command's own line.

    Workers hand batches to the main process as file descriptors, through a thread that
    multiprocessing runs in the main process (``resource_sharer``). When a command stops (Ctrl-C,
    an error) while a worker is handing one over, the worker is shut down mid-handshake and that
    thread reports ``ConnectionResetError`` through ``sys.excepthook``. Only connection errors
    raised in that module are dropped; every other exception is reported as before."""
    if getattr(sys.excepthook, "vgglab_quiet", False):
        return  # installed once per process
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def from_writer_thread(thread) -> bool:
        # TensorBoard's event writer thread re-raises a failed write (a full disk) and the writer
        # raises it again at the next call, where vgglab reports it in one line
        return type(thread).__name__ == "_AsyncWriterThread" and type(thread).__module__.startswith("tensorboard")

    def from_sharer(exc_type, tb) -> bool:
        if exc_type is None or not issubclass(exc_type, (ConnectionError, EOFError)):
            return False
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith("resource_sharer.py"):
                return True
            tb = tb.tb_next
        return False

    def sys_hook(exc_type, exc, tb):
        if not from_sharer(exc_type, tb):
            previous_sys(exc_type, exc, tb)

    def thread_hook(args):
        if not from_sharer(args.exc_type, args.exc_traceback) and not from_writer_thread(args.thread):
            previous_thread(args)

    sys_hook.vgglab_quiet = True  # type: ignore[attr-defined]  # a mark on the function: installed once
    sys.excepthook, threading.excepthook = sys_hook, thread_hook
