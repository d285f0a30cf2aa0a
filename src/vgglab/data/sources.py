"""Readers that turn a dataset on disk into uint8 tensors (N, C, S, S), once.

CIFAR-10/100 in the official python format (downloaded with torchvision's own downloader),
any ImageFolder tree (``train/<class>/*``, ``test/<class>/*``, optional ``val/``), scikit-learn's
built-in digits, and archives of any of these (unpacked once into the cache).
"""

from __future__ import annotations

import shutil
import tarfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VgglabError
from .cache import cache_root, fingerprint

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


class DataError(VgglabError):
    """A dataset that cannot be found or read; the message says where and what to do."""


@dataclass
class Split:
    x: torch.Tensor  # (N, C, S, S) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])


@dataclass
class RawData:
    classes: list[str]
    train: Split
    test: Split
    val: Split | None = None  # only when the source ships its own validation split
    skipped: list[str] = field(default_factory=list)  # unreadable files that were left out


# -- archives --------------------------------------------------------------------------------
def unpack_archive(path: Path, cache_dir: str | None) -> Path:
    """Unpack a .tar.gz/.tgz/.tar/.zip once into the cache; return the folder."""
    st = path.stat()
    dest = cache_root(cache_dir) / "unpacked" / fingerprint(str(path.resolve()), st.st_size, st.st_mtime_ns)
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(path) as t:
                t.extractall(tmp, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot unpack {path}: {exc}; check the archive (re-download it)") from None
    (tmp / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar")) or path.suffix == ".zip")


def find_imagefolder(root: Path) -> Path | None:
    """``root`` itself or a direct subfolder that holds ``train/`` and ``test/``."""
    for cand in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    return None


# -- ImageFolder -----------------------------------------------------------------------------
def decode_image(path: Path, size: int) -> np.ndarray:
    """One image -> (size, size, 3) uint8: any mode to RGB, shorter side to ``size``, center crop."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return square_rgb(im, size)


def square_rgb(im, size: int) -> np.ndarray:
    """A PIL image -> (size, size, 3) uint8: any mode to RGB (transparent pixels white), shorter
    side to ``size``, center crop."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)  # transparent pixels become white
    im = im.convert("RGB")
    w, h = im.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8)


def _list_split(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folders not in train/: {', '.join(unknown)}; every split needs the same classes")
    files, labels = [], []
    for i, c in enumerate(classes):
        d = folder / c
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                files.append(p)
                labels.append(i)
    return files, labels, classes


def read_imagefolder(root: Path, size: int, strict: bool) -> RawData:
    """Decode every image of every split with a thread pool (PIL releases the GIL while decoding)."""
    classes = None
    splits: dict[str, Split] = {}
    skipped: list[str] = []
    for name in ("train", "val", "test"):
        folder = root / name
        if not folder.is_dir():
            continue
        files, labels, classes = _list_split(folder, classes)
        if not files:
            raise DataError(f"{folder} holds no images; expected {folder}/<class>/<image>")
        out = np.zeros((len(files), size, size, 3), dtype=np.uint8)
        ok = np.ones(len(files), dtype=bool)

        def work(i):
            try:
                out[i] = decode_image(files[i], size)
            except Exception as exc:  # PIL raises many types for bad files
                if strict:
                    raise DataError(f"cannot read image {files[i]}: {exc} (remove or replace it, or set data.strict: false to skip it)") from None
                ok[i] = False

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(work, range(len(files))))
        for i in np.flatnonzero(~ok):
            skipped.append(str(files[i]))
            warnings.warn(f"skipped unreadable image {files[i]}", stacklevel=2)
        keep = torch.from_numpy(np.flatnonzero(ok))
        x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()[keep]
        y = torch.tensor(labels, dtype=torch.int64)[keep]
        splits[name] = Split(x, y)
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{root} needs train/<class>/ and test/<class>/ folders")
    return RawData(classes, splits["train"], splits["test"], splits.get("val"), skipped)


def image_size_of_tree(root: Path) -> int:
    """Side of the first training image (used when data.image_size is not set)."""
    from PIL import Image

    for p in sorted((root / "train").rglob("*")):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            with Image.open(p) as im:
                return min(im.size)
    raise DataError(f"no images found under {root / 'train'}")


# -- CIFAR python format -------------------------------------------------------------------
def read_cifar_python(root: Path, dataset: str, download: bool) -> RawData:
    """Via torchvision's CIFAR10/CIFAR100, which also downloads and verifies the archive."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as exc:
        raise DataError(
            f"{dataset} not found in {root} ({exc}); set data.download: true to fetch it, "
            f"or point data.root at a folder holding {cls.base_folder}/ or an ImageFolder tree (train/, test/)"
        ) from None
    except OSError as exc:  # no network
        raise DataError(f"could not download {dataset} into {root}: {exc}; download {cls.url} by hand and unpack it there") from None

    def split(ds) -> Split:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return Split(x, torch.tensor(ds.targets, dtype=torch.int64))

    return RawData(list(train.classes), split(train), split(test))


def has_cifar_python(root: Path, dataset: str) -> bool:
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    return (root / folder).is_dir()


# -- digits ----------------------------------------------------------------------------------
def read_digits(size: int) -> RawData:
    """scikit-learn's 1,797 8x8 digits (0..16 ink), upsampled to ``size``; 20 % held out as test.

    The test split is fixed (seed 0, stratified) so it never moves with the training seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target).long()
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    return RawData([str(c) for c in d.target_names], Split(x[tr], y[tr]), Split(x[te], y[te]))
