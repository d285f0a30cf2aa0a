"""How much memory a setting would take, checked before anything is allocated: a width of 1e6 or
an image side of 100,000 ends in one line with the estimate, not in a failed 10^17-byte malloc."""

from __future__ import annotations

import psutil
import torch

from .errors import VgglabError


class TooLarge(VgglabError):
    """A setting whose estimated memory exceeds what the machine has; the message says how much."""


def human(n: float) -> str:
    """Bytes as B / kB / MB / GB / TB (powers of 1000, as disk and RAM sizes are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def available_bytes(device: torch.device | None = None) -> int:
    """Free memory where tensors for ``device`` live: the GPU's free memory, else the host's available RAM."""
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def check_fits(what: str, needed: float, fix: str, device: torch.device | None = None, share: float = 1.0) -> None:
    """Refuse ``what`` when its ``needed`` bytes exceed ``share`` of the memory available."""
    have = available_bytes(device)
    if needed > share * have:
        where = f"{device.type.upper()} memory" if device is not None and device.type == "cuda" else "memory"
        limit = "" if share == 1.0 else f"{share:.0%} of "
        raise TooLarge(f"{what} needs about {human(needed)}, more than {limit}the {human(have)} of {where} available; {fix}")
