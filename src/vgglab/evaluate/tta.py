"""Test-time augmentation: views of each image whose softmax probabilities are averaged.

``none``: the center crop. ``flip``: it and its mirror (the VGG paper, the tutorial).
``flip-translate``: the center crop shifted by ``shift`` pixels up, down, left and right
(reflect padding) plus unshifted, each also mirrored: 10 views. ``flip-shift``: the cheaper
6-view version the CIFAR-10 speed runs use (Jordan 2024): unshifted, shifted by ``shift`` pixels
diagonally up-left and down-right, each also mirrored.

The paper's protocol (Simonyan & Zisserman, sec. 3.2 and 4.3) rescales the whole image to each
of ``scales`` (its shorter side Q; the aspect kept) first:

- ``dense``: the head as convolutions over the whole image's conv map (:func:`dense_head`), the
  class score map averaged over space, softmax, averaged with the mirrored image and over scales;
- ``multicrop``: a ``grid`` x ``grid`` set of crops of the model's input side per scale, corners and
  center included, each also mirrored (grid 5: 50 views per scale, 150 over three);
- ``dense+multicrop``: the average of the two (Table 5).

Streamed splits are evaluated on the full images; cached ones on their stored squares.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.views import MULTICROP_GRID, SCALE_MODES, TTA_MODES, layout_of, multicrop_views, rescale_shorter, view_probs
from ..errors import VgglabError
from ..models import VGG
from ..models.dense import dense_head

__all__ = ["TTA_MODES", "SCALE_MODES", "dense_head", "dense_logits", "dense_probs", "multicrop_probs", "scale_probs", "tta_probs"]


@torch.inference_mode()
def dense_logits(model: VGG, x: torch.Tensor, head: nn.Sequential | None = None) -> torch.Tensor:
    """Class logits of the uncropped image: the dense head's spatial map, averaged over space."""
    f = model.features(x)
    if model.config.head.type == "linear":  # a global max-pool already takes any map size
        return model.forward_head(f)
    head = head if head is not None else dense_head(model)
    first = head[0]
    if not isinstance(first, nn.Conv2d):
        raise TypeError("a dense head starts with the convolution that replaces the first FC layer")
    k = first.kernel_size
    if f.shape[-2] < k[0] or f.shape[-1] < k[1]:
        raise VgglabError(f"dense evaluation needs images at least as large as the training size ({model.config.input_size}px)")
    return head(f).mean((2, 3))


def dense_probs(model: VGG, scaled: dict[int, torch.Tensor], head: nn.Sequential | None = None) -> torch.Tensor:
    """(N, classes): softmax of the spatially averaged dense score map, averaged over the mirror
    and over the scales; ``scaled`` maps each Q to the normalised images rescaled to it."""
    if head is None and model.config.head.type != "linear":
        head = dense_head(model)  # once: the first FC as a conv is as large as the layer (~100M weights for VGG-16)
    probs = [dense_logits(model, v, head).float().softmax(1) for x in scaled.values() for v in (x, x.flip(3))]
    return torch.stack(probs).mean(0)


def multicrop_probs(model: VGG, scaled: dict[int, torch.Tensor], size: int, grid: int) -> torch.Tensor:
    """(N, classes): softmax averaged over every grid crop (and mirror) of every scale."""
    for q, x in scaled.items():
        if min(x.shape[-2:]) < size:
            raise VgglabError(f"multi-crop takes {size}-pixel crops: every scale must be at least {size}, got {q}")
    probs = [
        model(v.contiguous(memory_format=layout_of(x))).float().softmax(1)
        for x in scaled.values()
        for v in multicrop_views(x, size, grid)
    ]
    return torch.stack(probs).mean(0)


@torch.inference_mode()
def scale_probs(
    model: VGG,
    scaled: dict[int, torch.Tensor],
    mode: str,
    size: int,
    *,
    grid: int = MULTICROP_GRID,
    dense: nn.Sequential | None = None,
) -> torch.Tensor:
    """One of :data:`SCALE_MODES` over images already rescaled to each scale."""
    if mode == "dense":
        return dense_probs(model, scaled, dense)
    if mode == "multicrop":
        return multicrop_probs(model, scaled, size, grid)
    if mode == "dense+multicrop":
        return (dense_probs(model, scaled, dense) + multicrop_probs(model, scaled, size, grid)) / 2
    raise VgglabError(f"unknown TTA mode {mode!r}; valid: {', '.join(SCALE_MODES)}")


def default_scales(mode: str, side: int, size: int) -> list[int]:
    """Scales when none are given, for images whose shorter side is ``side``: that side for dense
    evaluation; with multi-crop, at least 256/224 of the model's input ``size`` (the single center
    crop's resize), so that the grid has room to move."""
    if mode == "dense":
        return [side]
    return [max(side, round(size * 256 / 224))]


@torch.inference_mode()
def tta_probs(
    model: VGG,
    x: torch.Tensor,
    mode: str,
    image_size: int,
    *,
    shift: int = 1,
    scales: list[int] | None = None,
    grid: int = MULTICROP_GRID,
    dense: nn.Sequential | None = None,
) -> torch.Tensor:
    """Softmax probabilities (N, classes) of normalised images ``x`` (N, C, H, W), averaged over views."""
    if mode in SCALE_MODES:
        scales = scales or default_scales(mode, min(x.shape[-2:]), image_size)
        return scale_probs(model, {q: rescale_shorter(x, q) for q in scales}, mode, image_size, grid=grid, dense=dense)
    return view_probs(model, x, mode, image_size, shift=shift).mean(0)
