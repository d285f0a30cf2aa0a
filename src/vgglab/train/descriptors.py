"""A frozen pretrained VGG as a descriptor: the model a probe reads, and its descriptors of a split.

The descriptor layers are named as in the paper: ``fc7`` (the second FC layer after its ReLU, the
class layer's input), ``fc6`` (the first), ``pool5`` (the last conv block's map, global average
pooled). The probe's model keeps every layer up to the descriptor and a class layer on top of it, so
a head fitted on the descriptors is that class layer exactly (:func:`probe_model`).

``center`` descriptors see each image as evaluation does (the resize and center crop of the run's
loader); ``dense`` ones are the paper's Appendix B: the network applied densely over the whole image
rescaled to each smallest side Q (FC layers as convolutions), the map averaged over space and with
the mirrored image, L2-normalised, and the scales averaged or stacked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Normalization
from ..data.config import AugmentConfig
from ..data.stream import StreamSplit, full_image_batches, make_loader, uint8_batches
from ..data.views import rescale_shorter
from ..device import autocast
from ..errors import VgglabError
from ..models import VGG
from ..models.dense import dense_head
from ..models.spec import HeadSpec, VGGConfig
from .config import ConfigError, ProbeConfig

FC_LAYERS = {"fc6": 1, "fc7": 2}  # hidden FC layers a descriptor needs below it
DENSE_PIXELS = 4 * 512 * 683  # pixels per dense batch at the largest scale (full_image_batches' budget)


def probe_head(source: VGGConfig, layer: str) -> HeadSpec:
    """The head of the probe's model: the source's up to ``layer``, then the class layer."""
    head = source.head
    if layer == "pool5":
        return HeadSpec("gap", num_hidden=0)
    if head.type not in ("imagenet", "cifar") or head.num_hidden < FC_LAYERS[layer]:
        raise ConfigError(
            f"probe.layer {layer} needs {FC_LAYERS[layer]} hidden FC layer(s) in the weights' head; {source.name}'s "
            f"{head.type} head has {head.num_hidden if head.type in ('imagenet', 'cifar') else 0}: use probe.layer: pool5"
        )
    return dataclasses.replace(head, num_hidden=FC_LAYERS[layer])


def probe_model(source_sd: dict[str, torch.Tensor], source: VGGConfig, layer: str, classes: int, input_size: int) -> VGG:
    """The source network up to ``layer`` with a fresh class layer of ``classes`` outputs, in eval mode.
    Built on the meta device and given the source's tensors (no 100M-weight init to throw away)."""
    cfg = dataclasses.replace(source, head=probe_head(source, layer), num_classes=classes, input_size=input_size)
    with torch.device("meta"):
        model = VGG(cfg)
    own = model.state_dict()
    keep = {k: v for k, v in source_sd.items() if k in own and not k.startswith("head.classifier.")}
    fresh = [k for k in own if k not in keep]
    if any(not k.startswith("head.classifier.") for k in fresh):
        raise ConfigError(f"the weights lack {', '.join(k for k in fresh if not k.startswith('head.classifier.'))[:200]}")
    classifier = model.head.classifier
    assert isinstance(classifier, nn.Linear)  # every head ends in one
    dim = classifier.in_features
    keep["head.classifier.weight"] = torch.zeros(classes, dim)
    if "head.classifier.bias" in own:
        keep["head.classifier.bias"] = torch.zeros(classes)
    model.load_state_dict(keep, assign=True)
    return model.eval().requires_grad_(False)


def _center(model: VGG, x: torch.Tensor) -> torch.Tensor:
    """The class layer's input: the embedding ``forward_head(pre_logits=True)`` gives (dropout is off in eval)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _dense_trunk(model: VGG) -> Callable[[torch.Tensor], torch.Tensor]:
    """The conv map -> the descriptor layer's spatial map (N, D, h, w): the dense head up to the class layer."""
    if model.config.head.type == "gap":
        return lambda f: f
    if model.config.head.type not in ("imagenet", "cifar"):
        raise ConfigError(
            f"probe.descriptor dense applies the FC layers as convolutions, which a {model.config.head.type} head "
            "has none of; use probe.descriptor: center or probe.layer: pool5"
        )
    layers = list(dense_head(model).children())[:-1]  # without the class layer
    return nn.Sequential(*layers)


@torch.inference_mode()
def dense_descriptor(model: VGG, trunk, scaled: list[torch.Tensor], pool: str) -> torch.Tensor:
    """Appendix B over normalised images already rescaled to each scale: (N, D) or (N, D * scales)."""
    per_scale = []
    for x in scaled:
        if model.config.head.type != "gap" and min(x.shape[-2:]) // 2**model.config.num_pools < model.config.feature_side():
            raise VgglabError(
                f"probe.scales: a {min(x.shape[-2:])}-pixel side is below the {model.config.input_size}-pixel input the FC "
                "layers were trained on; use scales of at least that"
            )
        d = sum(trunk(model.features(v)).float().mean((2, 3)) for v in (x, x.flip(3))) / 2
        per_scale.append(F.normalize(d, dim=1))
    if pool == "stack":
        return torch.cat(per_scale, 1)
    return torch.stack(per_scale).mean(0)


def descriptor_batches(
    model: VGG,
    split,
    probe: ProbeConfig,
    *,
    image_size: int,
    norm: Normalization,
    device: torch.device,
    precision: str,
    channels_last: bool,
    batch_size: int,
    workers,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    view: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(row indices into ``split``, descriptors) a batch at a time: center crops (or, with ``augment``,
    the loader's random view of epoch ``view``), or Appendix B's dense descriptor."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    if probe.descriptor == "center":
        loader = make_loader(
            split,
            batch_size,
            image_size=image_size,
            norm=norm,
            augment=augment,
            seed=seed,
            device=device,
            channels_last=channels_last,
            workers=workers,
        )
        loader.set_epoch(view)
        start = 0
        for x, _ in loader:
            with torch.inference_mode(), autocast(device, precision):
                d = _center(model, x).float()
            yield torch.arange(start, start + len(d)), d
            start += len(d)
        return
    trunk = _dense_trunk(model)
    if isinstance(split, StreamSplit):
        for rows, scaled in full_image_batches(split, probe.scales, DENSE_PIXELS, workers):
            with autocast(device, precision):
                yield (
                    rows,
                    dense_descriptor(
                        model, trunk, [norm(s, device).contiguous(memory_format=fmt) for s in scaled], probe.scale_pool
                    ),
                )
        return
    start = 0
    for x in uint8_batches(split, batch_size):
        x = norm(x, device)
        with autocast(device, precision):
            d = dense_descriptor(
                model, trunk, [rescale_shorter(x, q).contiguous(memory_format=fmt) for q in probe.scales], probe.scale_pool
            )
        yield torch.arange(start, start + len(d)), d
        start += len(d)
