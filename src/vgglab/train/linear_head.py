"""The probe's head: a multinomial logistic regression per regularisation strength, chosen on the
validation split (or, over cached augmented views, the class layer trained by the engine's optimiser
and schedule, one view per image per epoch), scored, and folded into the network's class layer.

Descriptors are standardised before the fit (L-BFGS converges on 4096 unscaled ReLU outputs slowly);
the standardising is folded into the class layer's weights and bias, so the network computes exactly
what was fitted."""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

from ..data.loader import epoch_generator
from ..models import VGG
from .config import Config
from .optim import Schedule, build_optimizer


def fit_head(x_train, y_train, x_val, y_val, grid: list[float], max_iter: int, classes: int) -> tuple[dict, list[dict]]:
    """A multinomial logistic regression per C of ``grid`` on standardised descriptors; the one with the best
    validation top-1 (ties: lower loss). Returns the head (weights on raw descriptors) and the grid's scores."""
    mean = x_train.mean(0)
    std = x_train.std(0) + 1e-6
    z = (x_train - mean) / std
    fits, scores = [], []
    for c in grid:
        lr = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            # the grid's weakest regularisations may stop at max_iter: scored as they are
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(z, y_train)
        head = _as_head(lr, mean, std, classes)
        entry = {"C": c, "train_top1": _top1(head, x_train, y_train)}
        if x_val is not None and y_val is not None:
            entry["val_top1"], entry["val_loss"] = _top1(head, x_val, y_val), _loss(head, x_val, y_val)
        fits.append(head)
        scores.append(entry)
    if x_val is None:
        best = len(grid) - 1
    else:
        best = max(range(len(grid)), key=lambda i: (scores[i]["val_top1"], -scores[i]["val_loss"]))
    return {**fits[best], "C": grid[best]}, scores


def _as_head(lr: LogisticRegression, mean: np.ndarray, std: np.ndarray, classes: int) -> dict:
    """scikit-learn's coefficients on standardised inputs -> (W, b) on raw descriptors, one row per class
    (a binary fit's single row w becomes -w/2, +w/2: the same softmax as its sigmoid)."""
    w, b = lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64)
    if w.shape[0] == 1 and classes == 2:
        w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    full_w, full_b = np.zeros((classes, w.shape[1])), np.full(classes, -1e4)  # a class absent from training is never predicted
    full_w[lr.classes_], full_b[lr.classes_] = w, b
    return on_raw_descriptors(full_w, full_b, mean, std)


def on_raw_descriptors(w: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
    """A head on standardised descriptors, (x - mean) / std, as the same head on raw ones."""
    return {"weight": w / std, "bias": b - (w / std) @ mean}


def _logits(head: dict, x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ head["weight"].T + head["bias"]


def _top1(head: dict, x, y) -> float:
    return float((_logits(head, x).argmax(1) == y).mean())


def _loss(head: dict, x, y) -> float:
    z = _logits(head, x)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def score(head: dict, features: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for name, x in features.items():
        out[f"{name}_top1"], out[f"{name}_loss"] = _top1(head, x, y[name]), _loss(head, x, y[name])
    out["test_n"] = len(y["test"])
    return out


def fold_into(model: VGG, head: dict) -> None:
    """Write the fitted head into the model's class layer. Stacked dense descriptors (one block per
    scale) fold as the sum of their blocks: the single-view model sees one descriptor for all scales."""
    layer = model.head.classifier
    assert isinstance(layer, nn.Linear)  # every head ends in one
    weight = head["weight"]
    if weight.shape[1] != layer.in_features:
        weight = weight.reshape(weight.shape[0], -1, layer.in_features).sum(1)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(torch.as_tensor(head["bias"], dtype=layer.bias.dtype))


def train_head(
    views: list[np.ndarray],
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    cfg: Config,
    classes: int,
    log=print,
) -> tuple[dict, list[dict]]:
    """The class layer trained by the engine's optimiser and schedule (``optim``, ``schedule``,
    ``train.epochs``, ``data.batch_size``, ``train.label_smoothing``) on cached descriptors: each epoch
    every training image is seen once, as one of its ``views`` (the center crop first, then the
    augmented ones: (N, D) each) drawn from (seed, epoch), so the same seed trains the same head. The
    epoch with the best validation top-1 is kept (the last without a validation split). Returns the
    head on raw descriptors and one metrics row per epoch."""
    stack = torch.from_numpy(np.stack(views)).float()  # (K + 1, N, D)
    mean, std = stack[0].mean(0), stack[0].std(0) + 1e-6
    stack = (stack - mean) / std
    y = torch.from_numpy(y_train).long()
    val = (
        (torch.from_numpy((x_val - mean.numpy()) / std.numpy()).float(), torch.from_numpy(y_val).long())
        if x_val is not None and y_val is not None
        else None
    )
    layer = _Head(stack.shape[-1], classes)
    batch, epochs = min(cfg.data.batch_size, len(y)), cfg.train.epochs
    steps = -(-len(y) // batch)
    optimizer = build_optimizer(layer, cfg.optim, batch)
    schedule = Schedule(optimizer, cfg.schedule, steps, epochs, "max", cfg.optim)
    best, best_state, rows = -1.0, None, []
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        g = epoch_generator(cfg.train.seed, epoch)
        order, pick = torch.randperm(len(y), generator=g), torch.randint(0, len(stack), (len(y),), generator=g)
        lr, total, correct = schedule.lr, 0.0, 0
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            logits = layer(stack[pick[idx], idx])
            loss = F.cross_entropy(logits, y[idx], label_smoothing=cfg.train.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step_batch()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        row = {"epoch": epoch, "train_loss": total / len(y), "train_top1": correct / len(y), "lr": lr}
        if val is not None:
            with torch.no_grad():
                vl = layer(val[0])
            row["val_loss"], row["val_top1"] = F.cross_entropy(vl, val[1]).item(), float((vl.argmax(1) == val[1]).float().mean())
        monitored = row.get("val_top1", -row["train_loss"])
        schedule.step_epoch(monitored)
        if val is None or monitored > best:
            best, best_state = monitored, {k: v.clone() for k, v in layer.state_dict().items()}
        row["seconds"] = time.perf_counter() - t
        row["images_per_s"] = len(y) / row["seconds"]
        rows.append(row)
        log(
            f"head epoch {epoch}/{epochs}  train loss {row['train_loss']:.4f} top-1 {100 * row['train_top1']:.2f}%"
            + (f"  val top-1 {100 * row['val_top1']:.2f}%" if val is not None else "")
            + f"  lr {lr:.3g}"
        )
    assert best_state is not None  # epochs >= 1
    w, b = best_state["classifier.weight"].double().numpy(), best_state["classifier.bias"].double().numpy()
    return on_raw_descriptors(w, b, mean.double().numpy(), std.double().numpy()), rows


class _Head(nn.Module):
    """The class layer alone, named as the optimiser's groups expect a parameter outside ``head.``."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.classifier = nn.Linear(dim, classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)
