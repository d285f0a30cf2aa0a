"""Dataclasses built from plain mappings that refuse unknown keys, naming the nearest valid one."""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from .errors import VgglabError


class ConfigError(VgglabError, ValueError):
    """A setting that cannot be used; the message names the key and what is allowed."""


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def strict_init(cls, data: Any, where: str, error=ConfigError):
    """Build dataclass ``cls`` from a mapping, refusing keys it does not define.

    ``Cls(**d)`` alone raises a TypeError naming the key but not where it was or what is
    allowed; this says both, so a typo such as ``in_ckjhannels`` cannot pass unnoticed.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    valid = [f.name for f in fields(cls) if f.init]
    for key in data:
        if key not in valid:
            raise error(
                f"{where}: unknown key {key!r}{_suggest(str(key), valid)}; "
                f"valid keys: {', '.join(valid)}"
            )
    return cls(**data)


def check_choice(section: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{key}: {value!r} is not one of {', '.join(map(str, allowed))}{_suggest(str(value), allowed)}")
