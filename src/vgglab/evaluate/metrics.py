"""Metrics of a split's predicted probabilities: top-k, per class, confusion, calibration."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from ..data.dataset import AnySplit
from ..data.stream import StreamSplit, full_image_batches, uint8_batches
from ..data.views import MULTICROP_GRID, SCALE_MODES
from ..device import autocast
from ..progress import Progress
from .inference import Inference
from .tta import default_scales, dense_head, scale_probs, tta_probs


@torch.inference_mode()
def predict_split(
    inf: Inference,
    split: AnySplit,
    tta: str = "none",
    *,
    batch_size: int = 250,
    shift: int = 1,
    scales: list[int] | None = None,
    grid: int = MULTICROP_GRID,
    what: str = "evaluating",
) -> torch.Tensor:
    """Probabilities (N, classes) for every image of a split (cached, or streamed by the loader's
    workers). The paper's scale modes see a streamed split's whole images (rescaled to each scale
    by the workers, batched by original size, ``batch_size`` images' worth of pixels at the input
    side per batch); a cached split's stored squares otherwise. Progress is shown as ``what``."""
    dense = dense_head(inf.model) if tta in ("dense", "dense+multicrop") and inf.model.config.head.type != "linear" else None
    fmt = torch.channels_last if inf.channels_last else torch.contiguous_format
    label = what if tta == "none" else f"{what} (tta {tta})"
    with Progress(len(split), label) as progress:
        if tta in SCALE_MODES and isinstance(split, StreamSplit):
            scales = scales or default_scales(tta, inf.test_scale, inf.image_size)
            out = torch.empty(len(split), len(inf.classes))
            for rows, batches in full_image_batches(split, scales, batch_size * inf.image_size**2):
                scaled = {q: inf.normalize(b).contiguous(memory_format=fmt) for q, b in zip(scales, batches, strict=True)}
                with autocast(inf.device, inf.precision):
                    out[rows] = scale_probs(inf.model, scaled, tta, inf.image_size, grid=grid, dense=dense).float().cpu()
                progress.advance(len(rows))
            return out
        chunks: list[torch.Tensor] = []
        for images in uint8_batches(split, batch_size):
            x = inf.normalize(images).contiguous(memory_format=fmt)
            with autocast(inf.device, inf.precision):  # as the run was trained on this machine (see load_inference)
                probs = tta_probs(inf.model, x, tta, inf.image_size, shift=shift, scales=scales, grid=grid, dense=dense)
            chunks.append(probs.float())
            progress.advance(len(images))
    return torch.cat(chunks).cpu()  # one copy back, after the last batch


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.float().mean().item() * abs(correct[inside].mean().item() - conf[inside].mean().item())
    return ece


MAX_TABLE_CLASSES = 100  # beyond this, per-class tables and the confusion matrix keep the classes that occur


def compute_metrics(probs: torch.Tensor, labels: torch.Tensor, classes: list[str], topk: int = 5) -> dict:
    """Everything ``eval.json`` holds except ``split`` and ``tta``; accuracies as fractions."""
    n, k_classes = probs.shape
    labels = labels.long()
    # the cross-entropy of the (averaged) probabilities; clamped only where float32's softmax underflowed
    # to 0 (a logit gap beyond ~87): a clamp at 1e-12 capped each confidently wrong image's loss at 27.6
    loss = -probs.clamp_min(torch.finfo(probs.dtype).tiny).log().gather(1, labels[:, None]).mean().item()
    ranked = probs.argsort(1, descending=True)
    hits = ranked == labels[:, None]
    rates = {f"top{k}": hits[:, :k].any(1).float().mean().item() for k in range(1, min(topk, k_classes) + 1)}
    result: dict[str, object] = {"n": n, "loss": loss, **rates}
    for k in (1, 5):  # the error rates papers report (the VGG paper's tables: top-1 / top-5 error)
        if f"top{k}" in rates:
            result[f"top{k}_error"] = 1.0 - rates[f"top{k}"]
    pred = ranked[:, 0].numpy()
    y = labels.numpy()
    shown = list(range(k_classes))
    if k_classes > MAX_TABLE_CLASSES:  # e.g. ImageNet's 1,000 on a folder of a few of them: the classes that occur
        shown = sorted(set(y.tolist()) | set(pred.tolist()))
    names = [classes[i] for i in shown]
    cm = confusion_matrix(y, pred, labels=shown)
    support = cm.sum(1)
    result["ece"] = expected_calibration_error(probs, labels)
    result["per_class"] = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(names)}
    result["report"] = classification_report(y, pred, labels=shown, target_names=names, output_dict=True, zero_division=0)
    result["confusion_matrix"] = cm.tolist()
    result["confusion_classes"] = names
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:5]
    result["most_confused"] = [
        {"true": names[i], "predicted": names[j], "count": int(off[i, j])}
        for i, j in (np.unravel_index(o, off.shape) for o in order)
        if off[i, j] > 0
    ]
    return result


def format_metrics(m: dict) -> str:
    """A printable table: summary, per class (accuracy, precision, recall, F1, support), confusions."""
    tops = "  ".join(f"top-{k[3:]} {100 * m[k]:.2f}%" for k in m if k.startswith("top") and k[3:].isdigit())
    errors = " / ".join(f"{100 * m[f'top{k}_error']:.2f}" for k in (1, 5) if f"top{k}_error" in m)
    errors = f"  error (top-1{' / top-5' if 'top5_error' in m else ''}) {errors}%" if errors else ""
    scales = f" at {','.join(map(str, m['scales']))}" if m.get("scales") else ""
    precision = f", {m['precision']}" if m.get("precision") else ""
    lines = [
        f"{m.get('split', '')} split, tta {m.get('tta', 'none')}{scales}{precision}: n {m['n']}  loss {m['loss']:.4f}  {tops}{errors}  "
        f"ECE {m['ece']:.4f}",
        "",
    ]
    if m.get("precision_reason"):
        lines[-1:] = [f"precision {m['precision']}: {m['precision_reason']}", ""]
    if m.get("note"):
        lines[-1:] = [f"note: {m['note']}", ""]
    width = max(12, *(len(c) for c in m["per_class"]))
    lines.append(f"{'class':<{width}} {'acc':>7} {'prec':>7} {'recall':>7} {'f1':>7} {'support':>8}")
    for c, acc in m["per_class"].items():
        r = m["report"][c]
        acc_s = "-" if acc is None else f"{100 * acc:.2f}"
        lines.append(
            f"{c:<{width}} {acc_s:>7} {100 * r['precision']:>7.2f} {100 * r['recall']:>7.2f} {100 * r['f1-score']:>7.2f} {int(r['support']):>8}"
        )
    for avg in ("macro avg", "weighted avg"):
        r = m["report"][avg]
        lines.append(
            f"{avg:<{width}} {'':>7} {100 * r['precision']:>7.2f} {100 * r['recall']:>7.2f} {100 * r['f1-score']:>7.2f} {int(r['support']):>8}"
        )
    if m["most_confused"]:
        lines.append("")
        lines.append(
            "most confused (true -> predicted): "
            + ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in m["most_confused"])
        )
    return "\n".join(lines)
