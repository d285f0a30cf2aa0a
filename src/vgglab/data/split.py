"""Decoded images as uint8 tensors: one split, and the splits a source decodes to."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    x: torch.Tensor  # (N, C, S, S) uint8
    y: torch.Tensor  # (N,) int64
    files: list[str] | None = None  # each image's path relative to its tree (ImageFolder sources only)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> Split:
        idx = torch.as_tensor(idx, dtype=torch.long)
        files = None if self.files is None else [self.files[i] for i in idx.tolist()]
        return Split(self.x[idx], self.y[idx], files)

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    @property
    def store_size(self) -> int:
        return self.x.shape[-1]

    def images(self, idx) -> torch.Tensor:
        """uint8 (n, C, S, S) of the samples ``idx`` (a slice or index tensor), as stored."""
        return self.x[idx]


@dataclass
class RawData:
    classes: list[str]
    train: Split
    test: Split
    val: Split | None = None  # only when the source ships its own validation split
    skipped: list[str] = field(default_factory=list)  # unreadable files that were left out
