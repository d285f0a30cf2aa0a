"""Dataclasses built from plain mappings that refuse unknown keys, naming the nearest valid one."""

from __future__ import annotations

import difflib
import math
import types
import typing
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
            raise error(f"{where}: unknown key {key!r}{_suggest(str(key), valid)}; valid keys: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    data = {k: _typed(v, hints.get(k, Any), f"{where}.{k}" if where else k, error) for k, v in data.items()}
    return cls(**data)


def typed_values(cls, data: dict, where: str, error=ConfigError, skip=()) -> dict:
    """``data`` with each key that is a field of dataclass ``cls`` checked against its annotation
    (numbers as numbers, ...), for mappings that are not built with :func:`strict_init`."""
    hints = typing.get_type_hints(cls)
    return {k: v if k in skip or k not in hints else _typed(v, hints[k], f"{where}{k}", error) for k, v in data.items()}


_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    tuple: "a list",
    dict: "a mapping",
}


def _typed(value, hint, where: str, error):
    """``value`` if it fits the annotation ``hint`` (a YAML string such as "1e-3", which YAML 1.1
    reads as text, is taken as the number it spells); else one line naming the key and the type."""
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    kinds = [typing.get_origin(o) or o for o in options if o is not type(None)]
    if Any in kinds or not all(k in _NAMES for k in kinds):
        return value  # an annotation this check does not know: the dataclass decides
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # YAML's .nan / .inf pass every "must be positive" comparison
                raise error(f"{where}: expected a finite number, got {value!r}")
            return value
        if kind is str and isinstance(value, str):
            return value
        if kind in (list, tuple) and isinstance(value, (list, tuple)):
            return value
        if kind is dict and isinstance(value, dict):
            return value
    if float in kinds and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    wanted = " or ".join(dict.fromkeys(_NAMES[k] for k in kinds))
    if type(None) in options:
        wanted += " or null"
    raise error(f"{where}: expected {wanted}, got {value!r} ({type(value).__name__})")


def plain(value):
    """Tuples -> lists, recursively: the plain values YAML/JSON files hold, so a config reloads to
    itself and configs compare equal however they were read."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
