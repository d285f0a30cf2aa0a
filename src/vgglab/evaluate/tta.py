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
from torch.nn.utils import skip_init

from ..data.views import MULTICROP_GRID, SCALE_MODES, TTA_MODES, layout_of, multicrop_views, rescale_shorter, view_probs
from ..errors import VgglabError
from ..models import VGG

__all__ = ["TTA_MODES", "SCALE_MODES", "dense_head", "dense_logits", "dense_probs", "multicrop_probs", "scale_probs", "tta_probs"]


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): adaptive average pooling along one axis as a matrix."""
    m = torch.zeros(n_out, n_in)
    for p in range(n_out):
        start, end = (p * n_in) // n_out, -(-((p + 1) * n_in) // n_out)
        m[p, start:end] = 1.0 / (end - start)
    return m


def dense_head(model: VGG) -> nn.Sequential:
    """The head rewritten as convolutions over the conv map (Simonyan & Zisserman, sec. 3.2).

    The first FC layer becomes a conv whose kernel is the training-size feature map; for the
    ``imagenet`` head it folds in the adaptive 7x7 average pool (pooling is linear, so
    pool-then-FC is one conv). Later FC layers become 1x1 convs; BatchNorm1d acts per channel.
    """
    cfg = model.config
    if cfg.head.type == "linear":
        raise VgglabError("the 'linear' head max-pools globally, so it needs no dense rewrite: call dense_logits")
    side = cfg.feature_side()  # training-size feature map
    c = model.num_features
    layers: list[nn.Module] = []
    first = True
    for layer in model.head.children():
        if isinstance(layer, nn.Linear):
            w, b = layer.weight.detach(), layer.bias.detach()
            if first and cfg.head.type == "imagenet":
                k = cfg.head.pool_size
                w = w.view(-1, c, k, k)
                if side != k:  # at side == k the pool is the identity
                    pool = _pool_matrix(side, k).to(w)
                    w = torch.einsum("ocpq,pi,qj->ocij", w, pool, pool)
            elif first and cfg.head.type == "cifar":
                w = w.view(-1, c, side, side)
            else:  # gap head's classifier, or any later FC: a 1x1 conv
                w = w.view(w.shape[0], w.shape[1], 1, 1)
            conv = skip_init(
                nn.Conv2d, w.shape[1], w.shape[0], w.shape[-2:], device=w.device, dtype=w.dtype
            )  # no init: overwritten
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(b)
            layers.append(conv)
            first = False
        elif isinstance(layer, nn.BatchNorm1d):
            bn = nn.BatchNorm2d(layer.num_features).to(layer.weight)
            bn.load_state_dict(layer.state_dict())
            layers.append(bn.eval())
        elif isinstance(layer, (nn.ReLU, nn.Dropout)):
            layers.append(layer)
        # pool/flatten: absorbed into the first conv (imagenet, cifar) or replaced by the spatial mean (gap)
    return nn.Sequential(*layers).eval()


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
