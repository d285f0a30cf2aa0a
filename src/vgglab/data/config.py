"""Settings of the data pipeline: where the data is, how it is split, how it is augmented."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..strict import ConfigError
from ..strict import check_choice as _choice

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits")
NORMALIZE_MODES = ("standardize", "subtract_mean")
STORAGES = ("auto", "memory", "stream")
CROPS = ("pad", "resized", "scale", "none")
STAGE_MODES = ("crop", "resize")  # augment.stages: how a stage gets its side
# The model input side: the VGG paper evaluates at up to 512; 4096 admits full-size photos. The
# decoded dataset's memory is checked against the machine before decoding (vgglab.memory).
MAX_IMAGE_SIZE = 4096


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    root: str = "data/cifar10"  # folder, ImageFolder tree, or .tar.gz/.zip archive
    download: bool = True  # cifar10/100 only: fetch the official archive when missing
    image_size: int | None = None  # model input side; None: the dataset's own (32 for CIFAR)
    val_size: float | int | None = None  # images (int) or fraction; None: 5000 for CIFAR, else 10 %
    train_limit: int | None = None  # use only this many training images (stratified, seeded)
    split_seed: int = 0  # the validation split does not move when train.seed changes
    batch_size: int = 128
    eval_batch_size: int = 500
    cache_dir: str | None = None  # default: $VGGLAB_CACHE or ~/.cache/vgglab
    strict: bool = False  # fail on an unreadable image instead of skipping it with a warning
    # memory: decode once into a uint8 tensor cache (CIFAR-sized data); stream: read the ImageFolder
    # files as they are, per batch, in worker processes (any size); auto: memory when the decoded
    # splits take at most a quarter of the free memory and no full-image augmentation is asked for
    storage: str = "auto"
    workers: int | str = "auto"  # stream: decoding processes; auto: from the cores and the device

    def __post_init__(self):
        _choice("data", "dataset", self.dataset, DATASETS)
        _choice("data", "storage", self.storage, STORAGES)
        if self.workers != "auto" and not (isinstance(self.workers, int) and 0 <= self.workers <= 256):
            raise ConfigError(
                f"data.workers must be auto or a number of processes 0..256 (0: decode in the training process), got {self.workers!r}"
            )
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(
                f"data.batch_size and eval_batch_size must be positive, got {self.batch_size}, {self.eval_batch_size}"
            )
        if self.image_size is not None and not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(
                f"data.image_size must be between 8 and {MAX_IMAGE_SIZE} pixels (or null for the dataset's own), got {self.image_size}"
            )
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"data.train_limit must be a positive number of images (or null for all), got {self.train_limit}")
        if self.val_size is not None and (self.val_size < 0 or (isinstance(self.val_size, float) and self.val_size >= 1)):
            raise ConfigError(f"data.val_size must be a count >= 0 or a fraction in [0, 1), got {self.val_size}")


@dataclass
class AugmentConfig:
    # pad: random crop after padding; resized: random-resized-crop (area fraction and aspect ratio of
    # the image); scale: the VGG paper's, shorter side rescaled to S ~ U[scale_min, scale_max] then a
    # random crop (streamed storage: it needs the full image); none
    crop: str = "pad"
    padding: int = 4  # pixels, crop: pad
    pad_mode: str = "zeros"  # zeros or reflect
    scale: tuple[float, float] = (0.35, 1.0)  # crop: resized, fraction of the image area
    ratio: tuple[float, float] = (0.75, 1.3333)  # crop: resized, aspect ratio range
    scale_min: int = 256  # crop: scale, the shorter side S in pixels drawn per image (fixed S when equal)
    scale_max: int = 512
    flip: bool = True  # random horizontal flip
    # random: each sample flipped with p 0.5 every epoch. alternate (Jordan 2024, "94% on CIFAR-10
    # in 3.29 seconds"): a seeded random half in even epochs, exactly the other half in odd ones.
    flip_mode: str = "random"
    pca_std: float = 0.0  # sigma of AlexNet/VGG PCA colour noise; 0 disables (0.1 is the paper's)
    normalize: str = "standardize"  # standardize: (x - mean) / std; subtract_mean: x - mean (the paper)
    mean: list | None = None  # per-channel, [0, 1] scale; None: the training images' own
    std: list | None = None  # e.g. ImageNet's for a model pretrained on ImageNet
    # fewer pixels early (progressive resizing): crop: pad takes early_crop x early_crop random crops
    # in the first early_epochs epochs (a model whose head pools globally takes any size), then
    # data.image_size; a 24-px crop of a 32-px image costs 0.56x the MACs of the whole
    early_crop: int | None = None
    early_epochs: int = 0
    # a resolution schedule (crop: pad): stages of [epochs, side, crop|resize] from epoch 1 on, then
    # data.image_size. crop: side x side random crops of the padded image (as early_crop); resize: the
    # usual image_size crop downsampled to side (bilinear, antialiased), so the whole scene is seen
    # (fulcrumresearch/cifar-10-speedrun's E1: [[3, 24, resize], [3, 28, resize]]). []: off
    stages: list = field(default_factory=list)
    # colour jitter as torchvision's ColorJitter (brightness, then contrast around each image's mean
    # gray, clipped to the pixel range): factors drawn per image from [1 - b, 1 + b] and [1 - c, 1 + c]
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        _choice("augment", "crop", self.crop, CROPS)
        if (self.early_crop is None) != (self.early_epochs == 0):
            raise ConfigError(
                f"augment.early_crop and augment.early_epochs go together (a crop side and how many epochs "
                f"use it), got {self.early_crop!r} and {self.early_epochs!r}"
            )
        if self.early_crop is not None:
            if not (
                isinstance(self.early_crop, int)
                and 8 <= self.early_crop <= MAX_IMAGE_SIZE
                and isinstance(self.early_epochs, int)
                and self.early_epochs > 0
            ):
                raise ConfigError(
                    f"augment.early_crop must be a side of 8..{MAX_IMAGE_SIZE} pixels and early_epochs a positive "
                    f"number of epochs, got {self.early_crop!r}, {self.early_epochs!r}"
                )
            if self.crop != "pad":
                raise ConfigError(
                    f"augment.early_crop takes random crops of the padded images (crop: pad), not crop: {self.crop}"
                )
        self.stages = self._checked_stages()
        for key in ("brightness", "contrast"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"augment.{key} is a jitter amplitude in [0, 1) (factors 1 +- it; 0 off), got {value!r}")
        if not 8 <= self.scale_min <= self.scale_max <= MAX_IMAGE_SIZE:
            raise ConfigError(
                f"augment.scale_min and scale_max must satisfy 8 <= min <= max <= {MAX_IMAGE_SIZE}, got {self.scale_min}, {self.scale_max}"
            )
        _choice("augment", "pad_mode", self.pad_mode, ("zeros", "reflect"))
        _choice("augment", "normalize", self.normalize, NORMALIZE_MODES)
        _choice("augment", "flip_mode", self.flip_mode, ("random", "alternate"))
        self.scale, self.ratio = _pair("scale", self.scale, 1.0), _pair("ratio", self.ratio, math.inf)
        if not 0 <= self.padding <= 1024 or not 0 <= self.pca_std <= 10:
            raise ConfigError(
                f"augment.padding must be 0..1024 pixels and augment.pca_std 0..10 (0.1 is the paper's), got {self.padding}, {self.pca_std}"
            )
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None and not (1 <= len(v) <= 4 and all(_number(x) and (x > 0 if key == "std" else True) for x in v)):
                raise ConfigError(
                    f"augment.{key} must be one {'positive ' if key == 'std' else ''}number per image channel "
                    f"(e.g. [0.485, 0.456, 0.406] for ImageNet, [0, 1] pixel scale), or null, got {v!r}"
                )

    def _checked_stages(self) -> list:
        stages = self.stages
        if not isinstance(stages, (list, tuple)):
            raise ConfigError(f"augment.stages is a list of [epochs, side, crop|resize], e.g. [[3, 24, resize]], got {stages!r}")
        out = []
        for s in stages:
            if not (
                isinstance(s, (list, tuple))
                and len(s) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in s[:2])
                and s[0] > 0
                and 8 <= s[1] <= MAX_IMAGE_SIZE
                and s[2] in STAGE_MODES
            ):
                raise ConfigError(
                    f"augment.stages: each stage is [epochs > 0, side 8..{MAX_IMAGE_SIZE}, crop|resize], "
                    f"e.g. [3, 24, resize]; got {s!r}"
                )
            out.append([s[0], s[1], s[2]])
        if out and self.early_crop is not None:
            raise ConfigError("augment.early_crop is the one-stage form of augment.stages: set one of them")
        if out and self.crop != "pad":
            raise ConfigError(f"augment.stages shrinks the padded random crops (crop: pad), not crop: {self.crop}")
        return out

    def resolution_stages(self) -> list[tuple[int, int, str]]:
        """(epochs, side, crop|resize) per stage from epoch 1: ``stages``, or early_crop as one crop stage."""
        if self.early_crop is not None:
            return [(self.early_epochs, self.early_crop, "crop")]
        return [(n, side, how) for n, side, how in self.stages]

    def stage_at(self, epoch: int, image_size: int) -> tuple[int, str]:
        """(side, crop|resize) of training epoch ``epoch`` (from 1): its stage's, after the stages the
        full ``image_size`` crop."""
        start = 0
        for n, side, how in self.resolution_stages():
            if start < epoch <= start + n:
                return side, how
            start += n
        return image_size, "crop"


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _pair(key: str, value, top: float) -> tuple[float, float]:
    """A (low, high) range of positive numbers with low <= high <= ``top``."""
    if not (len(value) == 2 and all(_number(x) for x in value) and 0 < value[0] <= value[1] <= top):
        raise ConfigError(
            f"augment.{key} must be a [low, high] pair with 0 < low <= high{' <= 1' if top == 1.0 else ''}, got {list(value)!r}"
        )
    return float(value[0]), float(value[1])
