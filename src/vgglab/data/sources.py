"""The kinds of dataset on disk, one type each: where it is, the key of its decoded cache, how it
decodes to uint8 tensors (N, C, S, S), and the side it is stored at.

CIFAR-10/100 in the official python format (downloaded with torchvision's own downloader), any
ImageFolder tree (``train/<class>/*``, ``test/<class>/*``, optional ``val/``), scikit-learn's
built-in digits, and archives of any of these (unpacked once into the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .archive import is_archive, unpack_archive
from .cache import fingerprint, tree_fingerprint
from .config import DataConfig
from .errors import DataError
from .imagefolder import count_images, find_imagefolder, image_size_of_tree, read_imagefolder
from .split import RawData, Split

CACHE_VERSION = 1
IMAGEFOLDER_DECODE = 3  # 2: squares placed by torchvision's eval geometry around the image_size crop; 3: file names kept
EVAL_RESIZE_RATIO = 256 / 224  # resize-shorter-side then center-crop, as for ImageNet evaluation

__all__ = ["Source", "DigitsSource", "ImageFolderSource", "CifarSource", "resolve_source", "DataError", "RawData", "Split"]


@dataclass(frozen=True)
class Source:
    """A dataset on disk: ``image_size`` is the model input side, ``store_size`` the side the
    decoded images are cached at (larger for ImageFolder data evaluated resize-then-crop)."""

    image_size: int
    store_size: int

    kind = "source"

    def cache_key(self) -> str:
        raise NotImplementedError

    def decode(self) -> RawData:
        raise NotImplementedError

    def count(self) -> tuple[int, int]:
        """(images, channels) that :meth:`decode` produces, known without decoding."""
        raise NotImplementedError

    # bytes held per decoded pixel value at the peak of decode(): the uint8 result plus the
    # float32 copy a resize works in (ImageFolder: uint8 twice, the array and the tensor)
    decode_peak = 5

    def decoded_bytes(self) -> int:
        n, c = self.count()
        return n * c * self.store_size**2 * self.decode_peak


@dataclass(frozen=True)
class DigitsSource(Source):
    """scikit-learn's 1,797 8x8 digits (0..16 ink), upsampled; 20 % held out as a fixed test split."""

    kind = "digits"

    def cache_key(self) -> str:
        import sklearn

        return fingerprint(CACHE_VERSION, self.kind, sklearn.__version__, self.store_size)

    def decode(self) -> RawData:
        """The test split is fixed (seed 0, stratified) so it never moves with the training seed."""
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = torch.from_numpy(d.images).float().unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8)
        x = F.interpolate(x, size=(self.store_size,) * 2, mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
        y = torch.from_numpy(d.target).long()
        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
        tr, te = torch.from_numpy(tr), torch.from_numpy(te)
        return RawData([str(c) for c in d.target_names], Split(x[tr], y[tr]), Split(x[te], y[te]))

    def count(self) -> tuple[int, int]:
        return 1797, 1


@dataclass(frozen=True)
class ImageFolderSource(Source):
    tree: Path
    strict: bool = False

    kind = "imagefolder"

    def cache_key(self) -> str:
        return fingerprint(
            CACHE_VERSION,
            self.kind,
            str(self.tree.resolve()),
            tree_fingerprint(self.tree),
            self.store_size,
            IMAGEFOLDER_DECODE,
            self.image_size,
        )

    def decode(self) -> RawData:
        return read_imagefolder(self.tree, self.store_size, self.strict, self.image_size)

    decode_peak = 2

    def count(self) -> tuple[int, int]:
        return count_images(self.tree), 3


def _cifar_class(dataset: str):
    from torchvision import datasets

    return datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100


@dataclass(frozen=True)
class CifarSource(Source):
    """CIFAR-10/100 in the official python format, via torchvision's CIFAR10/CIFAR100 (which also
    download and verify the archive); its folder name is torchvision's ``base_folder``."""

    root: Path
    dataset: str = "cifar10"
    download: bool = False

    kind = "cifar_python"

    @staticmethod
    def present(root: Path, dataset: str) -> bool:
        return (root / _cifar_class(dataset).base_folder).is_dir()

    def cache_key(self) -> str:
        folder = self.root / _cifar_class(self.dataset).base_folder
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        return fingerprint(
            CACHE_VERSION,
            self.kind,
            self.dataset,
            str(self.root.resolve()),
            [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files],
            self.store_size,
        )

    def decode(self) -> RawData:
        cls = _cifar_class(self.dataset)
        try:
            train = cls(str(self.root), train=True, download=self.download)
            test = cls(str(self.root), train=False, download=False)
        except RuntimeError as exc:
            raise DataError(
                f"{self.dataset} not found in {self.root} ({exc}); set data.download: true to fetch it, "
                f"or point data.root at a folder holding {cls.base_folder}/ or an ImageFolder tree (train/, test/)"
            ) from None
        except OSError as exc:  # no network
            raise DataError(
                f"could not download {self.dataset} into {self.root}: {exc}; download {cls.url} by hand and unpack it there"
            ) from None

        def split(ds) -> Split:
            x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            return _resize_split(Split(x, torch.tensor(ds.targets, dtype=torch.int64)), self.store_size)

        return RawData(list(train.classes), split(train), split(test))

    def count(self) -> tuple[int, int]:
        return 60_000, 3  # CIFAR-10 and CIFAR-100 alike: 50,000 training and 10,000 test images


def _resize_split(s: Split, size: int) -> Split:
    if s.x.shape[-1] == size:
        return s
    x = F.interpolate(s.x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return Split(x.round().clamp(0, 255).to(torch.uint8), s.y)


def resolve_source(cfg: DataConfig) -> Source:
    """The configured dataset's source, without decoding it (an archive is unpacked once)."""
    if cfg.dataset == "digits":
        size = cfg.image_size or 32
        return DigitsSource(size, size)
    root = Path(cfg.root).expanduser()
    if is_archive(root):
        root = unpack_archive(root, cfg.cache_dir)
    tree = find_imagefolder(root) if root.exists() else None
    if tree is not None:
        native = image_size_of_tree(tree, cfg.strict)
        size = cfg.image_size or (native if cfg.dataset != "imagefolder" else min(native, 224))
        store = size if (cfg.dataset != "imagefolder" or native == size) else round(size * EVAL_RESIZE_RATIO)
        return ImageFolderSource(size, store, tree, cfg.strict)
    if cfg.dataset in ("cifar10", "cifar100") and (CifarSource.present(root, cfg.dataset) or cfg.download):
        size = cfg.image_size or 32
        return CifarSource(size, size, root, cfg.dataset, cfg.download)
    how = (
        "set data.download: true to fetch it, or unpack the archive there"
        if cfg.dataset != "imagefolder"
        else "it needs train/<class>/ and test/<class>/ (or val/<class>/, as ImageNet's) subfolders"
    )
    raise DataError(f"{cfg.dataset} dataset not found at {root}: {how}")
