"""``vgglab``'s entry after the parser: run the command, and turn every way it can fail into one line
and an exit status (2: an error the user can fix; 130/143/129: a signal)."""

from __future__ import annotations

import sys
import warnings

from .. import progress, signals
from ..errors import VgglabError
from ..workers import quiet_shutdown_races
from .parser import build_parser


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or "DefaultCPUAllocator: can't allocate memory" in text
        or "out of memory" in text
    )


def _one_line_warnings(command: str) -> None:
    """Warnings as ``vgglab train: warning: ...``, one line each (Python's default adds the file,
    the line number and the source line of the call)."""

    def line(message, category, filename, lineno, line=None):
        return f"vgglab {command}: warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = line


def main(argv: list[str] | None = None) -> int:
    signals.install()
    for stream in (sys.stdout, sys.stderr):  # a class or file name with non-UTF-8 bytes prints escaped, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    quiet_shutdown_races()
    _one_line_warnings(args.command)
    try:
        progress.interval_s()  # a bad VGGLAB_PROGRESS_S is one line now, not an hour into a job
        with progress.default_mode("none" if args.quiet else "auto"):
            return args.func(args)
    except VgglabError as exc:
        print(f"vgglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be made or read, past the library's own checks
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vgglab {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"vgglab {args.command}: error: out of memory; lower the batch size, image size or model width", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch's allocators raise RuntimeErrors (CUDA's OutOfMemoryError is one), not MemoryError
        if not _out_of_memory(exc):
            raise
        first = " ".join(str(exc).split())[:160]
        print(
            f"vgglab {args.command}: error: out of memory ({first}); lower the batch size, image size or model width",
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
