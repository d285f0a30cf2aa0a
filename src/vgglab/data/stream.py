"""Streamed storage: an ImageFolder tree read as it is on disk, a batch at a time, in worker
processes, with flat memory whatever the number of images.

Only an index is cached (file list, labels, image sides, pixel statistics of a sample), keyed by
the tree's fingerprint. Every sample's augmentation is drawn for the whole split from (seed,
epoch), exactly as the memory path draws it (``BatchLoader``'s plan), and handed to whichever
worker decodes it: the same seed gives bit-identical uint8 batches with 0, 1 or 4 workers and
with 1 or 2 processes, and a resumed run draws what an uninterrupted one would.

A worker does only what must be per image: decode (JPEG at a reduced DCT scale when the image is
at least twice the size needed, through PIL's ``draft``), the crop box resampled straight to its
output size (PIL ``resize(box=...)``, no full-image resize), the flip, the colour rules of the
memory path. Normalisation and PCA colour noise stay batched on the training device.

PIL is the decoder: it wraps libjpeg-turbo, is the one maintained decoder here with reduced-size
DCT decoding (torchvision.io's decode_jpeg has none and is deprecated in torchvision 0.29 for
TorchCodec, which this project's machines do not hold), and reads every other format and mode;
benchmarks/data_throughput.py prints its single-core decode rate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..signals import held
from ..workers import share_temp_dir, worker_init
from .decode import decode_rescaled, decode_view, rescaled_size
from .errors import DataError
from .loader import BatchLoader, epoch_generator, place


@dataclass
class StreamSplit:
    """One split of a tree: files (relative to ``root``), labels, sides (N, 2: width, height), the
    side evaluation squares are decoded at (``store_size``) and the model input side (``crop``)
    they are placed around, exactly as the memory path caches them (``imagefolder.square_rgb``)."""

    root: Path
    files: list[str]
    y: torch.Tensor
    sides: torch.Tensor
    store_size: int
    strict: bool = False
    crop: int | None = None

    channels = 3

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> StreamSplit:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return StreamSplit(
            self.root,
            [self.files[i] for i in idx.tolist()],
            self.y[idx],
            self.sides[idx],
            self.store_size,
            self.strict,
            self.crop,
        )

    def images(self, idx) -> torch.Tensor:
        """uint8 (n, 3, S, S) evaluation squares of the samples ``idx`` (a slice or index tensor)."""
        rows = range(len(self))[idx] if isinstance(idx, slice) else torch.as_tensor(idx).tolist()
        return torch.stack([decode_view(self.root / self.files[i], self.eval_view, self.store_size, self.strict) for i in rows])

    @property
    def eval_view(self) -> tuple:
        return ("eval", self.crop)


class _Views(torch.utils.data.Dataset):
    """What a worker runs: a batch request (sample indices, views) -> uint8 (B, 3, out, out)."""

    def __init__(self, split: StreamSplit):
        self.split = split

    def __getitem__(self, request):
        rows, views, out = request
        return torch.stack(
            [
                decode_view(self.split.root / self.split.files[i], v, out, self.split.strict)
                for i, v in zip(rows, views, strict=True)
            ]
        )


def auto_workers(device: torch.device) -> int:
    """Decoding processes: on CUDA up to 8 (the GPU waits on decoding); on a CPU half the cores,
    since the training step needs the others (2 cores: one worker)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores) if device.type == "cuda" else (cores // 2 if cores > 1 else 0)


class StreamLoader(BatchLoader):
    """``BatchLoader``'s interface and plan over a :class:`StreamSplit`: the order and every sample's
    augmentation drawn per epoch from (seed, epoch), decoded by ``workers`` processes into uint8
    batches (pinned for CUDA), finished on the device by the same step as the memory path."""

    def __init__(self, split: StreamSplit, batch_size: int, *, workers: int | str = "auto", **kw):
        self.split = split
        self._store = split.store_size
        super().__init__(_Shape(split), batch_size, **kw)
        self.workers = auto_workers(self.device) if workers == "auto" else int(workers)

    def _plan(self):
        plan = super()._plan()  # order, flips, alpha, and the pad offsets (for pad crops)
        aug, n = self.augment, len(self.split)
        if aug is not None and aug.crop in ("scale", "resized"):
            g = epoch_generator(self.seed + 7_919, self.epoch)  # full-image crops: their own draws
            if aug.crop == "scale":
                side = torch.randint(aug.scale_min, aug.scale_max + 1, (n,), generator=g).float()
                plan["view"] = torch.stack([side, torch.rand(n, generator=g), torch.rand(n, generator=g)], 1)
            else:
                area = torch.empty(n).uniform_(aug.scale[0], aug.scale[1], generator=g)
                ratio = torch.empty(n).uniform_(math.log(aug.ratio[0]), math.log(aug.ratio[1]), generator=g)
                plan["view"] = torch.stack([area, ratio, torch.rand(n, generator=g), torch.rand(n, generator=g)], 1)
        return plan

    def __iter__(self):
        plan = self._plan()
        requests, slices = [], []
        n, full = len(self.split), "view" in plan
        kind = self.augment.crop if self.augment is not None else None  # a view is planned only with augment
        out = self.image_size if full else self._store
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * self.local_batch
            end = min(start + self.local_batch, (b + 1) * self.batch_size, n)
            if end <= start:
                continue
            sl = slice(start, end)
            rows = plan["order"][sl].tolist()
            if full:
                views = [
                    (kind, *row, flip) for row, flip in zip(plan["view"][sl].tolist(), plan["flips"][sl].tolist(), strict=True)
                ]
            else:
                views = [self.split.eval_view] * len(rows)
            requests.append((rows, views, out))
            slices.append(sl)
        loader = DataLoader(
            _Views(self.split),
            batch_size=None,
            sampler=requests,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=None,
            worker_init_fn=worker_init,
        )
        for x, sl in zip(_clean_errors(loader), slices, strict=True):
            idx = plan["order"][sl]
            p = {k: v[sl].to(self.device, non_blocking=True) for k, v in plan.items() if k not in ("order", "view")}
            x = x.to(self.device, non_blocking=True)
            x = x.float() if full else place(x, self.augment, p, self.image_size)
            yield self.finish(x, p), self.split.y[idx].to(self.device, non_blocking=True)


def uint8_batches(split, batch_size: int, workers: int | str = "auto"):
    """Evaluation squares (B, C, S, S) uint8 of a split of either storage, in order, ``batch_size``
    at a time: sliced from the cache, or decoded by the streaming loader's worker processes."""
    if not isinstance(split, StreamSplit):
        for start in range(0, len(split), batch_size):
            yield split.images(slice(start, start + batch_size))
        return
    n = len(split)
    requests = [
        (list(range(s, min(s + batch_size, n))), [split.eval_view] * (min(s + batch_size, n) - s), split.store_size)
        for s in range(0, n, batch_size)
    ]
    workers = auto_workers(torch.device("cpu")) if workers == "auto" else int(workers)
    yield from _clean_errors(
        DataLoader(_Views(split), batch_size=None, sampler=requests, num_workers=workers, worker_init_fn=worker_init)
    )


class _FullImages(torch.utils.data.Dataset):
    """A worker's job for the paper's evaluation: rows of one original size -> one uint8 batch
    (B, 3, H, W) per scale."""

    def __init__(self, split: StreamSplit, scales: list[int]):
        self.split, self.scales = split, scales

    def __getitem__(self, rows):
        per_image = [
            decode_rescaled(self.split.root / self.split.files[i], self.scales, self.split.sides[i].tolist(), self.split.strict)
            for i in rows
        ]
        return [torch.stack(batch) for batch in zip(*per_image, strict=True)]


def full_image_batches(split: StreamSplit, scales: list[int], pixels: int, workers: int | str = "auto"):
    """Yield (rows, [uint8 (B, 3, H_q, W_q) per scale]) over every image of a streamed split, whole
    (not cropped), rescaled to each scale. Images of equal original size are batched together, at
    most ``pixels`` pixels at the largest scale per batch (one image when it alone is larger), so
    non-square images of any size evaluate without padding; the rows say where each batch belongs."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (w, h) in enumerate(split.sides.tolist()):
        groups.setdefault((w, h), []).append(i)
    requests = []
    for (w, h), rows in sorted(groups.items()):
        qw, qh = rescaled_size(w, h, max(scales))
        per = max(1, pixels // (qw * qh))
        requests += [rows[k : k + per] for k in range(0, len(rows), per)]
    workers = auto_workers(torch.device("cpu")) if workers == "auto" else int(workers)
    loader = DataLoader(
        _FullImages(split, scales), batch_size=None, sampler=requests, num_workers=workers, worker_init_fn=worker_init
    )
    for rows, batches in zip(requests, _clean_errors(loader), strict=True):
        yield torch.tensor(rows), batches


def _clean_errors(loader):
    """A worker's DataError comes back with the worker's traceback in its message: keep its one line."""
    try:
        with held():  # workers fork with the stopping signals blocked (see vgglab.signals.held)
            share_temp_dir()
            batches = iter(loader)
        yield from batches
    except DataError as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else str(exc)
        raise DataError(last.split("DataError: ", 1)[-1]) from None


class _Shape:
    """What BatchLoader's constructor reads of a split (labels, sides), without any pixels."""

    def __init__(self, split: StreamSplit):
        self.y = split.y
        self.x = torch.empty((len(split), 3, split.store_size, split.store_size), dtype=torch.uint8, device="meta")

    def __len__(self) -> int:
        return len(self.y)


def make_loader(split, batch_size: int, *, workers: int | str = "auto", **kw) -> BatchLoader:
    """The loader for a split of either storage: ``BatchLoader`` over cached tensors, ``StreamLoader``
    over files. Both hand the same kind of normalised batch to the training step."""
    if isinstance(split, StreamSplit):
        aug = kw.get("augment")
        if aug is not None and aug.resolution_stages():
            key = "early_crop" if aug.early_crop is not None else "stages"
            raise DataError(
                f"augment.{key} shrinks the cached images of data.storage: memory; this dataset is streamed: "
                f"set data.storage: memory, or remove augment.{key}"
            )
        return StreamLoader(split, batch_size, workers=workers, **kw)
    return BatchLoader(split, batch_size, **kw)


__all__ = ["StreamSplit", "StreamLoader", "make_loader", "uint8_batches", "full_image_batches"]
