"""``vgglab eval``: one call from a checkpoint to eval.json, a printed table and pictures."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.config import MAX_IMAGE_SIZE
from ..errors import VgglabError
from ..files import check_output_dir, write_text
from ..viz.plots import plot_confusion, plot_predictions
from .inference import load_inference
from .metrics import compute_metrics, predict_split
from .tta import TTA_MODES


FLIP_NOTE = "this model was trained without horizontal flips (augment.flip: false): the TTA's mirrored views are images it never saw"


def check_tta_sizes(inf, shift: int, scales: list[int] | None) -> None:
    """A TTA shift between 1 pixel and half the model's input, and dense scales the model can take
    (its smallest input up to data.image_size's bound), checked before any image is read."""
    s = inf.image_size
    if not isinstance(shift, int) or not 1 <= shift <= s // 2:
        raise VgglabError(f"--tta-shift must be a whole number of pixels from 1 to {s // 2} (half the model's {s}-pixel input), got {shift}")
    lowest = inf.model.config.min_input_size
    for v in scales or []:
        if not isinstance(v, int) or not lowest <= v <= MAX_IMAGE_SIZE:
            raise VgglabError(f"--scales: each scale is an image side from {lowest} to {MAX_IMAGE_SIZE} pixels, got {v}")


def default_out(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return (p if p.is_dir() else p.parent) / "eval"


def evaluate_checkpoint(checkpoint, *, split: str = "test", tta: str = "none", topk: int = 5, out=None,
                        data_root: str | None = None, shift: int = 1, scales: list[int] | None = None,
                        device: str = "auto", pictures: bool = True) -> dict:
    """Evaluate a run or checkpoint on a split; writes ``eval.json`` (+ PNGs) into ``out``
    (default :func:`default_out`) and returns the same metrics."""
    if tta not in TTA_MODES:
        raise VgglabError(f"unknown --tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    if not 1 <= topk <= 5:
        raise VgglabError(f"--topk must be between 1 and 5, got {topk}")
    out = check_output_dir(Path(out) if out else default_out(checkpoint))
    inf = load_inference(checkpoint, device)
    check_tta_sizes(inf, shift, scales)
    data, _ = inf.load_split(split, data_root)
    probs = predict_split(inf, data, tta, shift=shift, scales=scales)
    metrics = {"split": split, "tta": tta, **compute_metrics(probs, data.y, inf.classes, topk)}
    if tta != "none" and not inf.trained_with_flips:
        metrics["note"] = FLIP_NOTE
    name = "eval.json" if tta == "none" else f"eval-{tta}.json"
    write_text(out / name, json.dumps(metrics, indent=1))
    if pictures:
        plot_confusion(metrics["confusion_matrix"], metrics["confusion_classes"], out / "confusion.png")
        sample = slice(0, min(len(data), 2000))
        shown = inf.denormalize(inf.prepare(data.images(sample))).cpu()
        plot_predictions(shown, data.y[sample], probs[sample], inf.classes, out / "predictions.png")
    return metrics

