"""``vgglab eval``: one call from a checkpoint to eval.json and its metrics (the pictures come from
the layer above: ``pictures=vgglab.viz.plots.write_eval_pictures``, as the CLI passes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..data.config import MAX_IMAGE_SIZE
from ..data.stream import StreamSplit
from ..data.views import MULTICROP_GRID
from ..errors import VgglabError
from ..files import check_output_dir, write_text
from .inference import load_inference
from .metrics import compute_metrics, predict_split
from .tta import SCALE_MODES, TTA_MODES, default_scales

FLIP_NOTE = (
    "this model was trained without horizontal flips (augment.flip: false): the TTA's mirrored views are images it never saw"
)


def check_tta_sizes(inf, shift: int, scales: list[int] | None, tta: str = "none", grid: int = MULTICROP_GRID) -> None:
    """A TTA shift between 1 pixel and half the model's input, dense scales the model can take
    (its smallest input up to data.image_size's bound), multi-crop scales that hold a crop, and a
    grid of 1 to 10 crops per side, checked before any image is read."""
    s = inf.image_size
    if not isinstance(shift, int) or not 1 <= shift <= s // 2:
        raise VgglabError(
            f"--tta-shift must be a whole number of pixels from 1 to {s // 2} (half the model's {s}-pixel input), got {shift}"
        )
    lowest = s if "multicrop" in tta else inf.model.config.min_input_size
    for v in scales or []:
        if not isinstance(v, int) or not lowest <= v <= MAX_IMAGE_SIZE:
            what = f"multi-crop takes {s}-pixel crops" if "multicrop" in tta else "each scale is an image side"
            raise VgglabError(f"--scales: {what}, so each scale is from {lowest} to {MAX_IMAGE_SIZE} pixels, got {v}")
    if not isinstance(grid, int) or not 1 <= grid <= 10:
        raise VgglabError(f"--grid must be 1 to 10 crops per side (the paper's multi-crop: 5), got {grid}")


def default_out(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return (p if p.is_dir() else p.parent) / "eval"


def evaluate_checkpoint(
    checkpoint,
    *,
    split: str = "test",
    tta: str = "none",
    topk: int = 5,
    out=None,
    data_root: str | None = None,
    shift: int = 1,
    scales: list[int] | None = None,
    grid: int = MULTICROP_GRID,
    device: str = "auto",
    pictures: Callable | None = None,
    precision: str = "auto",
) -> dict:
    """Evaluate a run or checkpoint (or ``torchvision:NAME``) on a split; writes ``eval.json`` into
    ``out`` (default :func:`default_out`) and returns the same metrics. The paper's scale modes
    (dense, multicrop, dense+multicrop) read an ImageFolder split's whole images. ``pictures``:
    called as ``pictures(metrics, inf, data, probs, out)`` to draw them (e.g.
    :func:`vgglab.viz.plots.write_eval_pictures`); None draws none."""
    if tta not in TTA_MODES:
        raise VgglabError(f"unknown --tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    if not 1 <= topk <= 5:
        raise VgglabError(f"--topk must be between 1 and 5, got {topk}")
    out = check_output_dir(Path(out) if out else default_out(checkpoint))
    inf = load_inference(checkpoint, device, precision=precision)
    check_tta_sizes(inf, shift, scales, tta, grid)
    data, _ = inf.load_split(split, data_root, full_images=tta in SCALE_MODES)
    if tta in SCALE_MODES and isinstance(data, StreamSplit):  # whole images: the paper's default Q (sec. 4.1)
        scales = scales or default_scales(tta, inf.test_scale, inf.image_size)
    probs = predict_split(
        inf, data, tta, batch_size=inf.eval_batch_size, shift=shift, scales=scales, grid=grid, what=f"eval {split}"
    )
    metrics = {
        "split": split,
        "tta": tta,
        "precision": inf.precision,
        "precision_reason": inf.precision_reason,
        **({"scales": scales} if scales else {}),
        **({"grid": grid} if "multicrop" in tta else {}),
        **compute_metrics(probs, data.y, inf.classes, topk),
    }
    if tta != "none" and not inf.trained_with_flips:
        metrics["note"] = FLIP_NOTE
    name = "eval.json" if tta == "none" else f"eval-{tta}.json"
    write_text(out / name, json.dumps(metrics, indent=1))
    if pictures:
        pictures(metrics, inf, data, probs, out)
    return metrics
