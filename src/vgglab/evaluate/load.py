"""``vgglab.load_model``: a trained model from one file, ready to use from Python."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sources import square_rgb
from ..errors import VgglabError
from ..models import VGG, create_model_from_spec
from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from ..train.engine import resolve_device
from .predict import to_gray_if

META_KEYS = ("classes", "image_size", "eval_resize", "model_config", "normalization")


@dataclass(frozen=True)
class RunMeta:
    """What travels with a model's weights: its class names, input side, the side images are
    resized to before the center crop, the model config and the normalisation (mode, mean, std
    on the [0, 1] scale)."""

    classes: tuple[str, ...]
    image_size: int
    eval_resize: int
    model_config: dict
    normalization: dict

    @classmethod
    def from_mapping(cls, d: dict, where: str) -> "RunMeta":
        missing = [k for k in META_KEYS if k not in d]
        if missing:
            raise VgglabError(f"{where} lacks {', '.join(missing)}: it was not written by vgglab (use a run directory, best.pt/last.pt or its model.safetensors)")
        plain = json.loads(json.dumps({k: d[k] for k in ("model_config", "normalization")}))  # tuples -> lists, as in files
        return cls(tuple(d["classes"]), int(d["image_size"]), int(d.get("eval_resize") or d["image_size"]),
                   plain["model_config"], plain["normalization"])


class Preprocess:
    """Images -> the normalised batch (N, C, S, S) the model expects, on its device, as evaluation
    prepares them: shorter side resized to ``eval_resize``, center crop to ``image_size``.

    Accepts a PIL image (any mode; decoded exactly as ``vgglab predict`` decodes a file), a list of
    them, or a uint8 tensor (C, H, W) / (N, C, H, W) (resized with antialiased bilinear)."""

    def __init__(self, meta: RunMeta, in_chans: int, device: torch.device):
        self.meta, self.in_chans, self.device = meta, in_chans, device
        norm = meta.normalization
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = std if norm["mode"] == "standardize" else torch.ones_like(std)

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = self._resize(images if images.dim() == 4 else images[None])
        else:
            batch = images if isinstance(images, (list, tuple)) else [images]
            x = torch.stack([torch.from_numpy(np.array(square_rgb(im, self.meta.eval_resize))).permute(2, 0, 1) for im in batch])
        if x.dtype != torch.uint8:
            raise VgglabError(f"preprocess takes uint8 images (0-255), got {x.dtype}; convert with (x * 255).round().to(torch.uint8)")
        x = to_gray_if(x, self.in_chans)
        if x.shape[1] != self.in_chans:
            raise VgglabError(f"the model takes {self.in_chans}-channel images, got {x.shape[1]} channels")
        o = (x.shape[-1] - self.meta.image_size) // 2
        x = x[..., o:o + self.meta.image_size, o:o + self.meta.image_size]
        return (x.to(self.device).float().div_(255) - self.mean) / self.std

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Shorter side to ``eval_resize``, center crop to a square of that side (uint8 kept)."""
        side = self.meta.eval_resize
        h, w = x.shape[-2:]
        if (h, w) != (side, side):
            scale = side / min(h, w)
            size = (max(side, round(h * scale)), max(side, round(w * scale)))
            x = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            x = x[..., top:top + side, left:left + side]
        return x


def load_model(path: str | Path, device: str | torch.device = "auto", use_ema: bool = True) -> VGG:
    """A run directory (its best.pt, else last.pt), a vgglab checkpoint or a model.safetensors ->
    the model in eval mode on ``device``, with ``model.meta`` (:class:`RunMeta`) and
    ``model.preprocess`` (:class:`Preprocess`) attached::

        model = vgglab.load_model("runs/fast_cifar10")
        probs = model(model.preprocess(PIL.Image.open("cat.png"))).softmax(1)
        print(model.meta.classes[probs.argmax()])
    """
    path = Path(path)
    device = resolve_device(str(device))
    if path.suffix == ".safetensors":
        model, meta = _from_safetensors(path)
    else:
        ckpt = load_checkpoint(path)
        meta = RunMeta.from_mapping(ckpt, ckpt["path"])
        model = model_from_checkpoint(ckpt, use_ema=use_ema)
    model = model.to(device).eval()
    model.meta = meta
    model.preprocess = Preprocess(meta, model.config.in_chans, device)
    return model


def _from_safetensors(path: Path) -> tuple[VGG, RunMeta]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise VgglabError(f"model file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise VgglabError(f"cannot read {path}: {str(exc).splitlines()[0]} (is it a complete .safetensors file?)") from None
    meta = RunMeta.from_mapping({k: json.loads(v) for k, v in raw.items() if k in META_KEYS}, str(path))
    model = create_model_from_spec(meta.model_config)
    model.load_state_dict(state)
    return model, meta
