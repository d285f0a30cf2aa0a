"""Checkpoints that carry their own metadata, written atomically and read without unpickling code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from ..errors import VgglabError
from ..files import atomic_write, broken_link, tensor_bytes, torch_save
from ..models import VGG, create_model_from_spec
from ..yamlio import read_yaml
from .meta import RunMeta

FORMAT = "vgglab-checkpoint"


class CheckpointError(VgglabError):
    pass


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temporary file, fsync and rename: a kill at any moment keeps the old file."""
    atomic_write(path, lambda tmp: torch_save({"format": FORMAT, "version": 1, **state}, tmp), needed=tensor_bytes(state))


def load_checkpoint(path: str | Path) -> dict:
    """Read a vgglab checkpoint (a run directory means its best.pt, else last.pt).

    ``weights_only=True``: a file crafted to run code when unpickled is refused.
    """
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        return checkpoint_of_safetensors(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path}: {first} (is it a vgglab checkpoint from a trusted source, written completely?)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a vgglab checkpoint (torchvision weights: use --init-from / load_torchvision_weights)"
        )
    ckpt["path"] = str(path)
    return ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if broken_link(path):
        raise CheckpointError(str(broken_link(path)))
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"no best.pt or last.pt in run directory {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def model_from_checkpoint(ckpt: dict, use_ema: bool = True) -> VGG:
    """Rebuild the model from the checkpoint's own config and load its weights (EMA if saved)."""
    where = ckpt.get("path", "the checkpoint")
    try:
        model = create_model_from_spec(ckpt["model_config"])
    except (VgglabError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: its model config is damaged ({exc})") from None
    state = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        own = model.state_dict()
        state = state if isinstance(state, dict) else {}
        differ = sorted(set(own) ^ set(state)) + sorted(
            k for k in set(own) & set(state) if getattr(state[k], "shape", None) != own[k].shape
        )
        shown = ", ".join(differ[:4]) + (" ..." if len(differ) > 4 else "") if differ else str(exc).splitlines()[0]
        raise CheckpointError(
            f"{where}: its weights do not fit the model its metadata describes ({shown}); "
            "the file was changed after vgglab wrote it"
        ) from None
    return model


def save_safetensors(model: nn.Module, meta: RunMeta, path: str | Path, **extra) -> None:
    """Weights plus the :class:`RunMeta` (and ``extra`` entries, e.g. the epoch) as JSON metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {**meta.to_safetensors(), **{k: json.dumps(v) for k, v in extra.items()}}
    # serialised in memory, then written by Python: a full disk is an OSError (safetensors' own
    # writer raises SafetensorError with the errno in its text)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(save(tensors, metadata=metadata)), needed=tensor_bytes(tensors))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], RunMeta]:
    """The state dict and :class:`RunMeta` of a model.safetensors that vgglab wrote."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]} (is it a complete .safetensors file?)") from None
    return state, RunMeta.from_safetensors(raw, str(path))


def checkpoint_of_safetensors(path: Path) -> dict:
    """A model.safetensors that vgglab wrote, as the checkpoint mapping inference reads: its weights,
    RunMeta, epoch, and the run's config (stored in the file by current vgglab, else the config.yaml
    beside it; without either, evaluation asks for --data-root as for torchvision weights)."""
    state, meta = read_safetensors(path)
    with safe_open(str(path), "pt") as f:
        raw = f.metadata() or {}
    try:
        extra = {k: json.loads(raw[k]) for k in ("epoch", "config") if k in raw}
    except ValueError as exc:
        raise CheckpointError(f"{path}: its metadata is damaged (not JSON: {exc}); export model.safetensors again") from None
    if not isinstance(extra.get("config", {}), (dict, type(None))) or not isinstance(extra.get("epoch", 0), (int, type(None))):
        raise CheckpointError(
            f"{path}: its metadata is damaged (config must be a mapping, epoch a number); export model.safetensors again"
        )
    beside = path.parent / "config.yaml"
    if extra.get("config") is None and beside.is_file():
        extra["config"] = read_yaml(beside)
    return {"format": FORMAT, **meta.to_dict(), "model": state, "epoch": None, "config": None, **extra, "path": str(path)}


def meta_of(ckpt: dict) -> RunMeta:
    """The :class:`RunMeta` a checkpoint carries."""
    return RunMeta.from_mapping(ckpt, ckpt.get("path", "checkpoint"))
