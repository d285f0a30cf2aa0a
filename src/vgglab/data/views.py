"""Views of a batch of normalised images: center crops, square resizes and the test-time
augmentation views (see ``vgglab.evaluate.tta`` for the modes), with no model or checkpoint
knowledge, so training and evaluation share them without importing each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import VgglabError

TTA_MODES = ("none", "flip", "flip-translate", "flip-shift", "multicrop", "dense")
VIEW_MODES = TTA_MODES[:-1]  # the modes made of views (dense evaluates whole images instead)
TRAIN_TTA_MODES = ("none", "flip", "flip-shift", "flip-translate")  # train.test_tta: cheap enough for every run


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    o = (x.shape[-1] - size) // 2
    return x[..., o:o + size, o:o + size]


def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a batch of square images to ``side`` x ``side``."""
    if x.shape[-1] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def tta_views(x: torch.Tensor, mode: str, size: int, shift: int = 1, multicrop_side: int | None = None):
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
        offsets = [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)] if mode == "flip-translate" else [(0, 0), (-shift, -shift), (shift, shift)]
        for dy, dx in offsets:
            v = p[..., shift + dy:shift + dy + size, shift + dx:shift + dx + size]
            yield v
            yield v.flip(3)
    elif mode == "multicrop":
        big = resize_square(x, max(multicrop_side or round(size * 256 / 224), size))
        span = big.shape[-1] - size
        for oy in (0, span // 2, span):
            for ox in (0, span // 2, span):
                v = big[..., oy:oy + size, ox:ox + size]
                yield v
                yield v.flip(3)
    else:
        raise VgglabError(f"unknown TTA mode {mode!r}; valid: {', '.join(VIEW_MODES)}")


@torch.inference_mode()
def view_probs(model, x: torch.Tensor, mode: str, image_size: int, *, shift: int = 1) -> torch.Tensor:
    """Softmax probabilities (views, N, classes) of ``model`` (any callable from images to logits)
    on each view of ``mode``, in the memory layout ``x`` has."""
    fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return torch.stack([model(v.contiguous(memory_format=fmt)).float().softmax(1) for v in tta_views(x, mode, image_size, shift)])
