"""What travels with a model's weights, in checkpoints and in model.safetensors alike."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from ..data.normalization import Normalization
from ..errors import VgglabError
from ..strict import plain

META_KEYS = ("classes", "image_size", "eval_resize", "model_config", "normalization")
META_VERSION = 1
MAX_EVAL_RESIZE = 4 * 4096  # pixels: four times the largest data.image_size


@dataclass(frozen=True)
class RunMeta:
    """A trained model's class names, input side, the side images are resized to before the
    center crop, its model config (``VGGConfig.to_dict()``) and its input normalisation."""

    classes: tuple[str, ...]
    image_size: int
    eval_resize: int
    model_config: dict
    normalization: Normalization
    version: int = META_VERSION

    def __post_init__(self):
        # plain JSON values (tuples as lists), as the config reads back from any file
        object.__setattr__(self, "model_config", plain(self.model_config))
        object.__setattr__(self, "classes", tuple(self.classes))

    @classmethod
    def from_mapping(cls, d: dict, where: str) -> RunMeta:
        """From a checkpoint (or decoded safetensors metadata); ``where`` names it in errors."""
        missing = [k for k in META_KEYS if k not in d]
        if missing:
            raise VgglabError(
                f"{where} lacks {', '.join(missing)}: it was not written by vgglab (use a run directory, best.pt/last.pt or its model.safetensors)"
            )
        try:
            version = int(d.get("version", META_VERSION))
            if version > META_VERSION:
                raise VgglabError(
                    f"{where} was written by a newer vgglab (format {version}, this one reads {META_VERSION}); upgrade vgglab"
                )
            meta = cls(
                tuple(d["classes"]),
                int(d["image_size"]),
                int(d.get("eval_resize") or d["image_size"]),
                d["model_config"],
                Normalization.from_dict(d["normalization"]),
                version,
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise VgglabError(
                f"{where}: its metadata is damaged ({type(exc).__name__}: {exc}); use the run's best.pt/last.pt, "
                "or export model.safetensors again"
            ) from None
        problem = meta.problem()
        if problem:
            raise VgglabError(
                f"{where}: its metadata is damaged ({problem}); use the run's best.pt/last.pt, or export model.safetensors again"
            )
        return meta

    def problem(self) -> str | None:
        """What makes this metadata unusable for its own model, or None."""
        mc, norm = self.model_config, self.normalization
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            return "class names must be a non-empty list of names"
        if not isinstance(mc, dict):
            return "model_config is not a mapping"
        if mc.get("num_classes") != len(self.classes):
            return f"{len(self.classes)} class names for a model with {mc.get('num_classes')} outputs"
        if not 1 <= self.image_size <= self.eval_resize <= MAX_EVAL_RESIZE:
            return (
                f"image_size {self.image_size} and eval_resize {self.eval_resize} must satisfy "
                f"1 <= image_size <= eval_resize <= {MAX_EVAL_RESIZE}"
            )
        if norm.channels != mc.get("in_chans") or len(norm.std) != norm.channels:
            return f"normalisation for {norm.channels} channels, model for {mc.get('in_chans')}"
        if not all(math.isfinite(v) for v in (*norm.mean, *norm.std)) or not all(v > 0 for v in norm.std):
            return f"normalisation std {list(norm.std)} (each must be positive and finite)"
        return None

    def to_dict(self) -> dict:
        """The checkpoint's entries (plain values, as ``torch.load(weights_only=True)`` reads them)."""
        return plain(asdict(self))

    def to_safetensors(self) -> dict[str, str]:
        """safetensors metadata: every entry as JSON text."""
        return {k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_safetensors(cls, raw: dict[str, str], where: str) -> RunMeta:
        try:
            decoded = {k: json.loads(v) for k, v in raw.items() if k in (*META_KEYS, "version")}
        except ValueError as exc:
            raise VgglabError(f"{where}: its metadata is damaged (not JSON: {exc}); export model.safetensors again") from None
        return cls.from_mapping(decoded, where)
