"""Views of a batch of normalised images: center crops, rescaled images, crop grids and the test-time
augmentation views (see ``vgglab.evaluate.tta`` for the modes), with no model or checkpoint
knowledge, so training and evaluation share them without importing each other."""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize

from ..errors import VgglabError

TTA_MODES = ("none", "flip", "flip-translate", "flip-shift", "multicrop", "dense", "dense+multicrop")
VIEW_MODES = TTA_MODES[:4]  # crops of the evaluation square
SCALE_MODES = TTA_MODES[4:]  # the paper's (sec. 3.2): the image rescaled to each of --scales first
MULTICROP_GRID = 3  # crops per side by default (the paper's is 5: --grid 5)
TrainTTA = Literal["none", "flip", "flip-shift", "flip-translate"]  # train.test_tta: cheap enough for every run
TRAIN_TTA_MODES = typing.get_args(TrainTTA)
VIEW_COUNTS = {"none": 1, "flip": 2, "flip-shift": 6, "flip-translate": 10}  # forward passes per image (tta_views)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    o = (x.shape[-1] - size) // 2
    return x[..., o : o + size, o : o + size]


def rescale_shorter(x: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) float images with the shorter side rescaled to ``side`` and the aspect kept, by
    torchvision's resize (the longer side truncated; antialiased bilinear)."""
    return resize(x, [side], antialias=True)


def grid_offsets(n: int, size: int, grid: int) -> list[int]:
    """Where ``grid`` crops of ``size`` start along an axis of ``n`` pixels: evenly spaced from the
    first pixel to the last crop that fits, both ends (and the center, for an odd grid) included."""
    span = n - size
    return [span // 2] if grid == 1 else [i * span // (grid - 1) for i in range(grid)]


def multicrop_views(x: torch.Tensor, size: int, grid: int):
    """The ``grid`` x ``grid`` crops of side ``size`` of images ``x`` (already rescaled), each
    followed by its mirror: 2 * grid**2 views (the paper's multi-crop: grid 5, 50 per scale)."""
    for top in grid_offsets(x.shape[-2], size, grid):
        for left in grid_offsets(x.shape[-1], size, grid):
            v = x[..., top : top + size, left : left + size]
            yield v
            yield v.flip(3)


def tta_views(x: torch.Tensor, mode: str, size: int, shift: int = 1):
    """Yield the views (N, C, size, size) of normalised full images ``x`` for one TTA mode; for
    none, flip, flip-shift and flip-translate the first view is the plain center crop."""
    center = center_crop(x, size)
    if mode == "none":
        yield center
    elif mode == "flip":
        yield center
        yield center.flip(3)
    elif mode in ("flip-translate", "flip-shift"):
        p = F.pad(center, (shift,) * 4, mode="reflect")
        offsets = (
            [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)]
            if mode == "flip-translate"
            else [(0, 0), (-shift, -shift), (shift, shift)]
        )
        for dy, dx in offsets:
            v = p[..., shift + dy : shift + dy + size, shift + dx : shift + dx + size]
            yield v
            yield v.flip(3)
    else:
        raise VgglabError(f"unknown TTA mode {mode!r}; valid: {', '.join(VIEW_MODES)}")


@torch.inference_mode()
def view_probs(model, x: torch.Tensor, mode: str, image_size: int, *, shift: int = 1) -> torch.Tensor:
    """Softmax probabilities (views, N, classes) of ``model`` (any callable from images to logits)
    on each view of ``mode``, in the memory layout ``x`` has."""
    fmt = layout_of(x)
    return torch.stack([model(v.contiguous(memory_format=fmt)).float().softmax(1) for v in tta_views(x, mode, image_size, shift)])


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when a batch is stored so (its crops are handed on in the same layout)."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
