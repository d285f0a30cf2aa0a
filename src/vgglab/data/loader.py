"""Batches from the uint8 cache with all augmentation as whole-batch tensor ops on the device.

No PIL, no per-sample Python and no worker processes: each batch is one gather (random crop
with padding and horizontal flip folded into index maps), one float conversion, and one
multiply-add that normalises and adds the PCA colour noise.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..strict import ConfigError
from .config import AugmentConfig
from .normalization import Normalization
from .stats import PixelStats


class Images(Protocol):
    """What a loader reads of a split: uint8 images (N, C, S, S), on the meta device for a streamed
    split (its shape only), and labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int: ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """All of an epoch's randomness (order and augmentation) comes from (seed, epoch), so a
    resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, out: int, padding: int, pad_mode: str) -> torch.Tensor:
    """Random crops of side ``out`` from uint8 images (N, C, S, S) padded by ``padding``.

    ``offsets`` (N, 2) are the crop's top-left corners in the padded image, ``flips`` (N,)
    mirror the crop. Returns (N, C, out, out) in channels_last memory layout.
    """
    n, _, s, _ = x.shape
    ar = torch.arange(out, device=x.device)
    rows = offsets[:, :1] + ar - padding  # (N, out), source coordinates, may fall outside
    cols = offsets[:, 1:] + ar - padding
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    valid = None
    if pad_mode == "reflect":
        rows, cols = _reflect(rows, s), _reflect(cols, s)
    elif padding:
        valid = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
        rows, cols = rows.clamp(0, s - 1), cols.clamp(0, s - 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    crops = x[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, out, out, C)
    if valid is not None:
        crops = crops * valid[..., None].to(crops.dtype)
    return crops.permute(0, 3, 1, 2)  # NCHW view with channels_last strides


def resized_crop_boxes(n: int, size: int, scale, ratio, g: torch.Generator) -> torch.Tensor:
    """Random boxes (N, 4) as x1, y1, x2, y2 covering ``scale`` of the area at aspect ``ratio``."""
    area = size * size * torch.empty(n).uniform_(scale[0], scale[1], generator=g)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    r = log_r.exp()
    w = (area * r).sqrt().clamp(1, size)
    h = (area / r).sqrt().clamp(1, size)
    x1 = torch.rand(n, generator=g) * (size - w)
    y1 = torch.rand(n, generator=g) * (size - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


def pca_offsets(alpha: torch.Tensor, stats: PixelStats) -> torch.Tensor:
    """AlexNet/VGG colour noise: sum_i alpha_i * lambda_i * p_i per image, (N, C), [0, 1] scale."""
    return (alpha * stats.eigvals) @ stats.eigvecs.T


class BatchLoader:
    """Iterate (images float (B, C, size, size), labels (B,)) over a cached uint8 split.

    ``augment=None`` gives evaluation batches: center crop and normalisation. ``shuffle`` draws a
    new order each epoch; ``drop_last`` leaves out a ragged last batch (when there is a full one).
    ``pca`` holds the colour principal components ``augment.pca_std`` draws noise along.

    Under data parallelism ``batch_size`` is the global batch and ``shard`` is (rank, world size):
    each epoch's order and every sample's augmentation are drawn for the whole dataset from
    (seed, epoch), and rank ``r`` takes its slice of each global batch, so a sample is augmented
    the same whatever the number of processes, and no two ranks see the same sample.
    """

    def __init__(
        self,
        split: Images,
        batch_size: int,
        *,
        image_size: int,
        norm: Normalization,
        augment: AugmentConfig | None = None,
        pca: PixelStats | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device="cpu",
        channels_last: bool = True,
        shard: tuple[int, int] = (0, 1),
    ):
        self.device = torch.device(device)
        if augment is not None and augment.crop == "scale" and split.x.device.type != "meta":
            raise ConfigError(
                "augment.crop: scale rescales each full image: it needs the streamed storage "
                "(data.storage: stream or auto, with an ImageFolder tree); use pad or resized for cached images"
            )
        self.x = split.x if split.x.device.type == "meta" else split.x.to(self.device)  # meta: a streamed split's shape
        self.y = split.y.to(self.device)
        self.batch_size = batch_size
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.shuffle = shuffle
        self.drop_last = drop_last and len(split) > batch_size
        self.channels_last = channels_last
        self.rank, self.world_size = shard
        self.local_batch = math.ceil(batch_size / self.world_size)
        if augment is not None and augment.pca_std > 0 and pca is None:
            raise ValueError("augment.pca_std needs the colour principal components: pass pca=<the training PixelStats>")
        self._pca = _on(pca, self.device) if pca is not None else None
        self._std = norm.divisor(self.device)
        self._scale, self._bias = norm.scale_bias(self.device)
        if image_size > self.x.shape[-1]:
            raise ValueError(f"image_size {image_size} is larger than the cached images ({self.x.shape[-1]})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def stage(self) -> tuple[int, str]:
        """This epoch's (side the model sees, crop|resize): ``augment.stages`` or ``early_crop`` in
        their epochs (counted from 1), else the model's input side."""
        aug = self.augment
        if aug is None or self.epoch < 1:
            return self.image_size, "crop"
        return aug.stage_at(self.epoch, self.image_size)

    @property
    def crop_size(self) -> int:
        """The side of this epoch's random crops (a resize stage crops at the input side, then shrinks)."""
        side, how = self.stage
        return self.image_size if how == "resize" else side

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def local_total(self) -> int:
        """Images this process sees in an epoch (its shard of every batch), for progress."""
        n, bs, lb = len(self.y), self.batch_size, self.local_batch
        return sum(
            max(0, min(b * bs + (self.rank + 1) * lb, (b + 1) * bs, n) - (b * bs + self.rank * lb)) for b in range(len(self))
        )

    def _plan(self):
        """The epoch's order and every sample's augmentation parameters, drawn at once."""
        n = len(self.y)
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        plan = {"order": order}
        aug = self.augment
        if aug is None:
            return plan
        store = self.x.shape[-1]
        if aug.crop == "pad":
            span = store + 2 * aug.padding - self.crop_size + 1
            plan["offsets"] = torch.randint(0, span, (n, 2), generator=g)
        elif aug.crop == "resized":
            plan["boxes"] = resized_crop_boxes(n, store, aug.scale, aug.ratio, g)
        if not aug.flip:
            plan["flips"] = torch.zeros(n, dtype=torch.bool)
        elif aug.flip_mode == "alternate":
            # keyed by sample, not by position: one fixed half per seed, complemented every other epoch
            half = torch.rand(n, generator=torch.Generator().manual_seed(self.seed)) < 0.5
            plan["flips"] = (half ^ bool(self.epoch % 2))[order]
        else:
            plan["flips"] = torch.rand(n, generator=g) < 0.5
        if aug.pca_std > 0:
            plan["alpha"] = torch.randn(n, self.x.shape[1], generator=g) * aug.pca_std
        for key in ("brightness", "contrast"):  # drawn after the others: recipes without jitter draw as before
            amount = getattr(aug, key)
            if amount > 0:
                plan[key] = torch.empty(n).uniform_(1.0 - amount, 1.0 + amount, generator=g)
        return plan

    def __iter__(self):
        # drawn on the CPU (the same numbers on every device for a seed), moved to the device once
        # per epoch without blocking: per-batch slices are then views, with no copies to wait for
        plan = {k: _to_device(v, self.device) for k, v in self._plan().items()}
        n = len(self.y)
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * self.local_batch
            end = min(start + self.local_batch, (b + 1) * self.batch_size, n)
            if end <= start:  # the last evaluation batch may leave a rank nothing
                continue
            sl = slice(start, end)
            idx = plan["order"][sl]
            yield self._batch(idx, {k: v[sl] for k, v in plan.items() if k != "order"}), self.y[idx]

    def _batch(self, idx: torch.Tensor, p: dict) -> torch.Tensor:
        x = place(self.x[idx], self.augment, p, self.crop_size)
        side, how = self.stage
        if how == "resize" and side != x.shape[-1]:  # the whole view, fewer pixels
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        return self.finish(x, p)

    def finish(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """Float images (B, C, size, size) on the device -> the normalised batch (memory layout as
        configured, colour jitter and PCA colour noise where the plan drew them): the step both
        storages share."""
        if "brightness" in p or "contrast" in p:
            x = jitter(x, p.get("brightness"), p.get("contrast"))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        bias = self._bias
        if "alpha" in p and self._pca is not None:  # alpha is drawn only with PCA statistics
            bias = bias + (pca_offsets(p["alpha"], self._pca) / self._std).view(len(x), -1, 1, 1)
        return x.mul_(self._scale).add_(bias)


def jitter(x: torch.Tensor, brightness: torch.Tensor | None, contrast: torch.Tensor | None) -> torch.Tensor:
    """torchvision's ColorJitter on float pixels (B, C, H, W) in 0..255, one factor per image:
    brightness scales the pixels, contrast blends each image with its mean gray (torchvision's luma weights for
    RGB), each result clipped to the pixel range."""
    if brightness is not None:
        x = (x * brightness.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0, 255)
    if contrast is not None:
        gray = x if x.shape[1] == 1 else (x * x.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = gray.mean((1, 2, 3), keepdim=True)
        c = contrast.view(-1, 1, 1, 1).to(x.dtype)
        x = (x * c + mean * (1 - c)).clamp_(0, 255)
    return x


def place(x: torch.Tensor, aug: AugmentConfig | None, p: dict, size: int) -> torch.Tensor:
    """Stored uint8 squares (B, C, S, S) -> float crops (B, C, size, size): the center for evaluation
    and ``crop: none``, else the planned pad-crop or resized box, and the planned flips."""
    store = x.shape[-1]
    if aug is None or aug.crop == "none":
        o = (store - size) // 2
        x = x[:, :, o : o + size, o : o + size]
        if aug is not None and aug.flip:
            x = torch.where(p["flips"][:, None, None, None], x.flip(3), x)
        return x.float()
    if aug.crop == "pad":
        return crop_flip(x, p["offsets"], p["flips"], size, aug.padding, aug.pad_mode).float()
    # resized: bilinear crops of random boxes, all at once
    boxes = torch.cat([torch.arange(len(x), device=x.device, dtype=torch.float32)[:, None], p["boxes"]], 1)
    x = roi_align(x.float(), boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    x = torch.where(p["flips"][:, None, None, None], x.flip(3), x)
    return x


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _on(stats: PixelStats, device) -> PixelStats:
    return PixelStats(*(t.to(device) for t in (stats.mean, stats.std, stats.eigvals, stats.eigvecs)))
