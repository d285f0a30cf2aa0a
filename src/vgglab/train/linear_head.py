"""The probe's head: a multinomial logistic regression per regularisation strength, chosen on the
validation split, scored, and folded into the network's class layer.

Descriptors are standardised before the fit (L-BFGS converges on 4096 unscaled ReLU outputs slowly);
the standardising is folded into the class layer's weights and bias, so the network computes exactly
what was fitted."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

from ..models import VGG


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
            warnings.simplefilter(
                "ignore", ConvergenceWarning
            )  # the grid's strongest Cs may stop at max_iter; scored as they are
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
    return {"weight": full_w / std, "bias": full_b - (full_w / std) @ mean}


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
