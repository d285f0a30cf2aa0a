"""The config error, the nearest valid spelling of a misspelt name, and the plain values a config is kept in
(a dataclass or section built from a mapping is checked in :func:`vgglab.declare.checked`)."""

from __future__ import annotations

import difflib

from .errors import VgglabError


class ConfigError(VgglabError, ValueError):
    """A setting that cannot be used; the message names the key and what is allowed."""


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def plain(value):
    """Tuples -> lists, recursively: the plain values YAML/JSON files hold, so a config reloads to
    itself and configs compare equal however they were read."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
