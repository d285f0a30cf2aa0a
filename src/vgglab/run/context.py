"""The context one training run works in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import torch

from .clock import PhaseClock
from .lock import RunLock

C = TypeVar("C")  # the training config (vgglab.train.config.Config), which the training package builds


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process group was created by setup(), so teardown() ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Run(Generic[C]):
    """One training run's fixed context: its config, the checkpoint it resumes (or None), the
    process (its place in a torchrun job) and device, where it prints, its phase clock and (once
    made) its directory."""

    cfg: C
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
