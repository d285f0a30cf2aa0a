"""Settings of the data pipeline: where the data is, how it is split, how it is augmented."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ..declare import Number, Section, Text, Values, setting
from ..strict import ConfigError

Dataset = Literal["cifar10", "cifar100", "imagefolder", "digits"]
NormalizeMode = Literal["standardize", "subtract_mean"]
DATASETS = typing.get_args(Dataset)
NORMALIZE_MODES = typing.get_args(NormalizeMode)
# The model input side: the VGG paper evaluates at up to 512; 4096 admits full-size photos. The
# decoded dataset's memory is checked against the machine before decoding (vgglab.memory).
MAX_IMAGE_SIZE = 4096
Side = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIZE)]
Range = Annotated[tuple[float, float], Values]  # read as floats, as before (a recipe's identity)


class DataConfig(Section, section="data"):
    """Where the data is, how much of it is used, how it is split and read."""

    dataset: Dataset = setting("cifar10", "CIFAR-10/100 (downloaded when missing), an image folder, or the built-in digits")
    root: Text = setting("data/cifar10", "a folder, an ImageFolder tree, or a .tar.gz/.zip archive", resume=True)
    download: bool = setting(True, "cifar10/100: fetch the official archive when it is missing", resume=True)
    image_size: Side | None = setting(None, "the model's input side in pixels; null: the dataset's own (32 for CIFAR)")
    val_size: Annotated[Number, Field(ge=0)] | None = setting(
        None, "validation images: a count or a fraction; null: 5000 or 10 %"
    )
    train_limit: Annotated[int, Field(ge=1)] | None = setting(None, "train on this many images only (stratified); null: all")
    split_seed: int = setting(0, "seed of the validation split (it does not move with train.seed)")
    batch_size: int = setting(128, "training images per step", ge=1)
    eval_batch_size: int = setting(500, "images per evaluation batch", ge=1, resume=True)
    cache_dir: Text | None = setting(None, "the cache folder; null: $VGGLAB_CACHE or ~/.cache/vgglab", resume=True)
    strict: bool = setting(False, "fail on an unreadable image instead of skipping it with a warning")
    storage: Literal["auto", "memory", "stream"] = setting(
        "auto", "memory: decoded once into RAM; stream: files read per batch by workers; auto: memory where it fits"
    )
    workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = setting("auto", "stream: decoding processes (0: none)")

    @model_validator(mode="after")
    def _fraction(self):
        if isinstance(self.val_size, float) and self.val_size >= 1:
            raise ConfigError(f"data.val_size must be a count >= 0 or a fraction in [0, 1), got {self.val_size}")
        return self


def _stages(value):
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"augment.stages is a list of [epochs, side, crop|resize], e.g. [[3, 24, resize]], got {value!r}")
    return [tuple(s) if isinstance(s, list) else s for s in value]


Amplitude = Annotated[Number, Field(ge=0, lt=1)]
Stage = tuple[Annotated[int, Field(ge=1)], Side, Literal["crop", "resize"]]  # epochs, side, how the side is made


class AugmentConfig(Section, section="augment"):
    """How training images are augmented and how pixels are normalised."""

    crop: Literal["pad", "resized", "scale", "none"] = setting(
        "pad", "pad: random crop of the padded image; resized: random-resized-crop; scale: the paper's S jitter; none"
    )
    padding: int = setting(4, "crop: pad, pixels of padding", ge=0, le=1024)
    pad_mode: Literal["zeros", "reflect"] = setting("zeros", "crop: pad, what the padding holds")
    scale: Range = setting((0.35, 1.0), "crop: resized, the range of the crop's share of the image area")
    ratio: Range = setting((0.75, 1.3333), "crop: resized, the range of the crop's aspect ratio")
    scale_min: Side = setting(256, "crop: scale, the smallest shorter side S drawn per image (pixels)")
    scale_max: Side = setting(512, "crop: scale, the largest shorter side S (equal to scale_min: a fixed S)")
    flip: bool = setting(True, "random horizontal flips")
    flip_mode: Literal["random", "alternate"] = setting("random", "random: p 0.5 per epoch; alternate: half, then the other half")
    pca_std: Number = setting(0.0, "sigma of AlexNet/VGG PCA colour noise (the paper: 0.1); 0: off", ge=0, le=10)
    normalize: NormalizeMode = setting("standardize", "standardize: (x - mean) / std; subtract_mean: x - mean (the paper's)")
    mean: Annotated[list[Number], Field(min_length=1, max_length=4)] | None = setting(
        None, "per-channel mean, [0, 1] scale; null: the training images' own"
    )
    std: Annotated[list[Annotated[Number, Field(gt=0)]], Field(min_length=1, max_length=4)] | None = setting(
        None, "per-channel std (e.g. ImageNet's for pretrained weights); null: the training images' own"
    )
    early_crop: Side | None = setting(None, "crop: pad, a smaller random crop side for the first early_epochs epochs")
    early_epochs: int = setting(0, "epochs that train on early_crop crops", ge=0)
    stages: Annotated[list[Stage], BeforeValidator(_stages)] = setting(
        [], "a resolution schedule from epoch 1: [[epochs, side, crop|resize], ...], then data.image_size"
    )
    brightness: Amplitude = setting(0.0, "colour jitter: brightness factors from [1 - b, 1 + b]; 0: off")
    contrast: Amplitude = setting(0.0, "colour jitter: contrast factors from [1 - c, 1 + c]; 0: off")

    @model_validator(mode="after")
    def _together(self):
        if (self.early_crop is None) != (self.early_epochs == 0):
            raise ConfigError(
                f"augment.early_crop and augment.early_epochs go together (a crop side and how many epochs "
                f"use it), got {self.early_crop!r} and {self.early_epochs!r}"
            )
        if self.early_crop is not None and self.crop != "pad":
            raise ConfigError(f"augment.early_crop takes random crops of the padded images (crop: pad), not crop: {self.crop}")
        if self.stages and self.early_crop is not None:
            raise ConfigError("augment.early_crop is the one-stage form of augment.stages: set one of them")
        if self.stages and self.crop != "pad":
            raise ConfigError(f"augment.stages shrinks the padded random crops (crop: pad), not crop: {self.crop}")
        if self.scale_min > self.scale_max:
            raise ConfigError(f"augment.scale_min must not exceed scale_max, got {self.scale_min}, {self.scale_max}")
        for key, top in (("scale", 1.0), ("ratio", float("inf"))):
            low, high = getattr(self, key)
            if not 0 < low <= high <= top:
                raise ConfigError(
                    f"augment.{key} must be a [low, high] pair with 0 < low <= high{' <= 1' * (top == 1)}, got {[low, high]}"
                )
        return self

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
