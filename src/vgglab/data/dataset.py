"""``DataConfig`` -> ``Dataset``: cached uint8 splits, class names and pixel statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .cache import cache_root, fingerprint, load_tensors, save_tensors, tree_fingerprint
from .sources import (
    DataError, RawData, Split, find_imagefolder, has_cifar_python, image_size_of_tree, is_archive,
    read_cifar_python, read_digits, read_imagefolder, unpack_archive,
)
from .stats import PixelStats, pixel_stats

CACHE_VERSION = 1
EVAL_RESIZE_RATIO = 256 / 224  # resize-shorter-side then center-crop, as for ImageNet evaluation


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split | None
    test: Split
    stats: PixelStats  # of the training source, [0, 1] pixel scale
    image_size: int  # model input side
    store_size: int  # side of the cached images (>= image_size)
    cache_file: Path | None = None
    skipped: list[str] = field(default_factory=list)
    load_seconds: float = 0.0

    @property
    def in_chans(self) -> int:
        return self.train.x.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _resize_split(s: Split, size: int) -> Split:
    if s.x.shape[-1] == size:
        return s
    x = torch.nn.functional.interpolate(s.x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return Split(x.round().clamp(0, 255).to(torch.uint8), s.y)


def _resolve(cfg: DataConfig) -> tuple[str, object, int, int]:
    """(kind, location, image_size, store_size) for the configured source, without decoding."""
    if cfg.dataset == "digits":
        size = cfg.image_size or 32
        return "digits", None, size, size
    root = Path(cfg.root).expanduser()
    if is_archive(root):
        root = unpack_archive(root, cfg.cache_dir)
    tree = find_imagefolder(root) if root.exists() else None
    if tree is not None:
        native = image_size_of_tree(tree)
        size = cfg.image_size or (native if cfg.dataset != "imagefolder" else min(native, 224))
        store = size if (cfg.dataset != "imagefolder" or native == size) else round(size * EVAL_RESIZE_RATIO)
        return "imagefolder", tree, size, store
    if cfg.dataset in ("cifar10", "cifar100") and (has_cifar_python(root, cfg.dataset) or cfg.download):
        size = cfg.image_size or 32
        return "cifar_python", root, size, size
    how = (
        "set data.download: true to fetch it, or unpack the archive there" if cfg.dataset != "imagefolder"
        else "it needs train/<class>/ and test/<class>/ subfolders"
    )
    raise DataError(f"{cfg.dataset} dataset not found at {root}: {how}")


def _source_key(kind: str, where, cfg: DataConfig, store: int) -> str:
    if kind == "digits":
        import sklearn

        return fingerprint(CACHE_VERSION, kind, sklearn.__version__, store)
    if kind == "imagefolder":
        return fingerprint(CACHE_VERSION, kind, str(Path(where).resolve()), tree_fingerprint(Path(where)), store)
    folder = Path(where) / ("cifar-10-batches-py" if cfg.dataset == "cifar10" else "cifar-100-python")
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    return fingerprint(CACHE_VERSION, kind, cfg.dataset, str(Path(where).resolve()), [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files], store)


def _decode(kind: str, where, cfg: DataConfig, store: int) -> RawData:
    if kind == "digits":
        return read_digits(store)
    if kind == "imagefolder":
        return read_imagefolder(Path(where), store, cfg.strict)
    raw = read_cifar_python(Path(where), cfg.dataset, cfg.download)
    raw.train, raw.test = _resize_split(raw.train, store), _resize_split(raw.test, store)
    return raw


def _stratified_split(y: torch.Tensor, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) with each class's share of val proportional to its frequency."""
    if n_val == 0:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=y.numpy())
    return torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))


def load_dataset(cfg: DataConfig) -> Dataset:
    """Decode once (then read the cache), carve the validation split, attach statistics."""
    t0 = time.perf_counter()
    kind, where, size, store = _resolve(cfg)
    key = _source_key(kind, where, cfg, store)
    path = cache_root(cfg.cache_dir) / "datasets" / f"{cfg.dataset}-{store}px-{key}.pt"
    blob = None
    if path.exists():
        try:
            blob = load_tensors(path)
        except Exception:  # a damaged cache is rebuilt, never trusted
            blob = None
    if blob is None:
        raw = _decode(kind, where, cfg, store)
        stats = pixel_stats(raw.train.x)
        blob = {
            "classes": raw.classes, "train_x": raw.train.x, "train_y": raw.train.y,
            "test_x": raw.test.x, "test_y": raw.test.y, "skipped": raw.skipped, **stats.to_dict(),
        }
        if raw.val is not None:
            blob.update(val_x=raw.val.x, val_y=raw.val.y)
        save_tensors(blob, path)
    if cfg.strict and blob["skipped"]:
        raise DataError(f"cannot read image {blob['skipped'][0]} (and {len(blob['skipped']) - 1} more); remove or replace them, or set data.strict: false")

    train = Split(blob["train_x"], blob["train_y"])
    test = Split(blob["test_x"], blob["test_y"])
    if "val_x" in blob:
        val = Split(blob["val_x"], blob["val_y"])
    else:
        n = len(train)
        want = cfg.val_size
        if want is None:
            want = 5000 if cfg.dataset in ("cifar10", "cifar100") else 0.1
        n_val = int(round(want * n)) if isinstance(want, float) else int(want)
        if n_val >= n:
            raise DataError(f"data.val_size {want} leaves no training images (the training split has {n})")
        tr_idx, va_idx = _stratified_split(train.y, n_val, cfg.split_seed)
        val = train.subset(va_idx) if n_val else None
        train = train.subset(tr_idx)
    if cfg.train_limit is not None and cfg.train_limit < len(train):
        n_classes = len(blob["classes"])
        if cfg.train_limit < n_classes:
            raise DataError(f"data.train_limit {cfg.train_limit} is smaller than the number of classes ({n_classes})")
        keep, _ = _stratified_split(train.y, len(train) - cfg.train_limit, cfg.split_seed + 1)
        train = train.subset(keep)
    return Dataset(
        classes=list(blob["classes"]), train=train, val=val, test=test,
        stats=PixelStats.from_dict(blob), image_size=size, store_size=store,
        cache_file=path, skipped=list(blob["skipped"]), load_seconds=time.perf_counter() - t0,
    )
