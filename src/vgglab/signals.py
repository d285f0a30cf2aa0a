"""Stopping signals, handled like Ctrl-C: SIGTERM (``timeout``, docker, systemd, batch schedulers)
and SIGHUP (a closed terminal) raise :class:`~vgglab.errors.Terminated` in the main thread, so the
command unwinds as it does for Ctrl-C: every file is written whole or not at all, the run lock is
released, the tracked run is marked killed, and the command exits with 128 + the signal number."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from .errors import Terminated

STOPPING = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
# what loader workers leave to the main process, which stops them as it unwinds
HELD_IN_WORKERS = (signal.SIGINT, *STOPPING)


received: list[int] = []  # the stopping signals this process got, in order
_pending: list[int] = []  # those that arrived inside held(), raised as it ends
_holding = 0  # held() blocks open in the main thread


def _stop(signum: int) -> KeyboardInterrupt:
    return Terminated(signum) if signum != signal.SIGINT else KeyboardInterrupt()


def _raise_terminated(signum, _frame):
    received.append(signum)
    if _holding:
        _pending.append(signum)
        return
    raise Terminated(signum)


def _raise_interrupt(signum, _frame):
    received.append(signum)
    if _holding:
        _pending.append(signum)
        return
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGTERM and SIGHUP stop the command as Ctrl-C does, and remember every stopping signal
    (main thread only; idempotent). A handler someone else set (not the default) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOPPING:
        if signal.getsignal(signum) in (signal.SIG_DFL, _raise_terminated):
            signal.signal(signum, _raise_terminated)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _raise_interrupt):
        signal.signal(signal.SIGINT, _raise_interrupt)


def stop_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt behind ``exc`` (:func:`interrupt_behind`), or, where a stopping signal arrived
    while a library was importing and left some other error (a half-initialised module), that signal."""
    return interrupt_behind(exc) or last_received()


def last_received() -> KeyboardInterrupt | None:
    """The last stopping signal this process got, as the exception its handler raised (or None)."""
    if not received:
        return None
    return _stop(received[-1])


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or stopping signal) behind ``exc``: one that arrives while a C extension module
    initialises surfaces as ``ImportError: initialization failed`` with it as the context."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal number, as a shell reports a process a signal stopped (130 for Ctrl-C)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def describe(exc: KeyboardInterrupt) -> str:
    if isinstance(exc, Terminated):
        return f"stopped by {signal.Signals(exc.signum).name}"
    return "interrupted"


@contextlib.contextmanager
def held():
    """Block the stopping signals while loader workers are forked: a worker starts with them
    blocked and ignores them (:func:`vgglab.workers.worker_init`), so Ctrl-C or SIGTERM sent to the
    whole process group reaches only the main process, which stops its workers as it unwinds. A
    signal that arrives meanwhile stops the main process as the block ends, when the workers exist:
    the mask covers this thread only, and another thread of the process (a tracking or progress
    thread) may take the signal, whose handler then runs in the main thread mid-block; it is kept
    until the block ends, so a DataLoader iterator is never left half-built (its ``__del__`` then
    failed with an AttributeError after the command's line, under load)."""
    global _holding
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_IN_WORKERS)
    _holding += 1
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _holding -= 1
        if not _holding and _pending:
            signum = _pending[-1]
            _pending.clear()
            raise _stop(signum)


def _exit_quietly(_signum, _frame):
    os._exit(0)


def ignore_in_worker() -> None:
    """In a loader worker: Ctrl-C is ignored (the main process gets it too and stops its workers);
    SIGTERM and SIGHUP end the worker at once and quietly (no traceback; multiprocessing's exit
    sends SIGTERM to workers a stopped main process left running), then the signals are unblocked
    (see :func:`held`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in STOPPING:
        signal.signal(signum, _exit_quietly)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_IN_WORKERS)
