"""The ``vgglab`` command's first steps, before torch is imported: SIGTERM and SIGHUP handled like
Ctrl-C (:mod:`vgglab.signals`), and a Ctrl-C while the command is still loading its libraries
ending in one line (exit 130) instead of a traceback from inside an import."""

from __future__ import annotations

import sys

from . import signals


def main(argv: list[str] | None = None) -> int:
    signals.install()
    try:
        from .cli import main as run  # torch, torchvision, numpy...: seconds
    except BaseException as exc:  # noqa: BLE001  (a signal mid-import can leave any error behind)
        stop = signals.stop_behind(exc)
        if stop is None:
            raise
        return _stopped_while_starting(stop)
    # a signal whose exception a library's bare ``except:`` swallowed mid-import (seen with torch 2.4)
    stop = signals.last_received()
    if stop is not None:
        return _stopped_while_starting(stop)
    return run(argv)


def _stopped_while_starting(stop: KeyboardInterrupt) -> int:
    print(f"vgglab: {signals.describe(stop)} while starting; nothing was written", file=sys.stderr)
    return signals.exit_status(stop)
