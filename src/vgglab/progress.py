"""Progress of long work, one way for every command: a bar (tqdm) on a terminal or in a notebook,
else a plain line every ``VGGLAB_PROGRESS_S`` seconds (default 30) with done/total, the rate and
``ETA`` with the time left, so that a log file shows where a job is; silent under ``--quiet``.

Counting is host-side only (how many images a finished batch held): nothing here reads a device.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

from .errors import VgglabError

ENV_INTERVAL = "VGGLAB_PROGRESS_S"
DEFAULT_INTERVAL = 30.0
MODES = ("auto", "bar", "line", "none")

_default_mode = "auto"  # what "auto" means for this process: --quiet makes it "none"


def set_default_mode(mode: str) -> None:
    """The mode every Progress of this process uses when asked for ``auto`` (``--quiet``: none)."""
    global _default_mode
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r}; valid: {', '.join(MODES)}")
    _default_mode = mode


@contextmanager
def default_mode(mode: str):
    """:func:`set_default_mode` for a block, restored afterwards."""
    before = _default_mode
    set_default_mode(mode)
    try:
        yield
    finally:
        set_default_mode(before)


def resolve_mode(setting: str = "auto") -> str:
    """``bar`` where a person watches (stderr a terminal, or a notebook kernel), else ``line``;
    ``bar``/``line``/``none`` as given. The process default decides ``auto`` first, and
    ``--quiet`` (default ``none``) silences every setting."""
    if _default_mode == "none" or setting == "auto":  # --quiet wins over a recipe's setting
        setting = _default_mode
    if setting != "auto":
        return setting
    return "bar" if sys.stderr.isatty() or "ipykernel" in sys.modules else "line"


def interval_s(setting: float | None = None) -> float:
    """Seconds between plain lines: ``setting`` (a recipe's ``log.progress_s``) when given, else
    the environment's ``VGGLAB_PROGRESS_S``, else 30. A value that is not a positive number is an
    error naming the variable."""
    if setting is not None:
        return float(setting)
    raw = os.environ.get(ENV_INTERVAL)
    if raw is None or raw.strip() == "":
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise VgglabError(f"{ENV_INTERVAL}={raw!r} is not a positive number of seconds; set it to e.g. 30, or unset it")
    return value


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """``total`` units of work named ``what`` (e.g. ``eval test``); :meth:`advance` after each piece.
    ``extra()`` (optional) adds text to a line or the bar's postfix: it is called only when one is
    shown, so it may read a device. ``stream`` takes the plain lines (stdout by default; predict,
    whose stdout is its results, gives stderr), or ``emit(line)`` does (a run's log); the bar
    always goes to stderr."""

    def __init__(
        self,
        total: int | None,
        what: str,
        unit: str = "images",
        *,
        mode: str = "auto",
        interval: float | None = None,
        stream=None,
        emit: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.what, self.unit = total, what, unit
        self.mode = resolve_mode(mode)
        self.interval = interval_s(interval) if self.mode == "line" else 0.0
        self.stream, self.emit, self.clock = stream, emit, clock
        self.done = 0
        self.t0 = self.last = clock()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm  # a widget in Jupyter, text elsewhere

            self.bar = tqdm(
                total=total,
                desc=what,
                unit=" " + unit.rstrip("s") if unit else "it",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def advance(self, n: int = 1, extra: Callable[[], str] | None = None) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if extra is not None:
                self.bar.set_postfix_str(extra(), refresh=False)
        elif self.mode == "line":
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                self.print_line(now, extra)

    def line(self, now: float | None = None, extra: Callable[[], str] | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            eta = format_duration(left) if math.isfinite(left) else "unknown"
            head = f"{self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            eta, head = "unknown", f"{self.done:,} {self.unit}"
        text = f"{self.what}: {head}, {rate:,.1f} {self.unit}/s, {format_duration(elapsed)} elapsed, ETA {eta}"
        return text + (f", {extra()}" if extra is not None else "")

    def print_line(self, now: float | None = None, extra: Callable[[], str] | None = None) -> None:
        if self.emit is not None:
            self.emit(self.line(now, extra))
        else:
            print(self.line(now, extra), file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batch_size(batch) -> int:
    """Images in a loader batch ``(x, y)`` or a plain tensor."""
    return len(batch[-1]) if isinstance(batch, (tuple, list)) else len(batch)


def track(items, total: int | None, what: str, unit: str = "images", count: Callable = batch_size, **kw):
    """Yield ``items`` (e.g. batches), advancing a :class:`Progress` by ``count(item)`` after each."""
    with Progress(total, what, unit, **kw) as p:
        for item in items:
            yield item
            p.advance(count(item))
