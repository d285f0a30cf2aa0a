"""Choosing layers of a VGG by their stable names (``VGG.layer_names()``), for hooks."""

from __future__ import annotations

from torch import nn

from ..errors import VgglabError
from ..strict import _suggest
from .vgg import VGG


def check_layers(model: VGG, names: list[str]) -> list[str]:
    valid = model.layer_names()
    for n in names:
        if n not in valid:
            raise VgglabError(
                f"unknown layer {n!r}{_suggest(n, valid)}; `vgglab summary` lists the layer names, e.g. {', '.join(valid[:4])}"
            )
    return names


def default_layers(model: VGG) -> list[str]:
    """The last activation (ReLU/GELU) of every block: what each stage of the network responds to."""
    out = []
    for bname, block in model.features.named_children():
        acts = [n for n, m in block.named_children() if isinstance(m, (nn.ReLU, nn.GELU))]
        if acts:  # a whitening layer has none
            out.append(f"features.{bname}.{acts[-1]}")
    return out


def last_activation_name(model: VGG) -> str:
    """The name of the final block's last activation (its ReLU/GELU output): the conv map Grad-CAM is computed on."""
    return default_layers(model)[-1]
