"""``vgglab report``: one self-contained HTML page of a run (images embedded, no scripts)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import torch

from ..device import autocast
from ..errors import VgglabError
from ..evaluate.checkpoint_eval import evaluate_checkpoint
from ..evaluate.inference import load_inference
from ..evaluate.tta import TTA_MODES
from ..files import check_output_dir, write_text
from ..models import summarize
from ..models.layers import default_layers
from ..progress import Progress
from ..run.checkpoint import resolve_checkpoint
from ..run.files import check_output_file
from ..train.tracking import log_artifact_to_run
from .inspect import activations, grad_cam, plot_activations, plot_filters, plot_grad_cam
from .plots import plot_curves, plot_tsne, write_eval_pictures

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #446; } h2 { margin-top: 1.6em; color: #335; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
pre { background: #f6f6f8; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.kpi { display: inline-block; margin-right: 2em; font-size: 1.3em; } .kpi b { color: #225; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    data_root: str | None = None,
    tsne_samples: int = 1000,
    device: str = "auto",
    tta: str = "auto",
    precision: str = "auto",
) -> Path:
    """The HTML page of a run. ``tta``: the test-time augmentation reported beside the plain
    metrics; ``auto`` means flip for a model trained with flips and none for one trained without
    (mirrored digits are other digits), where an explicitly asked TTA is marked as such."""
    if tta != "auto" and tta not in TTA_MODES:
        raise VgglabError(f"unknown --tta {tta!r}; valid: auto, {', '.join(TTA_MODES)}")
    run_dir = Path(run_dir)
    ckpt_path = resolve_checkpoint(run_dir)
    out = check_output_file(Path(out) if out else run_dir / "report.html", [run_dir, ckpt_path], example="report.html")
    files = check_output_dir(out.parent / (out.stem + "_files"), "the report's pictures folder")
    inf = load_inference(ckpt_path, device, precision=precision)
    model = inf.model
    summary = summarize(model)

    m_none = evaluate_checkpoint(
        ckpt_path,
        split="test",
        tta="none",
        out=files,
        data_root=data_root,
        device=device,
        precision=inf.precision,
        pictures=write_eval_pictures,
    )
    if tta == "auto":
        tta = "flip" if inf.trained_with_flips else "none"
    m_tta = (
        None
        if tta == "none"
        else evaluate_checkpoint(
            ckpt_path, split="test", tta=tta, out=files, data_root=data_root, device=device, precision=inf.precision
        )
    )
    tta_label = f"{tta} (model trained without flips)" if m_tta is not None and m_tta.get("note") else tta
    test, _ = inf.load_split("test", data_root)

    pictures = {}
    if (run_dir / "metrics.csv").is_file():
        pictures["curves"] = plot_curves(run_dir / "metrics.csv", files / "curves.png")
    x = inf.prepare(test.images(slice(0, 8)))
    acts = activations(model, x[:1], default_layers(model))
    pictures["activations"] = plot_activations(acts, files / "activations.png")
    pictures["filters"] = plot_filters(model, files / "filters.png")
    cams, targets = grad_cam(model, x)
    titles = [f"{inf.classes[t]}" for t in targets]
    pictures["gradcam"] = plot_grad_cam(inf.denormalize(x).cpu(), cams, titles, files / "gradcam.png")
    n = min(tsne_samples, len(test))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(test), generator=g)[:n]
    with torch.inference_mode(), autocast(inf.device, inf.precision), Progress(n, "report: t-SNE embeddings") as progress:
        chunks = []
        for i in range(0, n, 250):
            batch = test.images(idx[i : i + 250])
            chunks.append(model.forward_head(model.forward_features(inf.prepare(batch)), pre_logits=True).float().cpu())
            progress.advance(len(batch))
        emb = torch.cat(chunks)
    pictures["tsne"] = plot_tsne(emb, test.y[idx], inf.classes, files / "tsne.png")

    ck = inf.checkpoint
    cfg_text = (
        (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else json.dumps(ck.get("config"), indent=1)
    )
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    tops = [k for k in m_none if k.startswith("top") and k[3:].isdigit()]
    per_class = [
        [
            c,
            "-" if a is None else f"{100 * a:.2f}",
            *(f"{100 * m_none['report'][c][k]:.2f}" for k in ("precision", "recall", "f1-score")),
            int(m_none["report"][c]["support"]),
        ]
        for c, a in m_none["per_class"].items()
    ]
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vgglab report: {html.escape(run_dir.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>vgglab report: {html.escape(run_dir.name)}</h1>",
        f"<p>checkpoint <code>{html.escape(str(ckpt_path))}</code>, epoch {ck.get('epoch')}, "
        f"{len(inf.classes)} classes, input {inf.in_chans}x{inf.image_size}x{inf.image_size}; computed in {inf.precision} "
        f"({html.escape(inf.precision_reason)})</p>",
        "<h2>Final metrics (test split)</h2>",
        f"<div class='kpi'>top-1 <b>{100 * m_none['top1']:.2f}%</b></div>",
        *([f"<div class='kpi'>top-1 with {html.escape(tta_label)} TTA <b>{100 * m_tta['top1']:.2f}%</b></div>"] if m_tta else []),
        f"<div class='kpi'>ECE <b>{m_none['ece']:.4f}</b></div>",
        _table(
            ["TTA", "loss", *[f"top-{k[3:]}" for k in tops], "ECE"],
            [
                [label, f"{m['loss']:.4f}", *(f"{100 * m[k]:.2f}%" for k in tops), f"{m['ece']:.4f}"]
                for label, m in (("none", m_none), (tta_label, m_tta))
                if m is not None
            ],
        ),
    ]
    if m_tta is not None and m_tta.get("note"):
        parts.append(f"<p><i>note: {html.escape(m_tta['note'])}</i></p>")
    if results.get("val_top1") is not None:
        parts.append(
            f"<p>validation top-1 of the selected checkpoint: {100 * results['val_top1']:.2f}% (best epoch {results.get('best_epoch')})</p>"
        )
    parts += [
        "<h2>Model</h2>",
        f"<p>{html.escape(summary['model'])}: {summary['total_params']:,} parameters ({summary['trainable_params']:,} trainable), "
        f"{summary['macs'] / 1e6:,.1f} M multiply-accumulates per image, {summary['size_mb']:.1f} MB of fp32 weights</p>",
        _table(["block", "parameters"], [[k, f"{v:,}"] for k, v in summary["blocks"].items()]),
    ]
    if "curves" in pictures:
        parts += ["<h2>Training curves</h2>", _img(pictures["curves"], "training curves")]
    parts += [
        "<h2>Per class</h2>",
        _table(["class", "accuracy %", "precision %", "recall %", "F1 %", "support"], per_class),
        "<h2>Most confused pairs</h2>",
        _table(["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in m_none["most_confused"]]),
        "<h2>Confusion matrix</h2>",
        _img(files / "confusion.png", "confusion matrix"),
        "<h2>Example predictions</h2>",
        _img(files / "predictions.png", "example predictions"),
        "<h2>Inside the network</h2>",
        "<h3>Activation maps (first test image, first 16 channels of each block's output)</h3>",
        _img(pictures["activations"], "activation maps"),
        "<h3>First-layer filters</h3>",
        _img(pictures["filters"], "first-layer filters"),
        "<h3>Grad-CAM</h3>",
        _img(pictures["gradcam"], "Grad-CAM"),
        "<h3>t-SNE of penultimate embeddings</h3>",
        _img(pictures["tsne"], "t-SNE"),
        "<h2>Config</h2>",
        f"<pre>{html.escape(cfg_text)}</pre>",
        "</body></html>",
    ]
    write_text(out, "\n".join(parts))  # eval.json and eval-flip.json are already in the files folder
    if run_dir.is_dir():  # a run tracked in MLflow gets its report there too (self-contained: one file)
        log_artifact_to_run(run_dir, out)
    return out
