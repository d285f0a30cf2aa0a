"""The recipes shipped with vgglab: the repository's ``configs/`` folder, installed as package data
(``vgglab/recipes`` is that folder, one source), so ``vgglab train --config NAME`` works from any
folder of an installed wheel, and ``vgglab recipes`` lists them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from .errors import VgglabError
from .strict import _suggest

SCHEMA_FILE = "vgglab-config.schema.json"  # beside the recipes: each names it in its first line, for editors
SCHEMA_LINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"


def recipes_dir() -> Path:
    return Path(str(resources.files("vgglab").joinpath("recipes")))


def recipe_files() -> list[Path]:
    """Every shipped recipe, sorted by name; none (a damaged install) is one line saying how to repair it."""
    found = sorted(recipes_dir().glob("*.yaml"))
    if not found:
        raise VgglabError(
            f"this vgglab install is incomplete: its recipes are missing from {recipes_dir()}; "
            "reinstall it: pip install --force-reinstall vgglab (from a checkout: pip install -e .)"
        )
    return found


def find_recipe(name: str) -> Path | None:
    """The shipped recipe called ``name`` (``fast_cifar10_muon_9ep`` or ``fast_cifar10_muon_9ep.yaml``),
    or None. A file at that path is the caller's to prefer: a path wins over a name."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" in stem or "\\" in stem or not stem:
        return None
    path = recipes_dir() / f"{stem}.yaml"
    return path if path.is_file() else None


def unknown_recipe(name: str) -> str:
    """One line for a --config that is neither a file nor a shipped recipe."""
    names = [p.stem for p in recipe_files()]
    return (
        f"config file not found: {name}, and no shipped recipe has that name{_suggest(name.removesuffix('.yaml'), names)}; "
        f"`vgglab recipes` lists the {len(names)} shipped ones"
    )


def describe(path: Path) -> dict:
    """One recipe: its model, data, epochs, its summary (the first comment line: one sentence on what it
    trains) and the rest of its opening comment (how, and what it reproduces)."""
    cfg = yaml.safe_load(path.read_text()) or {}
    about = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# yaml-language-server:"):  # for editors, not about the recipe
            about.append(line.lstrip("#").strip())
    model = cfg.get("model") or {}
    return {
        "name": path.stem,
        "model": model.get("name") or ("a custom spec" if model.get("spec") else "vgg16_cifar"),
        "data": (cfg.get("data") or {}).get("dataset", "cifar10"),
        # a probe fits a head on cached descriptors: it trains no epoch of the network
        "epochs": 0 if (cfg.get("probe") or {}).get("enabled") else (cfg.get("train") or {}).get("epochs", 10),
        "summary": about[0] if about else "",
        "about": " ".join(a for a in about[1:] if a),
    }
