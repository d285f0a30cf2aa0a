"""Key mapping between vgglab's named layers and torchvision's index-based VGG state_dicts.

torchvision numbers the layers of ``features`` (conv, [bn], relu, ..., pool) and of
``classifier`` (fc, relu, dropout, fc, relu, dropout, fc) in forward order; ours are named
per block. Walking both in forward order gives a one-to-one mapping of parameter keys.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch

from .spec import SpecError
from .vgg import VGG

# torchvision's VGGs by their number of conv layers (Simonyan & Zisserman's configurations A, B, D, E)
TORCHVISION_DEPTHS = {8: 11, 10: 13, 13: 16, 16: 19}


def torchvision_arch(n_convs: int, batch_norm: bool) -> str | None:
    """The torchvision (and vgglab) model name of a VGG with ``n_convs`` 3x3 convs, or None."""
    depth = TORCHVISION_DEPTHS.get(n_convs)
    return None if depth is None else f"vgg{depth}{'_bn' if batch_norm else ''}"


def _torchvision_names(model: VGG) -> dict[str, str]:
    """Our module name -> torchvision's, for every leaf module of ``model``."""
    if model.config.head.type != "imagenet" or model.config.lrn:
        raise SpecError(
            f"{model.config.name}: torchvision VGGs have the 'imagenet' head and no LRN; "
            "only such models map onto torchvision weights"
        )
    mapping: dict[str, str] = {}
    index = 0
    for bname, block in model.features.named_children():
        for lname, _ in block.named_children():
            mapping[f"features.{bname}.{lname}"] = f"features.{index}"
            index += 1
    index = 0
    for lname, _ in model.head.named_children():
        if lname in ("pool", "flatten"):  # torchvision's avgpool and torch.flatten: no params
            continue
        mapping[f"head.{lname}"] = f"classifier.{index}"
        index += 1
    return mapping


def key_mapping(model: VGG) -> dict[str, str]:
    """Our state_dict key -> torchvision's key, for every entry of ``model.state_dict()``."""
    modules = _torchvision_names(model)
    out = {}
    for key in model.state_dict():
        module, _, tensor = key.rpartition(".")
        out[key] = f"{modules[module]}.{tensor}"
    return out


def to_torchvision_state_dict(model: VGG) -> OrderedDict[str, torch.Tensor]:
    """A state_dict that ``torchvision.models.vggXX[_bn]().load_state_dict(sd, strict=True)`` accepts."""
    mapping = key_mapping(model)
    return OrderedDict((mapping[k], v) for k, v in model.state_dict().items())


def load_torchvision_weights(model: VGG, state_dict_or_path) -> VGG:
    """Load a torchvision VGG state_dict (or a ``.pth`` file of one) into ``model``.

    Every key must map and every shape agree; otherwise the error lists the offending keys.
    Files are read with ``weights_only=True`` so a crafted pickle cannot run code.
    """
    sd = state_dict_or_path
    if isinstance(sd, (str, os.PathLike)):
        try:
            sd = torch.load(sd, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise SpecError(f"weight file not found: {sd}") from None
        except Exception as exc:  # an unpickling refusal or a corrupt file
            raise SpecError(f"cannot read {state_dict_or_path} as a torchvision weight file: {exc}".splitlines()[0]) from None
    if not isinstance(sd, dict):
        raise SpecError(f"expected a state_dict (mapping of tensors), got {type(sd).__name__}")
    mapping = key_mapping(model)
    inverse = {tv: ours for ours, tv in mapping.items()}
    ours_sd = model.state_dict()
    missing = sorted(set(inverse) - set(sd))
    unexpected = sorted(set(sd) - set(inverse))
    shape_errors = [
        f"{tv} {tuple(sd[tv].shape)} vs {ours} {tuple(ours_sd[ours].shape)}"
        for tv, ours in inverse.items()
        if tv in sd and tuple(sd[tv].shape) != tuple(ours_sd[ours].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing from the file: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"not in {model.config.name}: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shape_errors:
        problems.append(f"shape mismatch: {'; '.join(shape_errors[:8])}{' ...' if len(shape_errors) > 8 else ''}")
    if problems:
        raise SpecError(
            f"torchvision weights do not fit {model.config.name} "
            f"(is it the same configuration, BatchNorm and class count?): " + " | ".join(problems)
        )
    model.load_state_dict(OrderedDict((inverse[k], v) for k, v in sd.items()), strict=True)
    return model
