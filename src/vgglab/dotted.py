"""Dotted keys (``optim.lr``) over nested mappings, in one place: the flat view a config is compared,
tracked and recorded in, and setting one key the way ``--set optim.lr=0.05`` does."""

from __future__ import annotations

from .strict import ConfigError


def flatten(d: dict, prefix: str = "", whole: tuple[str, ...] = ()) -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Lists, scalars, empty mappings and the mappings under a key
    in ``whole`` (e.g. ``model.options``, compared as one value) are leaves."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in whole:
            out.update(flatten(v, key + ".", whole))
        else:
            out[key] = v
    return out


def differences(a: dict, b: dict, whole: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between ``a`` and ``b`` (present in one only counts), sorted;
    keys starting with one of ``skip`` left out."""
    fa, fb = flatten(a, whole=whole), flatten(b, whole=whole)
    return sorted(k for k in set(fa) | set(fb) if not k.startswith(skip) and fa.get(k) != fb.get(k))


def assign(d: dict, dotted: str, value) -> None:
    """``d[a][b][c] = value`` for ``a.b.c``, making the mappings on the way; a value in the way is one line."""
    parts = dotted.split(".")
    node = d
    for p in parts[:-1]:
        if not isinstance(node.setdefault(p, {}), dict):
            raise ConfigError(f"--set {dotted}: {p!r} is a value, not a section")
        node = node[p]
    node[parts[-1]] = value
