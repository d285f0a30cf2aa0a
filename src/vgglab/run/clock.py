"""The wall-clock time each phase of a run takes."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict


class PhaseClock:
    """Wall-clock seconds per phase of a run (data, whitening, speed probe, training, validation,
    checkpoints, final test), written to results.json as ``timings`` to show where a run's time goes
    outside its epochs."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t

    def summary(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}
