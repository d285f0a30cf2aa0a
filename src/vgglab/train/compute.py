"""What a recipe costs in arithmetic: training FLOPs from the model's own MAC count (the one
``vgglab summary`` prints, measured by torch's FlopCounterMode) at each epoch's input side, times
the images it sees; and the forward FLOPs of evaluation and its test-time augmentation.

Conventions (as in the speed-run literature, e.g. Jordan 2024, arXiv 2404.00498): a training
image costs 3 forward passes' worth (forward, and a backward of about twice that), so
6 x forward MACs FLOPs; an evaluated view costs 2 x forward MACs FLOPs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..data.views import VIEW_COUNTS
from ..models import create_model_from_spec, summarize
from ..models.spec import VGGConfig
from .config import Config


@lru_cache(maxsize=64)
def _macs(config_json: str, side: int) -> int:
    with torch.device("meta"):  # shapes only: the count needs no weights and no arithmetic
        model = create_model_from_spec(VGGConfig.from_dict(json.loads(config_json)))
    return int(summarize(model, input_size=side)["macs"])


def forward_macs(config: VGGConfig, side: int) -> int:
    """Multiply-accumulates of one forward pass of one image ``side`` x ``side``."""
    return _macs(json.dumps(config.to_dict(), sort_keys=True, default=list), side)


def epoch_sides(cfg: Config, image_size: int) -> list[int]:
    """The side the model sees in each epoch (1..train.epochs): its ``augment.stages`` (or
    ``early_crop``) stage's, else ``image_size``."""
    return [cfg.augment.stage_at(e, image_size)[0] for e in range(1, cfg.train.epochs + 1)]


def images_per_epoch(cfg: Config, n_train: int) -> int:
    """Training images one epoch sees: whole batches only (the ragged last batch is dropped)."""
    b = cfg.data.batch_size
    return n_train // b * b if n_train > b else n_train


@dataclass
class Compute:
    train_flops: float  # every training forward and backward
    val_flops: float  # validation forwards during training (model selection, the schedule)
    test_flops: float  # the final test: plain, or every view of train.test_tta
    images_seen: int

    @property
    def train_pflops(self) -> float:
        return self.train_flops / 1e15

    @property
    def during_training_pflops(self) -> float:
        """Everything the recipe runs while it trains (training and validation), in PFLOPs."""
        return (self.train_flops + self.val_flops) / 1e15


def recipe_compute(cfg: Config, config: VGGConfig, n_train: int, n_val: int, n_test: int, image_size: int) -> Compute:
    """The arithmetic of ``cfg`` trained on ``n_train`` images (after the validation split), with
    ``n_val`` validation images evaluated after each epoch and ``n_test`` test images at the end."""
    per_epoch = images_per_epoch(cfg, n_train)
    sides = epoch_sides(cfg, image_size)
    train = sum(6 * forward_macs(config, side) * per_epoch for side in sides)
    full = forward_macs(config, image_size)
    val = 2 * full * n_val * len(sides)
    test = 2 * full * n_test * VIEW_COUNTS[cfg.train.test_tta]
    return Compute(float(train), float(val), float(test), per_epoch * len(sides))
