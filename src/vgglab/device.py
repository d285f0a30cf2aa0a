"""Which torch device a setting means: the one place ``auto`` is resolved."""

from __future__ import annotations

import contextlib

import torch

from .strict import ConfigError


def mps_available() -> bool:
    """Apple silicon's GPU (Metal Performance Shaders), where this torch build has it and macOS provides it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``: CUDA when present, else Apple's MPS when present, else the CPU; ``cpu``, ``cuda``,
    ``cuda:1``, ``mps``...: that device, refused with a one-line error when this machine has none."""
    if isinstance(name, torch.device):
        dev = name
    elif name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r}: CUDA is not available on this machine; use device: auto or cpu")
    if dev.type == "mps" and not mps_available():
        raise ConfigError(
            f"device {str(name)!r}: Apple's MPS is not available here (a Mac with Apple silicon and macOS 12.3+); use auto or cpu"
        )
    return dev


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision setting (fp32: none; bf16; fp16) on ``device``: used by
    training and by every evaluation, so both compute alike."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
