"""``vgglab.load_model``: a trained model from one file, ready to use from Python."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import resize

from ..data.imagefolder import square_offset, square_rgb
from ..data.views import center_crop
from ..device import resolve_device
from ..errors import VgglabError
from ..models import VGG
from ..pretrained import is_pretrained, parse_pretrained
from ..run.checkpoint import load_checkpoint, meta_of, model_from_checkpoint
from ..run.meta import RunMeta
from .predict import to_gray_if


class Preprocess:
    """Images -> the normalised batch (N, C, S, S) the model expects, on its device, as evaluation
    prepares them: shorter side resized to ``eval_resize``, center crop to ``image_size``.

    Accepts a PIL image (any mode; decoded exactly as ``vgglab predict`` decodes a file), a list of
    them, or a uint8 tensor (C, H, W) / (N, C, H, W) (resized with antialiased bilinear)."""

    def __init__(self, meta: RunMeta, in_chans: int, device: torch.device):
        self.meta, self.in_chans, self.device = meta, in_chans, device

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            x = self._resize(images if images.dim() == 4 else images[None])
        else:
            batch = images if isinstance(images, (list, tuple)) else [images]
            x = torch.stack(
                [
                    torch.from_numpy(np.array(square_rgb(im, self.meta.eval_resize, self.meta.image_size))).permute(2, 0, 1)
                    for im in batch
                ]
            )
        if x.dtype != torch.uint8:
            raise VgglabError(
                f"preprocess takes uint8 images (0-255), got {x.dtype}; convert with (x * 255).round().to(torch.uint8)"
            )
        x = to_gray_if(x, self.in_chans)
        if x.shape[1] != self.in_chans:
            raise VgglabError(f"the model takes {self.in_chans}-channel images, got {x.shape[1]} channels")
        return self.meta.normalization(center_crop(x, self.meta.image_size), self.device)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Shorter side to ``eval_resize`` (torchvision's tensor resize, antialiased bilinear), then
        the square placed as for PIL images (``square_rgb``); uint8 kept."""
        side, crop = self.meta.eval_resize, self.meta.image_size
        x = resize(x, [side], antialias=True)
        top, left = square_offset(x.shape[-2], side, crop), square_offset(x.shape[-1], side, crop)
        return x[..., top : top + side, left : left + side]


def load_model(path: str | Path, device: str | torch.device = "auto", use_ema: bool = True) -> VGG:
    """A run directory (its best.pt, else last.pt), a vgglab checkpoint, a model.safetensors or
    torchvision's ImageNet weights by name (``torchvision:vgg16_bn[:WEIGHTS]``) -> the model in eval mode on ``device``, with ``model.meta`` (:class:`RunMeta`) and
    ``model.preprocess`` (:class:`~vgglab.evaluate.load.Preprocess`) attached::

        model = vgglab.load_model("runs/fast_cifar10")
        probs = model(model.preprocess(PIL.Image.open("cat.png"))).softmax(1)
        print(model.meta.classes[probs.argmax()])
    """
    device = resolve_device(str(device))
    if is_pretrained(path):
        model = parse_pretrained(path).model()
        return _ready(model, model.meta, device)
    ckpt = load_checkpoint(path)  # a model.safetensors too
    return _ready(model_from_checkpoint(ckpt, use_ema=use_ema), meta_of(ckpt), device)


def _ready(model: VGG, meta: RunMeta, device: torch.device) -> VGG:
    model = model.to(device).eval()
    model.meta = meta
    model.preprocess = Preprocess(meta, model.config.in_chans, device)
    return model
