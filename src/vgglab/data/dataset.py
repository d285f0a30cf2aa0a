"""``DataConfig`` -> ``Dataset``: cached uint8 splits, class names and pixel statistics."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..memory import available_bytes, check_fits, human
from .cache import cache_root, load_tensors, save_tensors
from .config import AugmentConfig, DataConfig
from .errors import DataError
from .normalization import Normalization
from .sources import ImageFolderSource, resolve_source
from .split import Split
from .stats import PixelStats, pixel_stats
from .stream import StreamSplit
from .stream_index import build_index, index_stats, stream_splits

AnySplit = Split | StreamSplit  # decoded tensors in memory, or files streamed from their tree
SPLITS = ("test", "val", "train")


@dataclass
class Dataset:
    classes: list[str]
    train: AnySplit
    val: AnySplit | None
    test: AnySplit
    stats: PixelStats  # of the training source, [0, 1] pixel scale
    image_size: int  # model input side
    store_size: int  # side of the cached images (>= image_size)
    cache_file: Path | None = None
    skipped: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    storage: str = "memory"  # memory (uint8 tensors) or stream (files read per batch)
    storage_note: str = ""  # why, with the estimate, for the run header
    listing: dict[str, list[str]] | None = None  # the tree's readable files per folder split, before carving (ImageFolder)

    @property
    def in_chans(self) -> int:
        return self.train.channels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> AnySplit | None:
        """One of :data:`SPLITS` by name (val is None when the run has no validation split)."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return {"test": self.test, "val": self.val, "train": self.train}[name]

    def normalization(self, augment: AugmentConfig | None = None) -> Normalization:
        """How training feeds these images: their statistics with ``augment``'s mode and overrides."""
        return Normalization.of(self.stats, augment)


def _check_stratifiable(y: torch.Tensor, n_held: int, classes: list[str], what: str, fix: str = "lower data.val_size") -> None:
    """One line (naming the classes at fault) where a stratified split of ``y`` into ``n_held``
    held-out images and the rest cannot give every class a place on both sides; scikit-learn
    would raise its own ValueError."""
    if n_held == 0:
        return
    counts = torch.bincount(y, minlength=len(classes)).tolist()
    present = sum(c > 0 for c in counts)
    empty = [classes[i] for i, c in enumerate(counts) if c == 0]
    note = (
        f" (class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(c) for c in empty[:3])} hold{'s' if len(empty) == 1 else ''} no training images)"
        if empty
        else ""
    )
    single = [classes[i] for i, c in enumerate(counts) if c == 1]
    if single:
        raise DataError(
            f"{what}: class {single[0]!r}{f' and {len(single) - 1} more' if len(single) > 1 else ''} ha"
            f"{'ve' if len(single) > 1 else 's'} a single training image, and a stratified split needs two of each: "
            f"add images, remove that class folder, or {fix.replace('lower', 'change')}{note}"
        )
    if len(y) - n_held < present:
        raise DataError(
            f"{what} leaves {len(y) - n_held} training image(s) for {present} classes, and the split is stratified: "
            f"{fix} (at most {len(y) - present} held out){note}"
        )


def _stratified_split(y: torch.Tensor, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) with each class's share of val proportional to its frequency."""
    if n_val == 0:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=y.numpy())
    return torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))


def _read_cache(path: Path, store: int) -> dict | None:
    """The decoded dataset cached at ``path``; a damaged one is reported, then rebuilt, never trusted."""
    if not path.exists():
        return None
    try:
        blob = load_tensors(path)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"dataset cache {path} could not be read ({first}); decoding the dataset again to rebuild it", stacklevel=3)
        return None
    problem = _cache_problem(blob, store)
    if problem:
        warnings.warn(
            f"dataset cache {path} has the wrong shape ({problem}); decoding the dataset again to rebuild it", stacklevel=3
        )
        return None
    return blob


def _cache_problem(blob, store: int) -> str | None:
    """What is wrong with a cache's contents (a readable torch file that is not what this version
    writes: edited, another dataset's, truncated arrays), or None."""
    if not isinstance(blob, dict):
        return "not a mapping"
    classes = blob.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        return "no class names"
    if not isinstance(blob.get("skipped"), (list, tuple)):
        return "no list of skipped files"
    for split in ("train", "test", *(["val"] if "val_x" in blob else [])):
        x, y = blob.get(f"{split}_x"), blob.get(f"{split}_y")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            return f"no {split} tensors"
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[2:]) != (store, store) or x.shape[1] not in (1, 3):
            return f"{split} images of shape {tuple(x.shape)} ({x.dtype}), expected (N, C, {store}, {store}) uint8"
        if (
            y.dim() != 1
            or len(y) != len(x)
            or y.is_floating_point()
            or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(classes))
        ):
            return f"{split} labels that do not match its {len(x)} images and {len(classes)} classes"
        files = blob.get(f"{split}_files")
        if files is not None and (
            not isinstance(files, (list, tuple)) or len(files) != len(x) or not all(isinstance(f, str) for f in files)
        ):
            return f"{split} file names that do not match its {len(x)} images"
    c = blob["train_x"].shape[1]
    for k, shape in (("mean", (c,)), ("std", (c,)), ("eigvals", (c,)), ("eigvecs", (c, c))):
        v = blob.get(k)
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape or not torch.isfinite(v).all():
            return f"pixel statistic {k} is not {shape}"
    return None


def choose_storage(cfg: DataConfig, source, augment: AugmentConfig | None, device: torch.device | None) -> tuple[str, str]:
    """``data.storage`` resolved for this dataset and machine, and a line saying why. ``auto``:
    memory when the decoded splits take at most a quarter of the free RAM (and of the free GPU
    memory when the loader lives there) and no full-image augmentation is asked for, else stream
    (which needs an ImageFolder tree; other sources are always in memory)."""
    streamable = isinstance(source, ImageFolderSource)
    if cfg.storage == "stream" and not streamable:
        raise DataError(
            f"data.storage stream reads ImageFolder trees; {cfg.dataset} at {cfg.root} is not one: set data.storage: memory"
        )
    if cfg.storage != "auto" or not streamable:
        return ("memory" if cfg.storage == "auto" else cfg.storage), f"data.storage {cfg.storage}"
    n, c = source.count()
    need = n * c * source.store_size**2
    room = available_bytes(None) // 4
    if device is not None and device.type == "cuda":
        room = min(room, available_bytes(device) // 4)
    estimate = f"{n:,} images decoded at {source.store_size} px: {human(need)}, a quarter of free memory {human(room)}"
    if augment is not None and cfg.dataset == "imagefolder" and augment.crop in ("scale", "resized"):
        return "stream", f"data.storage auto -> stream (augment.crop {augment.crop} needs the full images; {estimate})"
    if need > room:
        return "stream", f"data.storage auto -> stream ({estimate})"
    return "memory", f"data.storage auto -> memory ({estimate})"


def load_dataset(
    cfg: DataConfig, augment: AugmentConfig | None = None, device: torch.device | None = None, keep_val: list[str] | None = None
) -> Dataset:
    """Decode once (then read the cache), carve the validation split, attach statistics; or, for
    the streamed storage, index the tree. ``augment`` and ``device`` inform ``data.storage: auto``.
    ``keep_val``: the validation split a run recorded (file names, :mod:`.record`): those of its
    images still in the tree are the validation split again, whatever was added or removed since."""
    t0 = time.perf_counter()
    source = resolve_source(cfg)
    size, store = source.image_size, source.store_size
    if augment is not None and augment.crop == "scale" and augment.scale_min < size:
        raise DataError(
            f"augment.scale_min {augment.scale_min} is below the {size}-pixel input: the paper's S is the rescaled "
            f"image's shorter side, from which {size}x{size} crops are cut, so S >= {size}; raise augment.scale_min "
            f"(and scale_max) or lower data.image_size"
        )
    storage, why = choose_storage(cfg, source, augment, device)
    if storage == "stream" and isinstance(source, ImageFolderSource):  # choose_storage streams only trees
        index = build_index(source.tree, cfg.cache_dir, cfg.strict)  # sides, not pixels: any store size
        splits: dict[str, AnySplit] = dict(stream_splits(index, source.tree, store, cfg.strict, size))
        classes, skipped, stats, cache_file = list(index["classes"]), list(index["skipped"]), index_stats(index), None
    else:
        cache_file = cache_root(cfg.cache_dir) / "datasets" / f"{cfg.dataset}-{store}px-{source.cache_key()}.pt"
        blob = _decoded(cfg, source, cache_file, size, store)
        splits = {
            n: Split(blob[f"{n}_x"], blob[f"{n}_y"], blob.get(f"{n}_files")) for n in ("train", "test", "val") if f"{n}_x" in blob
        }
        classes, skipped, stats = list(blob["classes"]), list(blob["skipped"]), PixelStats.from_dict(blob)
    listing = _listing(splits)
    train, val = _carve(cfg, splits["train"], splits.get("val"), classes, keep_val)
    return Dataset(
        classes=classes,
        train=train,
        val=val,
        test=splits["test"],
        stats=stats,
        image_size=size,
        store_size=store,
        cache_file=cache_file,
        skipped=skipped,
        load_seconds=time.perf_counter() - t0,
        storage=storage,
        storage_note=why,
        listing=listing,
    )


def _decoded(cfg: DataConfig, source, path: Path, size: int, store: int) -> dict:
    """The decoded splits and their statistics: read from the cache, or decoded once and cached."""
    blob = _read_cache(path, store)
    if blob is None:
        n, c = source.count()
        check_fits(
            f"decoding {n:,} images of {c}x{store}x{store} pixels (data.image_size {size})",
            source.decoded_bytes(),
            "lower data.image_size, or stream the files (data.storage: stream, an ImageFolder tree)",
        )
        raw = source.decode()
        stats = pixel_stats(raw.train.x)
        blob = {"classes": raw.classes, "skipped": raw.skipped, **stats.to_dict()}
        for name, split in (("train", raw.train), ("test", raw.test), ("val", raw.val)):
            if split is not None:
                blob.update(
                    {
                        f"{name}_x": split.x,
                        f"{name}_y": split.y,
                        **({f"{name}_files": split.files} if split.files is not None else {}),
                    }
                )
        save_tensors(blob, path)
    if cfg.strict and blob["skipped"]:
        raise DataError(
            f"cannot read image {blob['skipped'][0]} (and {len(blob['skipped']) - 1} more); remove or replace them, or set data.strict: false"
        )
    return blob


def _listing(splits: dict) -> dict[str, list[str]] | None:
    """File names per split as the source has them (None when it has none: CIFAR, digits)."""
    if any(getattr(s, "files", None) is None for s in splits.values()):
        return None
    return {name: list(s.files) for name, s in splits.items()}


def _carve(cfg: DataConfig, train, val, classes: list[str], keep_val: list[str] | None = None):
    """The validation split (the source's own, else the one recorded in ``keep_val``, else a
    stratified share of train) and train_limit."""
    n_classes = len(classes)
    want = cfg.val_size
    if want is None:
        want = 5000 if cfg.dataset in ("cifar10", "cifar100") else 0.1
    if val is None and keep_val is not None and train.files is not None:
        kept = set(keep_val)
        is_val = torch.tensor([f in kept for f in train.files], dtype=torch.bool)
        if keep_val and not is_val.any():
            raise DataError(
                f"none of the {len(kept):,} validation images this run recorded is in {cfg.root} any more: "
                f"restore them to resume this run, or start a new run on the tree as it is"
            )
        if not keep_val and want:  # a run that validated records its files: an empty list is an edited record
            raise DataError(
                f"the run's split record lists no validation images, yet data.val_size is {want}: the record "
                "(splits.json.gz) was edited or damaged; restore it, or delete it to carve the split anew"
            )
        if len(train) and bool(is_val.all()):
            raise DataError(
                f"the run's split record lists every one of the {len(train):,} training images as validation, "
                "leaving none to train on: splits.json.gz was edited or damaged; restore it, or delete it to "
                "carve the split anew"
            )
        val = train.subset(torch.nonzero(is_val).flatten()) if keep_val else None
        train = train.subset(torch.nonzero(~is_val).flatten())
    elif val is None:
        n = len(train)
        n_val = int(round(want * n)) if isinstance(want, float) else int(want)
        if n_val >= n:
            raise DataError(f"data.val_size {want} leaves no training images (the training split has {n})")
        if 0 < n_val < n_classes:
            raise DataError(
                f"data.val_size {want} gives {n_val} validation image(s) for {n_classes} classes, and the split is "
                f"stratified: set data.val_size to at least {n_classes} (or 0 for none)"
            )
        _check_stratifiable(train.y, n_val, classes, f"data.val_size {want}")
        tr_idx, va_idx = _stratified_split(train.y, n_val, cfg.split_seed)
        val = train.subset(va_idx) if n_val else None
        train = train.subset(tr_idx)
    if cfg.train_limit is not None and cfg.train_limit < len(train):
        if cfg.train_limit < n_classes:
            raise DataError(f"data.train_limit {cfg.train_limit} is smaller than the number of classes ({n_classes})")
        _check_stratifiable(
            train.y, len(train) - cfg.train_limit, classes, f"data.train_limit {cfg.train_limit}", "raise data.train_limit"
        )
        keep, _ = _stratified_split(train.y, len(train) - cfg.train_limit, cfg.split_seed + 1)
        train = train.subset(keep)
    return train, val
