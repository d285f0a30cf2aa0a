"""The head of a VGG rewritten as convolutions over the conv map (Simonyan & Zisserman, sec. 3.2): the
network applied densely over an image of any size, for the paper's dense evaluation and Appendix B's
descriptor."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import skip_init

from ..errors import VgglabError
from .vgg import VGG


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
