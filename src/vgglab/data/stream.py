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

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import VgglabError
from ..files import write_text
from .cache import cache_root, fingerprint, tree_fingerprint
from .errors import DataError
from .imagefolder import list_folder, list_splits, square_rgb, to_rgb
from .loader import BatchLoader, epoch_generator, place
from .stats import PixelStats, pixel_stats

INDEX_VERSION = 1
STATS_SAMPLE = 512  # training images whose pixels give the mean, std and colour PCA
STATS_SIDE = 64  # side they are decoded at for that


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

    def subset(self, idx: torch.Tensor) -> "StreamSplit":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return StreamSplit(self.root, [self.files[i] for i in idx.tolist()], self.y[idx], self.sides[idx], self.store_size,
                           self.strict, self.crop)

    def images(self, idx) -> torch.Tensor:
        """uint8 (n, 3, S, S) evaluation squares of the samples ``idx`` (a slice or index tensor)."""
        rows = range(len(self))[idx] if isinstance(idx, slice) else torch.as_tensor(idx).tolist()
        return torch.stack([decode_view(self.root / self.files[i], self.eval_view, self.store_size, self.strict) for i in rows])

    @property
    def eval_view(self) -> tuple:
        return ("eval", self.crop)


def decode_view(path: Path, view: tuple, out: int, strict: bool = False) -> torch.Tensor:
    """One file -> uint8 (3, out, out). ``view``: ("eval", crop) the evaluation square, decoded as
    the memory path decodes it (``square_rgb``: torchvision's resize and center crop, bit for bit);
    ("square",) a quick center square of the shorter side (reduced DCT; pixel statistics);
    ("scale", S, u, v, flip) the paper's crop of side ``out`` from the image rescaled to shorter
    side S, at fractions (u, v) of the free room; ("resized", area, log_ratio, u, v, flip)
    torchvision's random-resized crop of the full image. An unreadable file is a DataError under
    ``strict``, else a warning and a gray image (the run goes on; the file is named)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if view[0] == "eval":
                return torch.from_numpy(square_rgb(im, out, view[1]).copy()).permute(2, 0, 1)
            w, h = im.size
            box = _box(view, w, h, out)
            bw, bh = box[2] - box[0], box[3] - box[1]
            if im.format == "JPEG" and min(bw, bh) >= 2 * out:  # reduced-size DCT: decode at 1/2, 1/4 or 1/8
                im.draft("RGB", (math.ceil(w * out / bw), math.ceil(h * out / bh)))
                kx, ky = im.size[0] / w, im.size[1] / h
                box = (box[0] * kx, box[1] * ky, min(box[2] * kx, im.size[0]), min(box[3] * ky, im.size[1]))
            img = to_rgb(im).resize((out, out), Image.BILINEAR, box=box, reducing_gap=None)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        _unreadable(path, exc, strict)
        return torch.full((3, out, out), 128, dtype=torch.uint8)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    if view[0] != "square" and view[-1]:
        x = x.flip(2)
    return x


def _unreadable(path: Path, exc: Exception, strict: bool) -> None:
    """A file that cannot be decoded: a DataError under ``strict``, else a warning (the caller puts
    a gray image in its place, so the run goes on and the file is named)."""
    if strict:
        raise DataError(f"cannot read image {path}: {exc} (remove or replace it, or set data.strict: false to skip it)") from None
    warnings.warn(f"unreadable image {path} ({type(exc).__name__}: {exc}); a gray image stands in for it", stacklevel=3)


def _box(view: tuple, w: int, h: int, out: int) -> tuple[float, float, float, float]:
    """The view's crop box in the original image's pixels (left, top, right, bottom)."""
    if view[0] == "square":
        s = min(w, h)
        return ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if view[0] == "scale":
        _, side, u, v, _ = view
        k = min(w, h) / side  # original pixels per rescaled pixel
        cw, ch = min(out * k, w), min(out * k, h)  # a crop of `out` rescaled pixels
        left, top = u * (w - cw), v * (h - ch)
        return (left, top, left + cw, top + ch)
    _, area, log_ratio, u, v, _ = view
    r = math.exp(log_ratio)
    cw = min(w, math.sqrt(area * w * h * r))
    ch = min(h, math.sqrt(area * w * h / r))
    left, top = u * (w - cw), v * (h - ch)
    return (left, top, left + cw, top + ch)


class _Views(torch.utils.data.Dataset):
    """What a worker runs: a batch request (sample indices, views) -> uint8 (B, 3, out, out)."""

    def __init__(self, split: StreamSplit):
        self.split = split

    def __getitem__(self, request):
        rows, views, out = request
        return torch.stack([decode_view(self.split.root / self.split.files[i], v, out, self.split.strict)
                            for i, v in zip(rows, views)])


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
        out = self.image_size if full else self._store
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * self.local_batch
            end = min(start + self.local_batch, (b + 1) * self.batch_size, n)
            if end <= start:
                continue
            sl = slice(start, end)
            rows = plan["order"][sl].tolist()
            if full:
                kind = self.augment.crop
                views = [(kind, *row, flip) for row, flip in zip(plan["view"][sl].tolist(), plan["flips"][sl].tolist())]
            else:
                views = [self.split.eval_view] * len(rows)
            requests.append((rows, views, out))
            slices.append(sl)
        loader = DataLoader(_Views(self.split), batch_size=None, sampler=requests, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", collate_fn=None)
        for x, sl in zip(_clean_errors(loader), slices):
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
    requests = [(list(range(s, min(s + batch_size, n))), [split.eval_view] * (min(s + batch_size, n) - s), split.store_size)
                for s in range(0, n, batch_size)]
    workers = auto_workers(torch.device("cpu")) if workers == "auto" else int(workers)
    yield from _clean_errors(DataLoader(_Views(split), batch_size=None, sampler=requests, num_workers=workers))


def rescaled_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(width, height) of a w x h image with its shorter side rescaled to ``side``, the longer side
    truncated as torchvision's ``Resize(side)`` computes it."""
    if min(w, h) == side:
        return w, h
    return (side, int(side * h / w)) if w <= h else (int(side * w / h), side)


def decode_rescaled(path: Path, scales: list[int], side: tuple[int, int], strict: bool = False) -> list[torch.Tensor]:
    """One whole image -> uint8 (3, H, W) per scale Q, its shorter side rescaled to Q by
    torchvision's resize (as the single center crop is prepared); ``side`` is its indexed (w, h)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize

    try:
        with Image.open(path) as im:
            if im.size != tuple(side):
                raise ValueError(f"it is {im.size[0]}x{im.size[1]} now, {side[0]}x{side[1]} when the tree was indexed")
            im = to_rgb(im)
            im.load()
            return [pil_to_tensor(resize(im, [q])) for q in scales]
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        _unreadable(path, exc, strict)
        return [torch.full((3, *rescaled_size(*side, q)[::-1]), 128, dtype=torch.uint8) for q in scales]


class _FullImages(torch.utils.data.Dataset):
    """A worker's job for the paper's evaluation: rows of one original size -> one uint8 batch
    (B, 3, H, W) per scale."""

    def __init__(self, split: StreamSplit, scales: list[int]):
        self.split, self.scales = split, scales

    def __getitem__(self, rows):
        per_image = [decode_rescaled(self.split.root / self.split.files[i], self.scales, self.split.sides[i].tolist(),
                                     self.split.strict) for i in rows]
        return [torch.stack(batch) for batch in zip(*per_image)]


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
        requests += [rows[k:k + per] for k in range(0, len(rows), per)]
    workers = auto_workers(torch.device("cpu")) if workers == "auto" else int(workers)
    loader = DataLoader(_FullImages(split, scales), batch_size=None, sampler=requests, num_workers=workers)
    for rows, batches in zip(requests, _clean_errors(loader)):
        yield torch.tensor(rows), batches


def _clean_errors(loader):
    """A worker's DataError comes back with the worker's traceback in its message: keep its one line."""
    try:
        yield from loader
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


def _cached_index(key: str, cache_dir: str | None, build) -> dict:
    """An index read from the cache under ``key``, else built and cached (an unwritable cache only
    warns: the run goes on, indexing again next time)."""
    path = cache_root(cache_dir) / "streams" / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            warnings.warn(f"stream index {path} could not be read; indexing the tree again", stacklevel=3)
    index = build()
    try:
        write_text(path, json.dumps(index))
    except VgglabError as exc:
        warnings.warn(f"could not cache the stream index ({exc}); the tree will be indexed again next time", stacklevel=3)
    return index


def _index_rows(tree: Path, files: list[Path], labels: list[int], strict: bool, skipped: list[str]) -> list:
    """(path relative to ``tree``, label, width, height) per readable file (headers only)."""
    from PIL import Image

    rows = []
    for f, label in zip(files, labels):
        try:
            with Image.open(f) as im:
                rows.append((str(f.relative_to(tree)), label, *im.size))
        except Exception as exc:  # PIL raises many types for bad files
            if strict:
                raise DataError(f"cannot read image {f}: {exc} (remove or replace it, or set data.strict: false to skip it)") from None
            skipped.append(str(f))
            warnings.warn(f"skipped unreadable image {f}", stacklevel=3)
    return rows


def build_index(tree: Path, cache_dir: str | None, strict: bool) -> dict:
    """The tree's files, labels and sides per split, and pixel statistics of a sample of its
    training images; read from the cache when the tree's fingerprint is known."""

    def build() -> dict:
        index: dict = {"splits": {}, "skipped": []}
        classes = None
        for name, files, labels, classes in list_splits(tree):
            index["splits"][name] = _index_rows(tree, files, labels, strict, index["skipped"])
        if "train" not in index["splits"] or "test" not in index["splits"]:
            raise DataError(f"{tree} needs train/<class>/ and test/<class>/ (or val/<class>/, as ImageNet's) folders")
        index["classes"] = classes
        train = index["splits"]["train"]
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(train), generator=g)[:STATS_SAMPLE].tolist()
        sample = torch.stack([decode_view(tree / train[i][0], ("square",), STATS_SIDE) for i in pick])
        index["stats"] = {k: v.tolist() for k, v in pixel_stats(sample).to_dict().items()}
        return index

    return _cached_index(fingerprint(INDEX_VERSION, str(tree.resolve()), tree_fingerprint(tree)), cache_dir, build)


def folder_split(folder: Path, store_size: int, crop: int, cache_dir: str | None = None, strict: bool = False) -> tuple[StreamSplit, list[str]]:
    """One folder of class folders (``folder/<class>/<image>``, e.g. ImageNet's ``val/``), streamed,
    and its class names (sorted, as ImageFolder numbers them). No training split or statistics are
    needed: this is for models that bring their own, such as torchvision's weights."""

    def build() -> dict:
        files, labels, classes = list_folder(folder)
        skipped: list[str] = []
        return {"classes": classes, "rows": _index_rows(folder, files, labels, strict, skipped), "skipped": skipped}

    index = _cached_index(fingerprint(INDEX_VERSION, "folder", str(folder.resolve()), tree_fingerprint(folder)), cache_dir, build)
    split = stream_splits({"splits": {"x": index["rows"]}}, folder, store_size, strict, crop)["x"]
    return split, index["classes"]


def stream_splits(index: dict, tree: Path, store_size: int, strict: bool, crop: int | None = None) -> dict[str, StreamSplit]:
    out = {}
    for name, rows in index["splits"].items():
        files = [r[0] for r in rows]
        y = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        sides = torch.tensor([[r[2], r[3]] for r in rows], dtype=torch.int64).view(-1, 2)
        out[name] = StreamSplit(tree, files, y, sides, store_size, strict, crop)
    return out


def index_stats(index: dict) -> PixelStats:
    return PixelStats.from_dict({k: torch.tensor(v) for k, v in index["stats"].items()})


def make_loader(split, batch_size: int, *, workers: int | str = "auto", **kw) -> BatchLoader:
    """The loader for a split of either storage: ``BatchLoader`` over cached tensors, ``StreamLoader``
    over files. Both hand the same kind of normalised batch to the training step."""
    if isinstance(split, StreamSplit):
        return StreamLoader(split, batch_size, workers=workers, **kw)
    return BatchLoader(split, batch_size, **kw)


__all__ = ["StreamSplit", "StreamLoader", "make_loader", "uint8_batches", "full_image_batches", "build_index", "stream_splits",
           "index_stats", "decode_view", "decode_rescaled", "folder_split"]
