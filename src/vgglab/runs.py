"""``vgglab.load_run``: a finished (or running) training run as an object to poke at, with figures
returned rather than written, for notebooks. The CLI writes PNGs with the same plot functions."""

from __future__ import annotations

import csv
import json
from functools import cached_property
from pathlib import Path

import torch

from .errors import VgglabError
from .evaluate.checkpoint_eval import evaluate_checkpoint
from .evaluate.inference import Inference, load_inference
from .evaluate.load import load_model
from .evaluate.metrics import predict_split
from .models import VGG
from .train.config import Config, load_config
from .viz.inspect import grad_cam, plot_filters, plot_grad_cam
from .viz.plots import plot_confusion, plot_curves, plot_predictions
from .viz.report import build_report


class TrainedRun:
    """A run directory: ``config`` (the resolved Config), ``metrics`` (one dict per epoch),
    ``results`` (results.json), ``model`` (loaded on first use), and figures and evaluations."""

    def __init__(self, run_dir: str | Path, device: str = "auto"):
        self.dir = Path(run_dir)
        if not (self.dir / "config.yaml").is_file():
            raise VgglabError(f"{self.dir} is not a vgglab run directory (no config.yaml); pass the folder `vgglab train` wrote")
        self.device = device
        self.config: Config = load_config(self.dir / "config.yaml")
        self.last_eval: dict | None = None

    def __repr__(self) -> str:
        top1 = self.results.get("test_top1")
        shown = f", test top-1 {100 * top1:.2f} %" if top1 is not None else ""
        return f"TrainedRun({str(self.dir)!r}: {self.config.name}, {len(self.metrics)}/{self.config.train.epochs} epochs{shown})"

    @property
    def metrics(self) -> list[dict]:
        """metrics.csv as numbers (None where a value is empty, e.g. val_* without validation);
        ``changed`` stays text (the settings a resume changed from that epoch on)."""
        path = self.dir / "metrics.csv"
        if not path.exists():
            return []

        def value(k, v):
            if v == "" or v is None:
                return None
            return int(v) if k == "epoch" else v if k == "changed" else float(v)

        with open(path, newline="") as f:
            return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]

    @property
    def results(self) -> dict:
        path = self.dir / "results.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def model(self) -> VGG:
        """The selected model (best on validation, else the last), with ``meta`` and ``preprocess``."""
        return load_model(self.dir, self.device)

    @cached_property
    def inference(self) -> Inference:
        return load_inference(self.dir, self.device)

    def evaluate(self, tta: str = "none", topk: int = 5, split: str = "test", data_root: str | None = None) -> dict:
        """Metrics of the selected model (as ``vgglab eval``; eval.json goes to RUN_DIR/eval)."""
        self.last_eval = evaluate_checkpoint(
            self.dir, split=split, tta=tta, topk=topk, data_root=data_root, device=self.device, pictures=None
        )
        return self.last_eval

    def plot_curves(self):
        """Loss, top-1 and learning rate per epoch (a matplotlib figure)."""
        return plot_curves(self.dir / "metrics.csv")

    def plot_confusion(self, metrics: dict | None = None):
        """The confusion matrix of ``metrics`` (default: the last :meth:`evaluate`, run if none)."""
        m = metrics or self.last_eval or self.evaluate()
        return plot_confusion(m["confusion_matrix"], m["confusion_classes"])

    def images(self, n: int = 8, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` stored images (uint8) of a split and their labels."""
        data, _ = self.inference.load_split(split)
        return data.images(slice(0, n)), data.y[:n]

    def plot_predictions(self, n: int = 16, split: str = "test"):
        """Correct and wrong predictions among the first ``n`` images of a split."""
        inf = self.inference
        data, _ = inf.load_split(split)
        probs = predict_split(inf, data.subset(torch.arange(min(n, len(data)))))
        return plot_predictions(
            inf.denormalize(inf.prepare(data.images(slice(0, n)))).cpu(), data.y[:n], probs, inf.classes, per_kind=n
        )

    def gradcam(self, image):
        """Grad-CAM of the predicted class for one image: a PIL image or a uint8 tensor (C, H, W)."""
        model = self.model
        x = model.preprocess(image)
        cams, target = grad_cam(model, x)
        prob = model(x).float().softmax(1)[0, target[0]].item()
        title = f"{model.meta.classes[target[0]]} {100 * prob:.0f}%"
        return plot_grad_cam(model.meta.normalization.invert(x).cpu(), cams.cpu(), [title])

    def plot_filters(self, max_filters: int = 64):
        """The first layer's kernels as tiles (``vgglab inspect`` draws the same)."""
        return plot_filters(self.model, max_filters=max_filters)

    def report(self, out: str | Path | None = None, data_root: str | None = None) -> Path:
        """The self-contained HTML page (``vgglab report``); returns its path."""
        return build_report(self.dir, out, data_root=data_root, device=self.device)


def load_run(run_dir: str | Path, device: str = "auto") -> TrainedRun:
    """``vgglab.load_run("runs/demo")``: the run as an object (see :class:`TrainedRun`)."""
    return TrainedRun(run_dir, device)
