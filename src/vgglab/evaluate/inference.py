"""A trained model with everything needed to feed it: loaded from nothing but its checkpoint."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import machine, speed
from ..data import Dataset, load_dataset
from ..data.config import AugmentConfig, DataConfig
from ..data.dataset import AnySplit
from ..data.normalization import Normalization
from ..data.stream_index import folder_split
from ..data.views import center_crop
from ..device import resolve_device
from ..errors import VgglabError
from ..models import VGG
from ..pretrained import is_pretrained, parse_pretrained
from ..run.checkpoint import CheckpointError, load_checkpoint, meta_of, model_from_checkpoint
from ..run.meta import RunMeta
from ..run.record import read_record

SYNSET = re.compile(r"n\d{8}")  # a WordNet synset id, ImageNet's class folder names


@dataclass
class Inference:
    model: VGG
    meta: RunMeta
    checkpoint: dict
    device: torch.device
    # the run's resolved speed settings where it was trained on this same machine; else NCHW and
    # the precision ``auto`` resolves to here (see load_inference), or the one asked for
    precision: str = "fp32"
    channels_last: bool = False
    precision_reason: str = "asked for"

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def image_size(self) -> int:
        """Model input side."""
        return self.meta.image_size

    @property
    def eval_resize(self) -> int:
        """Images are resized (shorter side) to this, then center-cropped."""
        return self.meta.eval_resize

    @property
    def norm(self) -> Normalization:
        return self.meta.normalization

    @property
    def in_chans(self) -> int:
        return self.model.config.in_chans

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Stored uint8 images (N, C, S, S) -> the model's input: center crop, then normalise, on its device."""
        return self.norm(center_crop(x, self.image_size), self.device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalised float on the model's device, uncropped (for TTA views)."""
        return self.norm(x, self.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float -> [0, 1] images, for display."""
        return self.norm.invert(x)

    @property
    def trained_with_flips(self) -> bool:
        """Whether training mirrored its images (a run's augment.flip; torchvision's ImageNet
        weights were trained with flips). Flip TTA shows a model without them images it never saw."""
        return self.augment is None or self.augment.flip

    @property
    def test_scale(self) -> int:
        """The paper's single test scale Q (sec. 4.1): S for a run trained at a fixed scale S,
        (S_min + S_max) / 2 for a scale-jittered one; otherwise the evaluation resize."""
        aug = self.augment
        return (aug.scale_min + aug.scale_max) // 2 if aug is not None and aug.crop == "scale" else self.eval_resize

    @property
    def eval_batch_size(self) -> int:
        """Images per evaluation batch: the run's ``data.eval_batch_size`` (what its memory was
        sized for), else 250 (torchvision's weights, a bare checkpoint)."""
        data = self._section("data", DataConfig)
        return int(data.eval_batch_size) if data is not None else 250

    @property
    def augment(self) -> AugmentConfig | None:
        return self._section("augment", AugmentConfig)

    def data_config(self, data_root: str | None = None) -> DataConfig:
        """The run's data section (``data_root`` replacing its root)."""
        data = self._section("data", DataConfig)
        if data is None:
            raise CheckpointError(
                f"{self.checkpoint.get('path', 'the checkpoint')} records no data section in its config; "
                "evaluate the run directory's best.pt or last.pt instead"
            )
        return data if data_root is None else data.model_copy(update={"root": data_root})

    def _section(self, name: str, cls):
        """The checkpoint's ``config[name]`` read as strictly as a recipe (a key, type or value the
        section does not take is one line naming the file), or None where it records none."""
        config = self.checkpoint.get("config")
        where = f"{self.checkpoint.get('path', 'the checkpoint')}: its recorded config"
        if config is None:
            return None
        if not isinstance(config, dict):
            raise CheckpointError(
                f"{where} is a {type(config).__name__}, not a mapping; the file was edited or damaged: "
                "use the run's best.pt or last.pt, or export the weights again"
            )
        if config.get(name) is None:
            return None
        try:
            return cls.read(config[name], where)
        except (VgglabError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{' '.join(str(exc).split())}; the file was edited or damaged: use the run's best.pt or "
                "last.pt, or export the weights again"
            ) from None

    def load_split(self, split: str, data_root: str | None = None, full_images: bool = False) -> tuple[AnySplit, Dataset | None]:
        """The run's dataset split, as the model saw its kind during training (the storage training
        chose; streamed when ``full_images`` is asked of an ImageFolder tree, for the paper's
        evaluation of whole images). A model without a dataset of its own (torchvision's weights)
        reads ``data_root/<split>/<class>/`` streamed, ``test`` falling back to ImageNet's ``val/``."""
        if self.checkpoint.get("config") is None:
            return self._folder_split(split, data_root), None
        cfg = self.data_config(data_root)
        if full_images and cfg.dataset == "imagefolder":
            cfg.storage = "stream"
        ds = load_dataset(cfg, self.augment, keep_val=self.recorded_val())
        chosen = ds.split(split)
        if chosen is None:
            raise VgglabError(f"this run has no {split} split (data.val_size was 0); use --split test")
        return self._in_model_numbering(chosen, ds.classes), ds

    def recorded_val(self) -> list[str] | None:
        """The validation files the run recorded beside its checkpoint (None: carve as configured)."""
        path = self.checkpoint.get("path")
        recorded = read_record(Path(path).parent) if path and Path(path).is_file() else None
        return recorded["val"] if recorded else None

    def _folder_split(self, split: str, data_root: str | None) -> AnySplit:
        if data_root is None:
            raise VgglabError(
                f"{self.checkpoint['path']} has no dataset of its own: pass --data-root FOLDER holding "
                f"{split}/<class>/<image> (ImageNet's layout: FOLDER/val/<synset id>/<image>)"
            )
        root = Path(data_root).expanduser()
        folder = root / split
        if split == "test" and not folder.is_dir() and (root / "val").is_dir():
            folder = root / "val"  # ImageNet's layout: val/ is what results are reported on
        if not folder.is_dir():
            raise VgglabError(
                f"no {split} split at {root}: expected {folder}/<class>/<image> (ImageNet's layout: {root}/val/<synset id>/<image>)"
            )
        chosen, classes = folder_split(folder, self.eval_resize, self.image_size)
        return self._in_model_numbering(chosen, classes)

    def _in_model_numbering(self, chosen: AnySplit, classes: list[str]) -> AnySplit:
        """Labels renumbered into the model's classes: by name (a tree of some of them), or, for a
        tree of ImageNet synset folders (n01440764, ...), by the index order of the sorted ids, as
        torchvision's categories are numbered."""
        if classes == self.classes:
            return chosen
        unknown = [c for c in classes if c not in self.classes]
        if unknown and all(SYNSET.fullmatch(c) for c in classes):
            if len(classes) != len(self.classes):
                raise VgglabError(
                    f"{len(classes)} synset folders: synset ids map to the model's {len(self.classes)} categories by the "
                    f"index order of the sorted ids, which needs all {len(self.classes)} folders (ImageNet's full val/ tree)"
                )
            return chosen
        if unknown:
            raise VgglabError(
                f"the dataset has classes the model does not know ({', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}); check --data-root"
            )
        # a subset of the model's classes, e.g. some ImageNet categories: labels in the model's numbering
        index = torch.tensor([self.classes.index(c) for c in classes])
        return dataclasses.replace(chosen, y=index[chosen.y])


INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def load_inference(
    path: str | Path,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    precision: str = "auto",
    cache_dir: str | None = None,
) -> Inference:
    """A run directory (its best.pt, else last.pt), a checkpoint file or torchvision weights
    (``torchvision:vgg16_bn[:WEIGHTS]``) -> ready-to-use model. ``precision``: ``auto`` is the
    run's own choice on the machine it trained on, elsewhere (and for pretrained weights) bf16
    where it is native and a forward probe does not measure it slower, else fp32
    (:func:`~vgglab.speed.resolve_inference_precision`); or fp32, bf16, fp16 (CUDA) as given."""
    if precision not in INFERENCE_PRECISIONS:
        raise VgglabError(f"unknown precision {precision!r}; valid: {', '.join(INFERENCE_PRECISIONS)}")
    device = resolve_device(device)
    if precision == "fp16" and device.type != "cuda":
        raise VgglabError("precision fp16 needs CUDA; use bf16 or fp32 on a CPU")
    if is_pretrained(path):
        model = parse_pretrained(path).model().to(device).eval()
        inf = Inference(model, model.meta, {"path": str(path), "config": None, "epoch": None}, device)
        return _with_precision(inf, precision, cache_dir)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, use_ema=use_ema).to(device).eval()
    recorded = recorded_speed(ckpt, device)
    channels_last = bool(recorded and recorded[1])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inf = Inference(model, meta_of(ckpt), ckpt, device, channels_last=channels_last)
    if precision == "auto" and recorded:
        inf.precision, inf.precision_reason = recorded[0], "the run's own choice on this machine"
        return inf
    return _with_precision(inf, precision, cache_dir)


def _with_precision(inf: Inference, precision: str, cache_dir: str | None) -> Inference:
    if precision != "auto":
        inf.precision, inf.precision_reason = precision, "asked for"
        return inf
    choice = speed.resolve_inference_precision(inf.model, inf.device, cache_dir=cache_dir)
    inf.precision, inf.precision_reason = choice.precision, choice.precision_reason
    return inf


def recorded_speed(ckpt: dict, device: torch.device) -> tuple[str, bool] | None:
    """The precision and memory layout training resolved to, when this is the machine (and kind of
    device) it ran on; None elsewhere."""
    rec = ckpt.get("speed")
    if not rec or not isinstance(rec, dict) or rec.get("device") != device.type:
        return None
    choice = speed.SpeedChoice.read(rec, "the checkpoint's speed record")
    if not machine.same_machine(choice.machine, machine.machine_info()):
        return None
    return choice.precision, choice.channels_last
