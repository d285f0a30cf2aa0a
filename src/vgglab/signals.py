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


def _raise_terminated(signum, _frame):
    received.append(signum)
    raise Terminated(signum)


def _raise_interrupt(signum, _frame):
    received.append(signum)
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
    return Terminated(received[-1]) if received[-1] != signal.SIGINT else KeyboardInterrupt()


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
    signal that arrives meanwhile is delivered to the main process as soon as the workers exist."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_IN_WORKERS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
