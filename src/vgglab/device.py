"""Which torch device a setting means: the one place ``auto`` is resolved."""

from __future__ import annotations

import contextlib

import torch

from .strict import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cpu``, ``cuda``, ``cuda:1``...: that device,
    refused with a one-line error when it is CUDA and this machine has none."""
    if isinstance(name, torch.device):
        dev = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r}: CUDA is not available on this machine; use device: auto or cpu")
    return dev


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision setting (fp32: none; bf16; fp16) on ``device``: used by
    training and by every evaluation, so both compute alike."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
