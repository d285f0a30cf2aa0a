"""What is frozen at each epoch: ``train.freeze``, ``unfreeze_after``, ``freeze_bn_scale`` and
``whiten_bias_epochs`` as a plan."""

from __future__ import annotations

from torch import nn

from ..models import VGG
from .config import ConfigError, TrainConfig


def frozen_modules(model: VGG, names: list[str]) -> list[nn.Module]:
    """Modules named by ``train.freeze``: "features", "head", "block3" or "features.block3"."""
    blocks = dict(model.features.named_children())
    out: list[nn.Module] = []
    for n in names:
        short = n.removeprefix("features.")
        if n == "features":
            out.append(model.features)
        elif n == "head":
            out.append(model.head)
        elif short in blocks:
            out.append(blocks[short])
        else:
            raise ConfigError(f"train.freeze: unknown part {n!r}; valid: features, head, {', '.join(blocks)}")
    return out


def freeze_bn_scales(model: nn.Module) -> None:
    """Keep every BatchNorm weight (scale) fixed; its bias still trains."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            m.weight.requires_grad_(False)


def set_frozen(modules: list[nn.Module], frozen: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(not frozen)


class FreezePlan:
    """The parts of ``model`` that ``train`` freezes (no gradients, BatchNorm in eval mode), and
    until when: all of them through epoch ``unfreeze_after``, none after it (never unfrozen when it
    is unset). With ``freeze_bn_scale`` every BatchNorm scale stays fixed throughout."""

    def __init__(self, model: VGG, train: TrainConfig):
        self.model = model
        names = [train.freeze] if isinstance(train.freeze, str) else train.freeze
        self.modules = frozen_modules(model, names)  # checked now, before any epoch runs
        self.unfreeze_after = train.unfreeze_after
        self.bn_scale = train.freeze_bn_scale
        self.whiten_bias_epochs = train.whiten_bias_epochs
        self.whiten: nn.Module | None = getattr(model.features, "whiten", None)
        if self.whiten_bias_epochs is not None and self.whiten is None:
            raise ConfigError(
                "train.whiten_bias_epochs is set but this model has no whitening layer "
                "(model option whiten: 2, as vgg_fast); remove it"
            )

    def frozen_at(self, epoch: int) -> list[nn.Module]:
        """The modules frozen during ``epoch`` (1-based)."""
        frozen = [] if self.unfreeze_after is not None and epoch > self.unfreeze_after else list(self.modules)
        if (
            self.whiten is not None
            and self.whiten_bias_epochs is not None
            and epoch > self.whiten_bias_epochs
            and self.whiten not in frozen
        ):
            frozen.append(self.whiten)  # its only parameter is the bias
        return frozen

    def apply(self, epoch: int) -> list[nn.Module]:
        """Set every parameter's ``requires_grad`` for ``epoch``; returns the frozen modules."""
        frozen = self.frozen_at(epoch)
        planned = self.modules + (
            [self.whiten]
            if self.whiten is not None and self.whiten_bias_epochs is not None and self.whiten not in self.modules
            else []
        )
        set_frozen(planned, True)
        set_frozen([m for m in planned if m not in frozen], False)
        if self.bn_scale:
            freeze_bn_scales(self.model)
        return frozen
