"""Plots (matplotlib): curves, confusion matrix, image grids, t-SNE. Each writes a PNG when given
a path (the CLI, headless Agg) and returns the figure when not (notebooks show it inline)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless everywhere but a notebook, whose inline backend shows figures
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import VgglabError  # noqa: E402
from ..files import atomic_write  # noqa: E402


def shown(text: str) -> str:
    """``text`` as a font can draw it: a folder name's bytes that are not UTF-8 (which Python holds
    as surrogates, and FreeType refuses) become U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace") if any("\udc80" <= ch <= "\udcff" for ch in text) else text


def _save(fig, path: str | Path | None):
    """Write ``fig`` as a PNG at ``path`` and return the path; with no path return the figure
    (shown inline in a notebook). Either way pyplot lets go of it."""
    plt.close(fig)
    for text in fig.findobj(matplotlib.text.Text):  # class names from folders named in another encoding
        if text.get_text() != shown(text.get_text()):
            text.set_text(shown(text.get_text()))
    if path is None:
        return fig
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    return path


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> an array imshow takes (grayscale as 2-D)."""
    a = img.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def plot_curves(metrics_csv: str | Path, path: str | Path | None = None):
    """Loss, top-1 (train vs val) and learning rate (log scale) per epoch."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise VgglabError(f"{metrics_csv} has no epochs yet: plot it once the run has finished an epoch")
    ep = [int(r["epoch"]) for r in rows]

    def col(name):
        return [float(r[name]) if r[name] not in ("", None) else np.nan for r in rows]

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(ep, col("train_loss"), "o-", label="train")
    ax[0].plot(ep, col("val_loss"), "o-", label="validation")
    ax[0].set(title="loss", xlabel="epoch")
    ax[1].plot(ep, [100 * v for v in col("train_top1")], "o-", label="train")
    ax[1].plot(ep, [100 * v for v in col("val_top1")], "o-", label="validation")
    ax[1].set(title="top-1 accuracy (%)", xlabel="epoch")
    ax[2].plot(ep, col("lr"), "o-", color="tab:green")
    ax[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for a in ax[:2]:
        a.legend()
    for a in ax:
        a.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(cm, classes: list[str], path: str | Path | None = None):
    """Counts and row-normalised (recall) heatmaps, true class by row."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(6, 0.45 * n + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, data, title, fmt in [(axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")]:
        im = ax.imshow(data, cmap="Blues")
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels([shown(c) for c in classes], rotation=90)
        ax.set_yticklabels([shown(c) for c in classes])
        if n <= 20:
            thresh = data.max() / 2
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        format(data[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if data[i, j] > thresh else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_image_grid(
    images: torch.Tensor, titles: list[str], path: str | Path | None = None, cols: int = 8, colors=None, suptitle=None
):
    """Images (N, C, H, W) in [0, 1] with a title each."""
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_hwc(images[i]), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
            ax.set_title(titles[i], fontsize=7, color=(colors[i] if colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def plot_predictions(
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    classes: list[str],
    path: str | Path | None = None,
    per_kind: int = 16,
):
    """Correct (green) and wrong (red) examples with true / predicted label and confidence."""
    conf, pred = probs.max(1)
    right = torch.nonzero(pred == labels).flatten()[:per_kind]
    wrong = torch.nonzero(pred != labels).flatten()[:per_kind]
    idx = torch.cat([right, wrong])
    titles = [f"true {classes[labels[i]]}\npred {classes[pred[i]]} {100 * conf[i]:.0f}%" for i in idx]
    colors = ["green"] * len(right) + ["red"] * len(wrong)
    return plot_image_grid(
        images[idx], titles, path, colors=colors, suptitle=f"{len(right)} correct (green), {len(wrong)} wrong (red)"
    )


def write_eval_pictures(metrics: dict, inf, data, probs: torch.Tensor, out: Path, per_kind: int = 16) -> None:
    """``vgglab eval``'s pictures in ``out``: the confusion matrix, and the first ``per_kind``
    correct and wrong test images (as the model saw them, centre-cropped) with their predictions.
    Only the images shown are decoded, whatever the split's size."""
    plot_confusion(metrics["confusion_matrix"], metrics["confusion_classes"], Path(out) / "confusion.png")
    pred = probs.argmax(1)
    idx = torch.cat([torch.nonzero(pred == data.y).flatten()[:per_kind], torch.nonzero(pred != data.y).flatten()[:per_kind]])
    shown = inf.denormalize(inf.prepare(data.images(idx))).cpu()
    plot_predictions(shown, data.y[idx], probs[idx], inf.classes, Path(out) / "predictions.png", per_kind=per_kind)


def plot_tsne(embeddings: torch.Tensor, labels: torch.Tensor, classes: list[str], path: str | Path | None = None, seed: int = 0):
    """2-D t-SNE (scikit-learn) of penultimate embeddings, coloured by true class."""
    from sklearn.manifold import TSNE

    x = embeddings.float().numpy()
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, c in enumerate(classes):
        m = labels.numpy() == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=8, color=cmap(k % cmap.N), label=c)
    ax.set(title=f"t-SNE of penultimate embeddings ({len(x)} images)", xticks=[], yticks=[])
    if len(classes) <= 20:
        ax.legend(markerscale=2, fontsize=8, loc="best")
    return _save(fig, path)
