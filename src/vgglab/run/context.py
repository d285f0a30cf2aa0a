"""The context one training run works in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .clock import PhaseClock
from .lock import RunLock

if TYPE_CHECKING:  # the training package builds a Run: importing it here at run time would be a cycle
    from ..train.config import Config
    from ..train.distributed import DistInfo


@dataclass
class Run:
    """One training run's fixed context: its config, the checkpoint it resumes (or None), the
    process and device, where it prints, its phase clock and (once made) its directory."""

    cfg: Config
    ckpt: dict | None
    info: DistInfo
    device: torch.device
    log: Callable = print
    lock: RunLock = field(default_factory=RunLock)
    clock: PhaseClock = field(default_factory=PhaseClock)
    dir: Path | None = None

    @property
    def out(self) -> Path:
        """The run directory, which :func:`prepare_model` makes before any step that writes."""
        if self.dir is None:
            raise RuntimeError("the run directory is made by prepare_model, before anything is written")
        return self.dir
