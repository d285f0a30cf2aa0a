"""Initialising a model from other weights: a vgglab run/checkpoint, safetensors or torchvision.

Modes: ``exact`` (same architecture, every tensor), ``features`` (the conv part; the head starts
fresh), ``all-but-last`` (every tensor but the class layer: the pretrained fc6/fc7 are kept, as in
torchvision's fine-tuning tutorial and the paper's Appendix B), ``cross-geometry`` (conv part exactly; head tensors only where shapes agree, optionally
folding an ImageNet FC6 over its 7x7 taps for a target that sees a 1x1 map) and
``shallow-to-deep`` (Simonyan & Zisserman, sec. 3.1: a deeper configuration from a shallower one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import VgglabError
from ..models import VGG, create_model, key_mapping
from ..models.spec import VGGConfig
from ..models.torchvision_compat import torchvision_arch
from ..pretrained import is_pretrained, parse_pretrained
from ..run.checkpoint import load_checkpoint, read_safetensors
from .config import ConfigError, TrainConfig
from .sections import TRANSFER_MODES

_CONV_KEY = re.compile(r"^features\.block(\d+)\.(conv|bn)(\d+)\.(.+)$")


class TransferError(VgglabError):
    pass


@dataclass
class TransferReport:
    matched: list[tuple[str, tuple]] = field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    skipped: list[tuple[str, tuple, tuple | None]] = field(default_factory=list)  # source key, its shape, target's
    new: list[tuple[str, tuple]] = field(default_factory=list)  # target keys left at their fresh init

    def format(self) -> str:
        lines = [
            f"init: {len(self.matched)} tensors matched, {len(self.reshaped)} reshaped, "
            f"{len(self.skipped)} skipped, {len(self.new)} new"
        ]
        lines += [f"  matched  {k} {list(s)}" for k, s in self.matched]
        lines += [f"  reshaped {k} {list(a)} -> {list(b)}" for k, a, b in self.reshaped]
        lines += [f"  skipped  {k} {list(a)}" + (f" (target {list(b)})" if b else " (no such layer)") for k, a, b in self.skipped]
        lines += [f"  new      {k} {list(s)}" for k, s in self.new]
        return "\n".join(lines)

    def brief(self, full_list: str | Path | None = None, names: int = 8) -> str:
        """The summary line and, one line per kind, the tensors that did not transfer as they were
        (reshaped, skipped, new: at most ``names`` each, then how many more); where the full list is."""
        where = f"; every tensor is listed in {full_list}" if full_list else ""
        lines = [self.format().splitlines()[0].removeprefix("init: ") + where]
        for kind, keys in (
            ("reshaped", [k for k, *_ in self.reshaped]),
            ("skipped", [k for k, *_ in self.skipped]),
            ("new", [k for k, _ in self.new]),
        ):
            if keys:
                more = f" and {len(keys) - names} more" if len(keys) > names else ""
                lines.append(f"  {kind}: {', '.join(keys[:names])}{more}")
        return "\n".join(lines)


def _torchvision_config(sd: dict) -> VGGConfig:
    """The registered VGG whose torchvision layout this state_dict has."""
    convs = [k for k in sd if k.startswith("features.") and k.endswith(".weight") and sd[k].dim() == 4]
    bn = any(k.endswith("running_mean") for k in sd)
    name = torchvision_arch(len(convs), bn)
    if name is None:
        raise TransferError(f"the torchvision file has {len(convs)} conv layers; expected a VGG-11/13/16/19")
    classes = sd["classifier.6.weight"].shape[0] if "classifier.6.weight" in sd else 1000
    with torch.device("meta"):
        return create_model(name, num_classes=classes).config


def read_source(path: str | Path) -> tuple[dict[str, torch.Tensor], VGGConfig]:
    """State dict in vgglab's layer names, and the source model's config. ``path`` may also name
    torchvision weights (``torchvision:vgg16_bn[:WEIGHTS]``, see vgglab.pretrained)."""
    if is_pretrained(path):
        return _from_torchvision(parse_pretrained(path).state_dict(), str(path))
    path = Path(path)
    if path.is_dir() or path.suffix in (".pt",):
        ckpt = load_checkpoint(path)
        return ckpt["model"], VGGConfig.from_dict(ckpt["model_config"])
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise TransferError(f"init source not found: {path}")
        sd, meta = read_safetensors(path)
        return sd, VGGConfig.from_dict(meta.model_config)
    if not path.is_file():
        raise TransferError(f"init source not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TransferError(
            f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} (files are loaded with weights_only=True)"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not any(k.startswith("features.0.") for k in sd):
        raise TransferError(f"{path} is neither a vgglab checkpoint nor a torchvision VGG state_dict")
    return _from_torchvision(sd, str(path))


def _from_torchvision(sd: dict[str, torch.Tensor], where: str) -> tuple[dict[str, torch.Tensor], VGGConfig]:
    """A torchvision VGG state dict in vgglab's layer names, and the config it fits."""
    cfg = _torchvision_config(sd)
    with torch.device("meta"):
        inverse = {tv: ours for ours, tv in key_mapping(VGG(cfg)).items()}
    unknown = sorted(set(sd) - set(inverse))
    if unknown:
        raise TransferError(f"{where}: keys not in a torchvision {cfg.name}: {', '.join(unknown[:6])}")
    return {inverse[k]: v for k, v in sd.items()}, cfg


def _conv_position(key: str) -> tuple[int, int, str, str] | None:
    m = _CONV_KEY.match(key)
    return (int(m[1]), int(m[3]), m[2], m[4]) if m else None


def _first_convs(cfg: VGGConfig, n: int) -> set[tuple[int, int]]:
    """(block, position) of the first ``n`` convs, in forward order."""
    out = []
    for b, block in enumerate(cfg.blocks, start=1):
        for i in range(1, len(block.convs) + 1):
            out.append((b, i))
    return set(out[:n])


def transfer(
    model: VGG, source: dict[str, torch.Tensor], source_cfg: VGGConfig, mode: str, match: str = "paper", fold_fc6: bool = False
) -> TransferReport:
    """Copy what ``mode`` allows from ``source`` into ``model``; return what happened to each tensor."""
    if mode not in TRANSFER_MODES:
        raise TransferError(f"unknown init mode {mode!r}; valid: {', '.join(TRANSFER_MODES)}")
    target = model.state_dict()
    report = TransferReport()
    plan: dict[str, torch.Tensor] = {}

    def take(src_key, dst_key, tensor):
        plan[dst_key] = tensor
        report.matched.append((dst_key, tuple(tensor.shape)))

    if mode == "exact":
        problems = [
            k for k in set(target) | set(source) if k not in source or k not in target or source[k].shape != target[k].shape
        ]
        if problems:
            raise TransferError(
                "exact init needs the same architecture; these differ: "
                + ", ".join(
                    f"{k} {list(source[k].shape) if k in source else 'missing'} vs {list(target[k].shape) if k in target else 'missing'}"
                    for k in sorted(problems)[:8]
                )
            )
        for k in target:
            take(k, k, source[k])
    elif mode == "shallow-to-deep":
        allowed = _first_convs(source_cfg, 4) if match == "paper" else None
        for k, v in source.items():
            pos = _conv_position(k)
            if pos is not None:
                if allowed is not None and (pos[0], pos[1]) not in allowed:
                    report.skipped.append((k, tuple(v.shape), tuple(target[k].shape) if k in target else None))
                    continue
            elif not k.startswith("head."):
                report.skipped.append((k, tuple(v.shape), None))
                continue
            if k in target and target[k].shape == v.shape:
                take(k, k, v)
            else:
                report.skipped.append((k, tuple(v.shape), tuple(target[k].shape) if k in target else None))
    elif mode == "all-but-last":
        for k, v in source.items():
            if k.startswith("head.classifier."):
                report.skipped.append((k, tuple(v.shape), tuple(target[k].shape) if k in target else None))
            elif k in target and target[k].shape == v.shape:
                take(k, k, v)
            else:
                raise TransferError(
                    f"all-but-last init needs the same layers up to the class layer; {k} is {list(v.shape)} in the source "
                    f"but {list(target[k].shape) if k in target else 'absent'} in {model.config.name} "
                    "(init_mode: features keeps the conv part only)"
                )
    else:  # features, cross-geometry
        for k, v in source.items():
            if k.startswith("features."):
                if k not in target or target[k].shape != v.shape:
                    raise TransferError(
                        f"{mode} init needs the same conv configuration; {k} is {list(v.shape)} in the source "
                        f"but {list(target[k].shape) if k in target else 'absent'} in {model.config.name}"
                    )
                take(k, k, v)
            elif mode == "cross-geometry" and k in target and target[k].shape == v.shape:
                take(k, k, v)
            elif (
                mode == "cross-geometry"
                and fold_fc6
                and k in ("head.fc1.weight", "head.fc1.bias")
                and k in target
                and source_cfg.head.type == "imagenet"
            ):
                t = v
                if k.endswith("weight"):
                    c = model.num_features
                    if (
                        target[k].shape[1] != c
                        or v.shape[1] != c * source_cfg.head.pool_size**2
                        or v.shape[0] != target[k].shape[0]
                    ):
                        report.skipped.append((k, tuple(v.shape), tuple(target[k].shape)))
                        continue
                    # adaptive pooling of a 1x1 map copies it into all 49 cells: FC6 then sums its taps
                    t = v.view(v.shape[0], c, -1).sum(-1)
                elif v.shape != target[k].shape:
                    report.skipped.append((k, tuple(v.shape), tuple(target[k].shape)))
                    continue
                plan[k] = t
                report.reshaped.append((k, tuple(v.shape), tuple(t.shape)))
            else:
                report.skipped.append((k, tuple(v.shape), tuple(target[k].shape) if k in target else None))
    if not plan:
        raise TransferError(
            f"{mode} init matched nothing between {source_cfg.name} and {model.config.name}; check the source and mode"
        )
    report.new = [(k, tuple(v.shape)) for k, v in target.items() if k not in plan]
    with torch.no_grad():
        for k, v in plan.items():
            target[k].copy_(v.to(target[k].dtype))
    return report


def init_from(model: VGG, path: str | Path, mode: str, match: str = "paper", fold_fc6: bool = False) -> TransferReport:
    """Initialise ``model`` from the weights at ``path`` as ``mode`` allows (see :func:`transfer`)."""
    source, cfg = read_source(path)
    return transfer(model, source, cfg, mode, match, fold_fc6)


def init_as_configured(model: VGG, train: TrainConfig) -> TransferReport:
    """``train.init_from`` with its ``init_mode``, ``init_match`` and ``init_fold_fc6``."""
    if train.init_from is None:
        raise ConfigError("train.init_from is not set: there are no weights to start from")
    return init_from(model, train.init_from, train.init_mode, train.init_match, train.init_fold_fc6)
