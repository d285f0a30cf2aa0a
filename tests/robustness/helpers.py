"""What the robustness tests share: a small ImageFolder tree, a recipe for it, the CLI as a user runs it."""

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vgglab.cli import main

from ..conftest import TINY

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path, per_class: int = 10, side: int = 20) -> Path:
    """A small ImageFolder tree of noise PNGs: train/ and test/ with two classes (darker bees)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 3)):
        for k, c in enumerate(("ant", "bee")):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side + i % 5, 3), dtype=np.uint8) // (k + 1)
                Image.fromarray(pixels).save(d / f"{i:03d}.png")
    return root


def folder_config(root: Path, **data) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["data"] = {"dataset": "imagefolder", "root": str(root), "batch_size": 4, "val_size": 2, "image_size": 32, **data}
    cfg["train"]["epochs"] = 1
    return cfg


def cli(args, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for p in run.iterdir():
        if p.is_file():
            (to / p.name).write_bytes(p.read_bytes())
    return to


def default_signals() -> None:
    """In a child about to run vgglab: SIGINT, SIGTERM and SIGHUP as a terminal leaves them. A suite started
    in the background (``nohup python -m pytest &``, some CI runners) has SIGINT ignored, and a child
    inherits that: vgglab then rightly leaves it alone, and a test sending it would test nothing."""
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_DFL)


def vgglab_process(args, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    """``python -m vgglab ARGS`` in a process group of its own, the stopping signals at their defaults."""
    return subprocess.Popen(
        [sys.executable, "-m", "vgglab", *map(str, args)],
        cwd=cwd,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})},
        preexec_fn=default_signals,
        **kw,
    )
