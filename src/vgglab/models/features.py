"""Named intermediate activations of a VGG in one forward, for perceptual losses, probing and
feature reuse, built on torchvision's ``create_feature_extractor`` (an FX graph that stops after
the last requested layer) rather than forward hooks."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from . import vgg as vgg_module
from .layers import check_layers
from .vgg import VGG


def feature_extractor(model: VGG, layers: list[str]) -> nn.Module:
    """A module whose forward returns ``{name: activation}`` for each of ``layers`` (names as
    ``vgglab summary`` and ``VGG.layer_names()`` list them, e.g. ``features.block3.relu3``).

    It shares ``model``'s parameters (train or freeze them there). In-place ReLUs are replaced by
    out-of-place ones in the extractor only, so a requested BatchNorm or conv output is returned
    as it was, not overwritten by the activation after it; ``model`` itself is left unchanged."""
    layers = check_layers(model, list(layers))
    extractor = create_feature_extractor(
        model,
        return_nodes={n: n for n in layers},
        # the input-shape check is plain Python on sizes: kept as one opaque call in the graph
        tracer_kwargs={"autowrap_functions": [vgg_module.check_input_shape]},
    )
    for name, module in list(extractor.named_modules()):
        if isinstance(module, nn.ReLU) and module.inplace:
            parent, _, leaf = name.rpartition(".")
            setattr(extractor.get_submodule(parent) if parent else extractor, leaf, nn.ReLU(inplace=False))
    return extractor


@torch.inference_mode()
def extract(model: VGG, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """``feature_extractor(model, layers)(x)`` in eval mode without gradients."""
    was_training = model.training
    try:
        return feature_extractor(model.eval(), layers)(x)
    finally:
        model.train(was_training)
