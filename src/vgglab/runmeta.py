"""What travels with a model's weights, in checkpoints and in model.safetensors alike."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .data.normalization import Normalization
from .errors import VgglabError
from .strict import plain

META_KEYS = ("classes", "image_size", "eval_resize", "model_config", "normalization")
META_VERSION = 1


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
    def from_mapping(cls, d: dict, where: str) -> "RunMeta":
        """From a checkpoint (or decoded safetensors metadata); ``where`` names it in errors."""
        missing = [k for k in META_KEYS if k not in d]
        if missing:
            raise VgglabError(f"{where} lacks {', '.join(missing)}: it was not written by vgglab (use a run directory, best.pt/last.pt or its model.safetensors)")
        version = int(d.get("version", META_VERSION))
        if version > META_VERSION:
            raise VgglabError(f"{where} was written by a newer vgglab (format {version}, this one reads {META_VERSION}); upgrade vgglab")
        return cls(tuple(d["classes"]), int(d["image_size"]), int(d.get("eval_resize") or d["image_size"]), d["model_config"],
                   Normalization.from_dict(d["normalization"]), version)

    def to_dict(self) -> dict:
        """The checkpoint's entries (plain values, as ``torch.load(weights_only=True)`` reads them)."""
        return {"classes": list(self.classes), "image_size": self.image_size, "eval_resize": self.eval_resize,
                "model_config": self.model_config, "normalization": self.normalization.to_dict(), "version": self.version}

    def to_safetensors(self) -> dict[str, str]:
        """safetensors metadata: every entry as JSON text."""
        return {k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_safetensors(cls, raw: dict[str, str], where: str) -> "RunMeta":
        return cls.from_mapping({k: json.loads(v) for k, v in raw.items() if k in (*META_KEYS, "version")}, where)
