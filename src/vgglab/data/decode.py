"""Decoding one image file for the streamed storage, in a loader's worker process: the views
training draws (the paper's scale crops, random-resized crops, at reduced DCT scale where the
image is far larger than needed), the evaluation square, and whole images rescaled for the
paper's dense and multi-crop evaluation. A file that cannot be read is a gray stand-in and a
warning, or a DataError under ``strict``: the same rule for every file, the first included."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .imagefolder import open_image, square_rgb, to_rgb


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
        with open_image(path) as im:
            if view[0] == "eval":
                return torch.from_numpy(square_rgb(im, out, view[1]).copy()).permute(2, 0, 1)
            w, h = im.size
            box = crop_box(view, w, h, out)
            bw, bh = box[2] - box[0], box[3] - box[1]
            if im.format == "JPEG" and min(bw, bh) >= 2 * out:  # reduced-size DCT: decode at 1/2, 1/4 or 1/8
                im.draft("RGB", (math.ceil(w * out / bw), math.ceil(h * out / bh)))
                kx, ky = im.size[0] / w, im.size[1] / h
                box = (box[0] * kx, box[1] * ky, min(box[2] * kx, im.size[0]), min(box[3] * ky, im.size[1]))
            img = to_rgb(im).resize((out, out), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        unreadable(path, exc, strict)
        return torch.full((3, out, out), 128, dtype=torch.uint8)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    if view[0] != "square" and view[-1]:
        x = x.flip(2)
    return x


def unreadable(path: Path, exc: Exception, strict: bool) -> None:
    """A file that cannot be decoded: a DataError under ``strict``, else a warning (the caller puts
    a gray image in its place, so the run goes on and the file is named)."""
    if strict:
        raise DataError(f"cannot read image {path}: {exc} (remove or replace it, or set data.strict: false to skip it)") from None
    warnings.warn(f"unreadable image {path} ({type(exc).__name__}: {exc}); a gray image stands in for it", stacklevel=3)


def crop_box(view: tuple, w: int, h: int, out: int) -> tuple[float, float, float, float]:
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


def rescaled_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(width, height) of a w x h image with its shorter side rescaled to ``side``, the longer side
    truncated as torchvision's ``Resize(side)`` computes it."""
    if min(w, h) == side:
        return w, h
    return (side, int(side * h / w)) if w <= h else (int(side * w / h), side)


def decode_rescaled(path: Path, scales: list[int], side: Sequence[int], strict: bool = False) -> list[torch.Tensor]:
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
        unreadable(path, exc, strict)
        return [torch.full((3, *rescaled_size(side[0], side[1], q)[::-1]), 128, dtype=torch.uint8) for q in scales]
