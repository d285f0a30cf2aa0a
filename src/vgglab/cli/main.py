"""``vgglab``'s entry after the parser: run the command, and turn every way it can fail into one line
and an exit status (2: an error the user can fix; 130/143/129: a signal)."""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from pathlib import Path

from .. import progress, signals
from ..errors import VgglabError
from ..workers import quiet_shutdown_races
from .parser import build_parser


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "DefaultCPUAllocator: can't allocate memory" in text
        or "out of memory" in text
    )


def _one_line_warnings(command: str) -> None:
    """Warnings as ``vgglab train: warning: ...``, one line each (Python's default adds the file, the line
    number and the source line of the call). A library's deprecation notice (SQLAlchemy's, through MLflow)
    is not the user's to act on: it goes to the ``vgglab`` log at debug level instead. The test suite
    records warnings before they are formatted, so there they stay visible, ours to fix."""

    def line(message, category, filename, lineno, line=None):
        if issubclass(category, _DEPRECATIONS) and not str(filename).startswith(_OURS):
            logging.getLogger("vgglab").debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)
            return ""
        return f"vgglab {command}: warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = line


_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_OURS = str(Path(__file__).resolve().parent.parent)  # the vgglab package


def _flush_stdout(command: str) -> int | None:
    """Flush what the command printed; None when it arrived, else the exit status (:func:`_output_failed`)."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        return _output_failed(command, exc)
    return None


def _output_failed(command: str, exc: OSError) -> int:
    """The output could not be written: a reader that has gone (``vgglab models | head -1``) ends the command
    quietly, as Unix tools do (status 141, a SIGPIPE's); anything else (a full disk) is one line. Either way
    what is still buffered goes to /dev/null, so Python's last flush has nothing left to fail on."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stream)
        pass
    if isinstance(exc, BrokenPipeError):
        return 141
    print(f"{command}: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    signals.install()
    for stream in (sys.stdout, sys.stderr):  # a class or file name with non-UTF-8 bytes prints escaped, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error: argparse has printed and is leaving
        failed = _flush_stdout("vgglab")
        raise exc if failed is None else SystemExit(failed) from None
    except OSError as exc:  # --version printing onto a full disk
        raise SystemExit(_output_failed("vgglab", exc)) from None
    quiet_shutdown_races()
    _one_line_warnings(args.command)
    try:
        progress.interval_s()  # a bad VGGLAB_PROGRESS_S is one line now, not an hour into a job
        with progress.default_mode("none" if args.quiet else "auto"):
            code = args.func(args) or 0
        failed = _flush_stdout(f"vgglab {args.command}")
        return code if failed is None else failed
    except VgglabError as exc:
        print(f"vgglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be made or read, past the library's own checks
        if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT):  # stdout's
            return _output_failed(f"vgglab {args.command}", exc)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vgglab {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeErrors (CUDA's OutOfMemoryError is one)
        if not _out_of_memory(exc):
            raise
        first = f" ({' '.join(str(exc).split())[:160]})" if str(exc) else ""
        print(
            f"vgglab {args.command}: error: out of memory{first}; lower the batch size, image size or model width",
            file=sys.stderr,
        )
        return 2
    except BaseException as exc:  # Ctrl-C, SIGTERM, SIGHUP: every file is written whole or not at all (files.atomic_write)
        stop = signals.interrupt_behind(exc)  # also behind what a library raised over it (ImportError in a lazy import)
        if stop is None:
            raise
        resume = " (vgglab train --resume RUN_DIR goes on from the last finished epoch)" if args.command == "train" else ""
        print(f"vgglab {args.command}: {signals.describe(stop)}; nothing was half-written{resume}", file=sys.stderr)
        return signals.exit_status(stop)
