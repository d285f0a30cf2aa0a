"""The options several ``vgglab`` commands share, each declared once: what it takes, its default and help."""

from __future__ import annotations

import argparse

from ..data.dataset import SPLITS
from ..evaluate.inference import INFERENCE_PRECISIONS

OPTIONS: dict[str, dict] = {
    "--set": {
        "action": "append",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "override a config value, e.g. --set optim.lr=0.05 (repeatable; keys: the config reference, `vgglab schema`)",
    },
    "--device": {"default": "auto", "help": "auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:1 or mps"},
    "--precision": {
        "default": "auto",
        "choices": INFERENCE_PRECISIONS,
        "help": "auto: the run's own on the machine it trained on, else bf16 where native and measured faster, else fp32",
    },
    "--data-root": {
        "help": "where the dataset is now, if it moved since training; for torchvision:NAME, a folder holding "
        "SPLIT/<class>/ (ImageNet: val/<synset id>/)"
    },
    "--json": {"action": "store_true", "help": "JSON instead of text"},
    "--topk": {"type": int, "default": 5, "help": "how many of the likeliest classes"},
    "--split": {"default": "test", "choices": SPLITS, "help": "which split of the run's dataset"},
    "checkpoint": {"help": "a run directory (its best.pt, else last.pt), a .pt or model.safetensors file, or torchvision:NAME"},
}


def add(parser: argparse.ArgumentParser, *names: str, **changes: dict) -> None:
    """Add the shared options ``names`` to ``parser``; ``changes`` (by name, dashes as underscores)
    adjust one for this command, e.g. ``json={"help": "one JSON object per file"}``."""
    for name in names:
        parser.add_argument(name, **{**OPTIONS[name], **changes.get(name.lstrip("-").replace("-", "_"), {})})
