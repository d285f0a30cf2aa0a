"""Test-time augmentation: views of each image whose softmax probabilities are averaged.

``none``: the center crop. ``flip``: it and its mirror (the VGG paper, the tutorial).
``flip-translate``: the center crop shifted by ``shift`` pixels up, down, left and right
(reflect padding) plus unshifted, each also mirrored: 10 views. ``flip-shift``: the cheaper
6-view version the CIFAR-10 speed runs use (Jordan 2024): unshifted, shifted by ``shift`` pixels
diagonally up-left and down-right, each also mirrored. ``multicrop``: the image resized
to 256/224 of the input side, a 3x3 grid of crops, each also mirrored: 18 views (the paper's
multi-crop evaluation, with a smaller grid). ``dense``: the paper's fully-convolutional
evaluation (see :func:`dense_logits`) on the uncropped image at each of ``scales``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import VgglabError
from ..models import VGG
from ..data.views import TTA_MODES, resize_square, view_probs

__all__ = ["TTA_MODES", "dense_head", "dense_logits", "tta_probs"]


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
                pool = _pool_matrix(side, k).to(w)
                w = torch.einsum("ocpq,pi,qj->ocij", w.view(-1, c, k, k), pool, pool)
            elif first and cfg.head.type == "cifar":
                w = w.view(-1, c, side, side)
            else:  # gap head's classifier, or any later FC: a 1x1 conv
                w = w.view(w.shape[0], w.shape[1], 1, 1)
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[-2:]).to(w)
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
    k = head[0].kernel_size
    if f.shape[-2] < k[0] or f.shape[-1] < k[1]:
        raise VgglabError(f"dense evaluation needs images at least as large as the training size ({model.config.input_size}px)")
    return head(f).mean((2, 3))


@torch.inference_mode()
def tta_probs(model: VGG, x: torch.Tensor, mode: str, image_size: int, *, shift: int = 1,
              scales: list[int] | None = None, dense: nn.Sequential | None = None) -> torch.Tensor:
    """Softmax probabilities (N, classes) of normalised full images ``x``, averaged over views."""
    if mode == "dense":
        probs = [dense_logits(model, resize_square(x, s), dense).float().softmax(1) for s in (scales or [x.shape[-1]])]
        return torch.stack(probs).mean(0)
    return view_probs(model, x, mode, image_size, shift=shift).mean(0)
