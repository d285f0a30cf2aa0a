"""How uint8 pixels become the model's input: one value object for the loader, inference, the
pictures and the checkpoint, so "std, or ones when only the mean is subtracted" lives here alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..strict import ConfigError
from .config import NORMALIZE_MODES, AugmentConfig
from .stats import PixelStats


@dataclass(frozen=True)
class Normalization:
    """``standardize``: (x - mean) / std; ``subtract_mean``: x - mean (the VGG paper). Mean and std
    per channel on the [0, 1] pixel scale."""

    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if self.mode not in NORMALIZE_MODES:
            raise ConfigError(f"normalization mode must be one of {', '.join(NORMALIZE_MODES)}, got {self.mode!r}")
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"augment.mean and augment.std need one value per image channel, got {len(self.mean)} and {len(self.std)}"
            )

    @classmethod
    def of(cls, stats: PixelStats, augment: AugmentConfig | None = None) -> Normalization:
        """The training images' statistics, with ``augment``'s mode and its mean/std where it sets
        them (e.g. ImageNet's for a pretrained model)."""
        aug = augment or AugmentConfig()
        mean = stats.mean.tolist() if aug.mean is None else torch.tensor(aug.mean, dtype=torch.float32).tolist()
        std = stats.std.tolist() if aug.std is None else torch.tensor(aug.std, dtype=torch.float32).tolist()
        return cls(aug.normalize, tuple(mean), tuple(std))

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(d["mode"], tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mean": list(self.mean), "std": list(self.std)}

    @property
    def channels(self) -> int:
        return len(self.mean)

    def divisor(self, device=None) -> torch.Tensor:
        """(C,): std when standardising, else ones."""
        std = torch.tensor(self.std, dtype=torch.float32, device=device)
        return std if self.mode == "standardize" else torch.ones_like(std)

    def scale_bias(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, 1, 1) ``scale`` and ``bias`` with ``normalised = uint8_pixels * scale + bias``."""
        div = self.divisor(device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device)
        return (1.0 / (255.0 * div)).view(1, -1, 1, 1), (-mean / div).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, device=None) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> normalised float on ``device`` (default: where ``x`` is)."""
        x = x.to(device) if device is not None else x
        scale, bias = self.scale_bias(x.device)
        return x.to(torch.float32, copy=True).mul_(scale).add_(bias)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float -> [0, 1] images, for display."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x * self.divisor(x.device).view(1, -1, 1, 1) + mean).clamp(0, 1)
