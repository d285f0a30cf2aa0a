"""A trained model with everything needed to feed it: loaded from nothing but its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import Dataset, load_dataset
from ..data.config import DataConfig
from ..data.sources import Split
from ..errors import VgglabError
from ..models import VGG
from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from ..train import speed


@dataclass
class Inference:
    model: VGG
    classes: list[str]
    image_size: int  # model input side
    eval_resize: int  # images are resized (shorter side) to this, then center-cropped
    mean: torch.Tensor  # (C,) [0, 1] scale
    std: torch.Tensor  # (C,); ones for mean subtraction only
    checkpoint: dict
    device: torch.device
    # the run's resolved speed settings where it was trained on this same machine, else fp32 / NCHW
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def in_chans(self) -> int:
        return self.model.config.in_chans

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalised float on the model's device."""
        x = x.to(self.device).float().div_(255)
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float -> [0, 1] images, for display."""
        return (x * self.std.view(1, -1, 1, 1).to(x.device) + self.mean.view(1, -1, 1, 1).to(x.device)).clamp(0, 1)

    def center_crop(self, x: torch.Tensor) -> torch.Tensor:
        o = (x.shape[-1] - self.image_size) // 2
        return x[..., o:o + self.image_size, o:o + self.image_size]

    def data_config(self, data_root: str | None = None) -> DataConfig:
        d = dict(self.checkpoint["config"]["data"])
        if data_root is not None:
            d["root"] = data_root
        return DataConfig(**d)

    def load_split(self, split: str, data_root: str | None = None) -> tuple[Split, Dataset]:
        """The run's dataset split (cached uint8), as the model saw its kind during training."""
        ds = load_dataset(self.data_config(data_root))
        chosen = {"test": ds.test, "val": ds.val, "train": ds.train}[split]
        if chosen is None:
            raise VgglabError(f"this run has no {split} split (data.val_size was 0); use --split test")
        if ds.classes != self.classes:
            raise VgglabError(f"the dataset's classes {ds.classes[:5]}... differ from the checkpoint's {self.classes[:5]}...; check --data-root")
        return chosen, ds


def load_inference(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> Inference:
    """A run directory (its best.pt, else last.pt) or a checkpoint file -> ready-to-use model."""
    ckpt = load_checkpoint(path)
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model = model_from_checkpoint(ckpt, use_ema=use_ema).to(device).eval()
    norm = ckpt["normalization"]
    mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device)
    std = torch.tensor(norm["std"], dtype=torch.float32, device=device) if norm["mode"] == "standardize" else torch.ones_like(mean)
    precision, channels_last = recorded_speed(ckpt, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Inference(model, list(ckpt["classes"]), int(ckpt["image_size"]), int(ckpt.get("eval_resize", ckpt["image_size"])),
                     mean, std, ckpt, device, precision, channels_last)


def recorded_speed(ckpt: dict, device: torch.device) -> tuple[str, bool]:
    """The precision and memory layout training resolved to, when this is the machine (and kind of
    device) it ran on; elsewhere the portable fp32 / NCHW."""
    rec = ckpt.get("speed")
    if not rec or rec.get("device") != device.type or not speed.same_machine(rec.get("machine", {}), speed.machine_info()):
        return "fp32", False
    return rec["precision"], bool(rec["channels_last"])


def resize_shorter(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a square batch to ``side`` x ``side``."""
    if x.shape[-1] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
