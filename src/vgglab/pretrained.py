"""ImageNet-pretrained VGGs by name, through torchvision's own weights API.

``torchvision:vgg16_bn`` is that model's default weights, ``torchvision:vgg16_bn:IMAGENET1K_V1``
names them. The file is downloaded once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
with a progress bar) and read from there afterwards, offline too. The weights' metadata (the 1,000
ImageNet category names, resize 256 / crop 224, ImageNet mean and std) becomes the model's
:class:`RunMeta`, so ``predict``, ``eval`` and fine-tuning feed it as torchvision does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import torch
from torchvision.models import WeightsEnum, get_model_weights

from .data.normalization import Normalization
from .errors import VgglabError
from .models import VGG, create_model
from .models.torchvision_compat import TORCHVISION_DEPTHS, load_torchvision_weights
from .run.meta import RunMeta

PREFIX = "torchvision:"
TORCHVISION_VGGS = tuple(f"vgg{d}{bn}" for d in TORCHVISION_DEPTHS.values() for bn in ("", "_bn"))


def is_pretrained(source: object) -> TypeGuard[str]:
    """Whether ``source`` (a path or a name) names torchvision weights."""
    return isinstance(source, str) and source.startswith(PREFIX)


@dataclass(frozen=True)
class Pretrained:
    """One torchvision weight set of one VGG: ``arch`` (e.g. vgg16_bn) and its ``weights`` enum member."""

    arch: str
    weights: WeightsEnum  # one member, e.g. VGG16_BN_Weights.IMAGENET1K_V1

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.arch}:{self.weights.name}"

    @property
    def url(self) -> str:
        return self.weights.url

    @property
    def cache_file(self) -> Path:
        """Where torch's hub keeps the file: a copy placed there by hand is used without network."""
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(self.url).name

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The ImageNet category names, or None for weights without a classifier (vgg16's IMAGENET1K_FEATURES)."""
        cats = self.weights.meta.get("categories")
        return tuple(cats) if cats else None

    def meta(self) -> RunMeta:
        t = self.weights.transforms()
        classes = self.classes or tuple(f"class{i}" for i in range(1000))
        with torch.device("meta"):
            config = create_model(self.arch, num_classes=len(classes)).config.to_dict()
        return RunMeta(
            classes, int(t.crop_size[0]), int(t.resize_size[0]), config, Normalization("standardize", tuple(t.mean), tuple(t.std))
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """torchvision's state dict, downloaded on first use, then from the hub cache."""
        try:
            return self.weights.get_state_dict(progress=True)
        except OSError as exc:  # URLError and socket errors are OSErrors
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise VgglabError(
                f"cannot download {self.url} ({reason}); without network, place that file at {self.cache_file}"
            ) from None

    def model(self) -> VGG:
        """vgglab's VGG with these weights, in eval mode, with ``model.meta`` set."""
        if self.classes is None:
            raise VgglabError(
                f"{self.name} has no trained classifier (ImageNet features only): use it as train.init_from "
                f"with init_mode: features, or {PREFIX}{self.arch} for a model that classifies"
            )
        state = self.state_dict()  # first: a missing file fails before a 130M-parameter model is built
        meta = self.meta()
        model = create_model(self.arch, num_classes=len(meta.classes))
        load_torchvision_weights(model, state)
        model.meta = meta
        return model.eval()


def parse_pretrained(source: str) -> Pretrained:
    """``torchvision:ARCH`` or ``torchvision:ARCH:WEIGHTS`` -> :class:`Pretrained`, or a one-line error."""
    rest = source.removeprefix(PREFIX)
    arch, _, weights_name = rest.partition(":")
    if arch not in TORCHVISION_VGGS:
        raise VgglabError(f"unknown pretrained model {source!r}; valid: " + ", ".join(PREFIX + a for a in TORCHVISION_VGGS))
    enum = get_model_weights(arch)
    if not weights_name:
        return Pretrained(arch, enum.DEFAULT)
    try:
        return Pretrained(arch, enum[weights_name])
    except KeyError:
        valid = ", ".join(f"{PREFIX}{arch}:{w.name}" for w in enum)
        raise VgglabError(f"unknown weights {weights_name!r} for {arch}; valid: {valid}") from None
