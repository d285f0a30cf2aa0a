"""Recipe text -> a plain mapping: YAML read safely (one line for every way a file can be wrong,
duplicate keys refused, depth and alias expansion bounded) and ``--set key=value`` overrides.
The typed sections built from the mapping are in :mod:`.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .dotted import assign
from .files import broken_link
from .strict import ConfigError, plain


def apply_overrides(d: dict, overrides: list[str] | dict | None) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a plain config dict."""
    d = plain(d or {})
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    for dotted, value in items:
        assign(d, dotted, value)
    return d


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.05")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key must be section.name, e.g. optim.lr=0.05")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw != "" else None  # noqa: S506
    except (yaml.YAMLError, ConfigError):
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply; give a plain value, list or mapping") from None
    check_structure(value, f"--set {key}")
    return key, value


MAX_DEPTH = 32  # a recipe nests section -> key -> list -> mapping at most a few levels
MAX_NODES = 100_000  # values in one document, counting each alias's expansion


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: YAML keeps
    the last silently, so a second ``train:`` block would drop the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise ConfigError(
                    f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last: merge them into one"
                )
            seen.setdefault(key, key_node.start_mark.line)
        return super().construct_mapping(node, deep)


def check_structure(data, where: str) -> None:
    """One line for a document no recipe can be: nested deeper than :data:`MAX_DEPTH`, an alias
    that refers to itself (a cycle), or more than :data:`MAX_NODES` values once aliases expand."""
    count = 0
    stack: list[tuple[object, tuple[int, ...]]] = [(data, ())]  # a node and the ids of the nodes it is inside
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES:,} values (aliases expanding?); a recipe has a few dozen")
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in path:
            raise ConfigError(
                f"{where}: an alias refers to the mapping or list that contains it (a cycle); replace it with the values"
            )
        if len(path) >= MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels; a recipe has sections of key: value settings")
        inner = (*path, id(node))
        stack.extend((c, inner) for c in (node.values() if isinstance(node, dict) else node))


def read_yaml(path: str | Path) -> dict:
    """A recipe file as a mapping; anything else (missing, empty, not UTF-8, not YAML, duplicate
    keys, a list or scalar at the top, too deep, self-referencing) is one ConfigError line."""
    path = Path(path)
    if broken_link(path):
        raise ConfigError(str(broken_link(path)))
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file: pass a YAML recipe such as configs/demo_digits.yaml")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (shipped recipes are in the repository's configs/ folder)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); a recipe is a YAML text file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; a recipe has sections of key: value settings") from None
    if data is None:
        raise ConfigError(
            f"{path} is empty: a recipe needs at least one section (data, model, optim, train, ...); see configs/ for examples"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (data:, model:, train:, ...), got a {type(data).__name__}"
        )
    check_structure(data, str(path))
    return data
