"""The ``vgglab`` command line's parser: every command, its arguments and their help (shared options
are declared once, in :mod:`.options`)."""

from __future__ import annotations

import argparse
import platform
import sys

import torch
import torchvision

from .. import __version__
from ..data.config import DATASETS
from ..data.views import MULTICROP_GRID, TTA_MODES
from ..device import resolve_device
from ..export import FORMATS
from ..machine import auto_precision, machine_info
from ..models.spec import HEAD_TYPES
from ..train.sections import TRANSFER_MODES
from . import commands
from .options import add


def _scales(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected image sides separated by commas, e.g. 256,384,512; got {text!r}") from None


class _Version(argparse.Action):
    """``vgglab --version``: what a bug report needs (vgglab, torch, torchvision, Python, and the
    device and precision vgglab would use on this machine)."""

    def __call__(self, parser, namespace, values, option_string=None):
        device = resolve_device("auto")
        info = machine_info()
        precision, why = auto_precision(device, info)
        print(
            f"vgglab {__version__}\ntorch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"Python {platform.python_version()} ({sys.platform})\ndevice {device} ({why}), {info['cores']} cores, "
            f"{info['threads']} threads\nprecision auto -> {precision}"
        )
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``vgglab eval: error: ... (see --help)``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        """As argparse's, except that a failed write is not swallowed: ``--help`` onto a full disk is then
        one line (``vgglab.cli.main``), not silence with exit 0."""
        if message:
            file = file or sys.stderr
            file.write(message)
            file.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vgglab", description="Build, train, evaluate and look inside VGG networks.")
    parser.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        help="print vgglab's, torch's, torchvision's and Python's versions and the device and precision used here",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="list the shipped recipes (train one with vgglab train --config NAME)")
    add(p, "--json", json={"help": "one JSON list instead of lines"})

    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vgg16*'")

    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, memory and receptive field")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, help="input side in pixels (default: the model's own)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--head", choices=HEAD_TYPES)
    p.add_argument("--width", type=float, help="multiplier for every conv width")
    p.add_argument("--in-chans", type=int)
    add(p, "--json", json={"help": "one JSON object instead of a table"})

    p = sub.add_parser("train", help="train a model from a YAML recipe")
    p.add_argument("--config", help="a YAML recipe: a path, or a shipped recipe's name (vgglab recipes lists them)")
    add(p, "--set")
    p.add_argument("--out", help="run directory (default runs/<config name>-<timestamp>); must be new or empty")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    p.add_argument(
        "--init-from", metavar="PATH", help="initial weights: a vgglab run/checkpoint, .safetensors or torchvision .pth"
    )
    p.add_argument("--init-mode", choices=TRANSFER_MODES)

    p = sub.add_parser("demo", help="offline demo: train a small VGG on scikit-learn's digits (about a minute)")
    p.add_argument("--out", help="run directory (default runs/demo_digits-<timestamp>)")
    add(p, "--set")

    p = sub.add_parser("eval", help="metrics of a trained model on a split, with optional test-time augmentation")
    add(p, "checkpoint", "--split")
    p.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="none: the single center crop; dense, multicrop, dense+multicrop: the VGG paper's, on whole images",
    )
    p.add_argument(
        "--tta-shift", dest="shift", metavar="TTA_SHIFT", type=int, default=1, help="pixels, for flip-translate and flip-shift"
    )
    p.add_argument(
        "--scales",
        type=_scales,
        help="comma-separated shorter sides Q the whole image is rescaled to for "
        "dense/multicrop, e.g. 256,384,512 (default: the run's test scale)",
    )
    p.add_argument("--grid", type=int, default=MULTICROP_GRID, help="multicrop: crops per side per scale (the paper's: 5)")
    add(p, "--topk")
    p.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    add(p, "--data-root", "--device", "--precision")

    p = sub.add_parser("predict", help="classify image files (any size or mode)")
    add(p, "checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    add(p, "--topk", "--json", "--device", "--precision", json={"help": "one JSON object per file"})

    p = sub.add_parser("inspect", help="activation maps, filters and Grad-CAM for one image")
    add(p, "checkpoint")
    p.add_argument("--image", required=True)
    p.add_argument("--layers", help="comma-separated layer names (see `vgglab summary`); default: each block's output")
    p.add_argument("--out", default="inspect")
    add(p, "--device")

    p = sub.add_parser("data", help="look at a dataset: sizes, classes, statistics, sample grids")
    p.add_argument("--config", help="a training recipe; its data and augment sections are used")
    add(p, "--set")
    p.add_argument("--dataset", choices=DATASETS)
    add(p, "--data-root", data_root={"help": "where the dataset is (default: data/DATASET, or the recipe's data.root)"})
    p.add_argument("--out", help="folder for samples.png and samples_augmented.png")
    add(p, "--json")

    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")
    p.add_argument(
        "--tta",
        default="auto",
        choices=("auto", *TTA_MODES),
        help="TTA reported beside the plain metrics; auto: flip when the model trained with flips, else none",
    )
    add(p, "--data-root", "--device", "--precision")

    p = sub.add_parser("features", help="embeddings of a split as .npz (features, labels, classes)")
    add(p, "checkpoint", "--split")
    p.add_argument(
        "--layer",
        help="layer names, comma-separated (each spatially averaged; one array per layer when several); "
        "default: the penultimate embedding",
    )
    add(p, "--data-root")
    p.add_argument("--out", required=True, help="output .npz file")
    add(p, "--precision")

    p = sub.add_parser("speed", help="the speed probe's cached verdicts (precision, layout) on this machine")
    p.add_argument("--forget", action="store_true", help="remove them: the next run (and eval/predict) measures again")
    p.add_argument("--cache-dir", help="the cache folder runs use (data.cache_dir; default ~/.cache/vgglab or $VGGLAB_CACHE)")

    p = sub.add_parser("export", help="ONNX / torch.export (.pt2) / safetensors / legacy TorchScript, checked against PyTorch")
    add(p, "checkpoint")
    p.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        help="onnx: ONNX Runtime and other engines; pt2: torch.export's ExportedProgram with a dynamic batch "
        "(torch.export.load); safetensors: weights and metadata; torchscript: legacy, torch.jit is "
        "deprecated in favour of torch.export, kept for runtimes that only load TorchScript",
    )
    p.add_argument("--out", help="output file (default: next to the checkpoint)")
    add(p, "--data-root")

    p = sub.add_parser("schema", help="print the JSON Schema of a recipe (editors complete and check keys with it)")
    for name, p in sub.choices.items():  # each command runs commands.cmd_<name>
        p.set_defaults(func=getattr(commands, f"cmd_{name}"))
        p.add_argument(
            "-q", "--quiet", action="store_true", help="no progress bar or progress lines (also: log.progress: none in a recipe)"
        )
    return parser
