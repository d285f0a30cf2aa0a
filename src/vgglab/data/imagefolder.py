"""ImageFolder trees (``train/<class>/*``, ``test/<class>/*``, optional ``val/``) decoded to uint8
tensors, and the one PIL decoding that training, ``predict`` and ``load_model`` share."""

from __future__ import annotations

import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..progress import Progress
from .errors import DataError
from .split import RawData, Split

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def open_image(path: Path):
    """``PIL.Image.open`` of a regular file only: a FIFO, a device or a link to one would block or
    read forever, so it is refused (``NotAnImageFile``) before anything opens it."""
    from PIL import Image

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise NotAnImageFile(f"cannot stat it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise NotAnImageFile(f"it is {kind}, not an image file")
    return Image.open(path)


class NotAnImageFile(OSError):
    """A path that is not a regular file (a FIFO, a device, a folder): never opened for reading."""


def decode_image(path: Path, size: int, crop: int | None = None) -> np.ndarray:
    """One image -> (size, size, 3) uint8, as :func:`square_rgb` prepares it."""
    with open_image(path) as im:
        im.load()
        return square_rgb(im, size, crop)


def square_rgb(im, size: int, crop: int | None = None) -> np.ndarray:
    """A PIL image -> (size, size, 3) uint8: any mode to RGB (transparent pixels white), shorter
    side to ``size`` exactly as torchvision's ``Resize(size)`` does it on a PIL image (the longer
    side truncated, PIL bilinear), then the square whose central ``crop`` square is torchvision's
    ``CenterCrop(crop)`` (default: ``size``). So center-cropping the result to ``crop`` gives, pixel
    for pixel, what ``weights.transforms()`` feeds torchvision's models (resize 256, crop 224)."""
    from torchvision.transforms.functional import resize

    im = resize(to_rgb(im), [size])  # torchvision's own geometry and resampling
    w, h = im.size
    left, top = square_offset(w, size, crop), square_offset(h, size, crop)
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def square_offset(n: int, size: int, crop: int | None = None) -> int:
    """Where a square of side ``size`` starts along an axis of ``n`` pixels so that its own center
    ``crop`` (offset ``(size - crop) // 2``, as ``views.center_crop`` takes it) starts where
    torchvision's ``CenterCrop`` starts: ``int(round((n - crop) / 2))``."""
    crop = size if crop is None else crop
    o = int(round((n - crop) / 2.0)) - (size - crop) // 2
    return min(max(o, 0), n - size)


def to_rgb(im):
    """Any PIL mode -> RGB: transparent pixels white, CMYK/palette/grayscale/16-bit converted."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)  # transparent pixels become white
    elif im.mode.startswith("I;16") or im.mode == "I":
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit to 8-bit, not clipped at 255
    return im.convert("RGB") if im.mode != "RGB" else im


def list_splits(root: Path):
    """(split name, files, labels, classes) for each of train, val and test that the tree has;
    every split must hold images, and the same classes as train. ImageNet's layout (train/ and
    val/, no test/) is read with val/ as the test split: its labelled images are the ones results
    are reported on, and the validation split is then held out of train/ (data.val_size), so the
    schedule and model selection never see them."""
    classes = None
    imagenet_layout = not (root / "test").is_dir() and (root / "val").is_dir()
    for name in ("train", "val", "test"):
        folder = root / ("val" if name == "test" and imagenet_layout else name)
        if not folder.is_dir() or (name == "val" and imagenet_layout):
            continue
        files, labels, classes = _list_split(folder, classes)
        if not files:
            raise DataError(f"{folder} holds no images; expected {folder}/<class>/<image>")
        yield name, files, labels, classes


def list_folder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and sorted class names of one folder of class folders."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; expected {folder}/<class>/<image>")
    files, labels, classes = _list_split(folder, None)
    if not files:
        raise DataError(f"{folder} holds no images; expected {folder}/<class>/<image>")
    return files, labels, classes


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


def read_imagefolder(root: Path, size: int, strict: bool, crop: int | None = None) -> RawData:
    """Decode every image of every split with a thread pool (PIL releases the GIL while decoding)."""
    splits: dict[str, Split] = {}
    skipped: list[str] = []
    for name, files, labels, classes in list_splits(root):  # noqa: B007 (every split has the same classes: the last is kept)
        # decoded straight into the (N, C, S, S) tensor that is cached: no second full-size copy
        out = torch.zeros((len(files), 3, size, size), dtype=torch.uint8)
        ok = np.ones(len(files), dtype=bool)

        def work(i, out=out, files=files, ok=ok):  # this split's buffers, bound now
            try:
                out[i] = torch.from_numpy(decode_image(files[i], size, crop).copy()).permute(2, 0, 1)  # PIL arrays are read-only
            except Exception as exc:  # PIL raises many types for bad files
                if strict:
                    raise DataError(
                        f"cannot read image {files[i]}: {exc} (remove or replace it, or set data.strict: false to skip it)"
                    ) from None
                ok[i] = False

        with (
            ThreadPoolExecutor(max_workers=2) as pool,
            Progress(len(files), f"decoding {name}/ (first load, cached after)") as progress,
        ):
            for _ in pool.map(work, range(len(files))):
                progress.advance(1)
        for i in np.flatnonzero(~ok):
            skipped.append(str(files[i]))
            warnings.warn(f"skipped unreadable image {files[i]}", stacklevel=2)
        y = torch.tensor(labels, dtype=torch.int64)
        names = [str(f.relative_to(root)) for f in files]
        if not ok.all():
            keep = torch.from_numpy(np.flatnonzero(ok))
            out, y, names = out[keep], y[keep], [names[i] for i in keep.tolist()]
        splits[name] = Split(out, y, names)
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{root} needs train/<class>/ and test/<class>/ (or val/<class>/, as ImageNet's) folders")
    return RawData(classes, splits["train"], splits["test"], splits.get("val"), skipped)


def count_images(root: Path) -> int:
    """Image files under the split folders of an ImageFolder tree (listing only, no decoding)."""
    return sum(
        1
        for name in ("train", "val", "test")
        if (root / name).is_dir()
        for p in (root / name).rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_size_of_tree(root: Path, strict: bool = False) -> int:
    """Shorter side of the first readable training image (the input size when data.image_size is
    not set). The rule for every file holds for the first: special files are never opened, and an
    unreadable file is skipped with a warning (a DataError under ``strict``)."""
    from PIL import Image

    for p in sorted((root / "train").rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith(".") or not p.is_file():
            continue
        try:
            with open_image(p) as im:
                return min(im.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            if strict:
                raise DataError(
                    f"cannot read image {p}: {exc} (remove or replace it, or set data.strict: false to skip it)"
                ) from None
            warnings.warn(f"skipped unreadable image {p} ({type(exc).__name__}: {exc})", stacklevel=2)
    raise DataError(f"no readable images found under {root / 'train'}")


def find_imagefolder(root: Path) -> Path | None:
    """``root`` itself or a direct subfolder that holds ``train/`` and ``test/`` (or ``val/``)."""
    for cand in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        if (cand / "train").is_dir() and ((cand / "test").is_dir() or (cand / "val").is_dir()):
            return cand
    return None
