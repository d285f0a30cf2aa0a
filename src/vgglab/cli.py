"""The ``vgglab`` command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings

import torch
import torchvision

from . import __version__, progress, shipped, signals
from .data.config import DATASETS
from .data.dataset import SPLITS
from .data.views import MULTICROP_GRID, TTA_MODES
from .device import resolve_device
from .errors import VgglabError
from .evaluate import expand_inputs, format_metrics, load_inference, predict_files
from .evaluate.checkpoint_eval import default_out, evaluate_checkpoint
from .evaluate.inference import INFERENCE_PRECISIONS
from .export import FORMATS, export_model, extract_features, features_out, save_features
from .machine import auto_precision, machine_info, machine_label
from .models import create_model, format_summary, get_entry, list_models, param_count, summarize
from .models.spec import HEAD_TYPES
from .speed import ProbeCache
from .train import fit
from .train.config import TRANSFER_MODES, load_config
from .viz.data import describe_data, format_data
from .viz.inspect import inspect_checkpoint
from .viz.plots import write_eval_pictures
from .viz.report import build_report
from .workers import quiet_shutdown_races


def _cmd_models(args) -> int:
    names = list_models(args.pattern)
    print(f"{'model':<16}{'params':>14}  {'input':>5}  {'classes':>7}  {'head':<8}  description")
    for name in names:
        entry = get_entry(name)
        cfg = entry.config
        params = param_count(cfg)
        print(f"{name:<16}{params:>14,}  {cfg.input_size:>5}  {cfg.num_classes:>7}  {cfg.head.type:<8}  {entry.description}")
    return 0


def _cmd_summary(args) -> int:
    options = {
        "num_classes": args.num_classes,
        "head": args.head,
        "width": args.width,
        "in_chans": args.in_chans,
        "input_size": args.input_size,
    }
    model = create_model(args.model, **{k: v for k, v in options.items() if v is not None})
    result = summarize(model)
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


def _cmd_train(args) -> int:
    if args.config is None and args.resume is None:
        raise VgglabError("train needs --config FILE (see configs/) or --resume RUN_DIR")
    overrides = list(args.set)
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    if args.init_mode:
        overrides.append(f"train.init_mode={args.init_mode}")
    fit(args.config, overrides, out=args.out, resume=args.resume)
    return 0


def _cmd_demo(args) -> int:
    fit(shipped.find_recipe("demo_digits"), args.set, out=args.out)  # ships in the package: works from any folder
    return 0


def _scales(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected image sides separated by commas, e.g. 256,384,512; got {text!r}") from None


def _cmd_eval(args) -> int:
    scales = args.scales
    out = args.out or default_out(args.checkpoint)
    m = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        tta=args.tta,
        topk=args.topk,
        out=out,
        data_root=args.data_root,
        shift=args.tta_shift,
        scales=scales,
        grid=args.grid,
        device=args.device,
        precision=args.precision,
        pictures=write_eval_pictures,
    )
    print(format_metrics(m))
    print(f"wrote {out}")
    return 0


def _cmd_predict(args) -> int:
    inf = load_inference(args.checkpoint, args.device, precision=args.precision)
    results = predict_files(inf, expand_inputs(args.inputs), args.topk)
    print(f"precision {inf.precision}: {inf.precision_reason}", file=sys.stderr)
    if not results:
        raise VgglabError("no image files found in the given inputs")
    for r in results:
        if r.top is None:  # the file could not be read: its error instead
            if args.json:
                print(json.dumps({"file": r.path, "error": r.error}))
            else:
                print(f"vgglab predict: error: {r.path}: {r.error}", file=sys.stderr)
        elif args.json:
            print(
                json.dumps(
                    {"file": r.path, "top": [{"class": c, "probability": p} for c, p in r.top], "precision": inf.precision}
                )
            )
        else:
            print(f"{r.path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top))
    # the exit status fails only when no input could be classified
    return 1 if all(r.error for r in results) else 0


def _cmd_inspect(args) -> int:
    layers = [n.strip() for n in args.layers.split(",")] if args.layers else None
    for name, path in inspect_checkpoint(args.checkpoint, args.image, layers, args.out, args.device).items():
        print(f"{name}: {path}")
    return 0


def _cmd_data(args) -> int:
    if args.config:
        cfg = load_config(args.config, args.set)
        data, augment = cfg.data, cfg.augment
    elif args.dataset:
        cfg = load_config({"data": {"dataset": args.dataset, "root": args.data_root or f"data/{args.dataset}"}}, args.set)
        data, augment = cfg.data, cfg.augment
    else:
        raise VgglabError("data needs --config FILE or --dataset NAME [--data-root PATH]")
    if args.config and args.data_root:
        data.root = args.data_root
    info = describe_data(data, augment, args.out)
    print(json.dumps(info) if args.json else format_data(info))
    for p in info.get("pictures", []):
        print(f"wrote {p}")
    return 0


def _cmd_report(args) -> int:
    print(
        f"wrote {build_report(args.run_dir, args.out, data_root=args.data_root, device=args.device, tta=args.tta, precision=args.precision)}"
    )
    return 0


def _cmd_features(args) -> int:
    layers = [n.strip() for n in args.layer.split(",")] if args.layer else None
    out = features_out(args.out, args.checkpoint)
    feats = extract_features(args.checkpoint, args.split, layers, args.data_root, precision=args.precision)
    save_features(feats, out)
    arrays = ", ".join(f"{k} {v.shape}" for k, v in feats.items() if k not in ("labels", "classes", "precision"))
    print(
        f"wrote {out}: {arrays}, labels {feats['labels'].shape}, {len(feats['classes'])} classes (computed in {feats['precision']})"
    )
    return 0


def _cmd_export(args) -> int:
    r = export_model(args.checkpoint, args.format, args.out, data_root=args.data_root)
    opset = f", opset {r['opset']}" if r["opset"] else ""
    print(
        f"wrote {r['path']} ({r['format']}{opset}); parity on {', '.join(r['checked'])}: max |diff| {r['max_abs_diff']:.2e} in logits"
    )
    if r["skipped"]:
        print(f"note: {r['skipped']}")
    return 0


def _cmd_speed(args) -> int:
    cache = ProbeCache(args.cache_dir)
    if cache.path.parent.exists() and not cache.path.parent.is_dir():
        raise VgglabError(f"--cache-dir {cache.path.parent} is a file; give the cache folder runs use (data.cache_dir)")
    if args.forget:
        n = cache.forget()
        print(f"forgot {n} cached speed verdict{'s' if n != 1 else ''} ({cache.path}); the next run probes again")
        return 0
    n = len(cache.entries())
    print(
        f"{n} cached speed verdict{'s' if n != 1 else ''} in {cache.path} ({machine_label()}); "
        "`vgglab speed --forget` removes them"
    )
    return 0


def _cmd_recipes(args) -> int:
    rows = [shipped.describe(p) for p in shipped.recipe_files()]
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['model']} on {r['data']}, {r['epochs']} epochs: {shipped.first_sentence(r['about'])}")
    print(f"({len(rows)} recipes in {shipped.recipes_dir()}; run one with vgglab train --config NAME)")
    return 0


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
    p.add_argument("--json", action="store_true", help="one JSON list instead of lines")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vgg16*'")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, memory and receptive field")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, help="input side in pixels (default: the model's own)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--head", choices=HEAD_TYPES)
    p.add_argument("--width", type=float, help="multiplier for every conv width")
    p.add_argument("--in-chans", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("train", help="train a model from a YAML recipe")
    p.add_argument("--config", help="a YAML recipe: a path, or a shipped recipe's name (vgglab recipes lists them)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument("--out", help="run directory (default runs/<config name>-<timestamp>); must be new or empty")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    p.add_argument(
        "--init-from", metavar="PATH", help="initial weights: a vgglab run/checkpoint, .safetensors or torchvision .pth"
    )
    p.add_argument("--init-mode", choices=TRANSFER_MODES)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="offline demo: train a small VGG on scikit-learn's digits (about a minute)")
    p.add_argument("--out", help="run directory (default runs/demo_digits-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("eval", help="metrics of a trained model on a split, with optional test-time augmentation")
    p.add_argument("checkpoint", help="a run directory (its best.pt, else last.pt), a .pt file or torchvision:NAME")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--tta",
        default="none",
        choices=TTA_MODES,
        help="none: the single center crop; dense, multicrop, dense+multicrop: the VGG paper's, on whole images",
    )
    p.add_argument("--tta-shift", type=int, default=1, help="pixels, for flip-translate and flip-shift")
    p.add_argument(
        "--scales",
        type=_scales,
        help="comma-separated shorter sides Q the whole image is rescaled to for "
        "dense/multicrop, e.g. 256,384,512 (default: the run's test scale)",
    )
    p.add_argument("--grid", type=int, default=MULTICROP_GRID, help="multicrop: crops per side per scale (the paper's: 5)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    p.add_argument(
        "--data-root",
        help="where the dataset is now, if it moved since training; for torchvision:NAME, "
        "a folder holding SPLIT/<class>/ (ImageNet: val/<synset id>/)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        choices=INFERENCE_PRECISIONS,
        help="auto: the run's own on the machine it trained on, else bf16 where native and measured faster, else fp32",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="classify image files (any size or mode)")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        choices=INFERENCE_PRECISIONS,
        help="auto: the run's own on the machine it trained on, else bf16 where native and measured faster, else fp32",
    )
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("inspect", help="activation maps, filters and Grad-CAM for one image")
    p.add_argument("checkpoint")
    p.add_argument("--image", required=True)
    p.add_argument("--layers", help="comma-separated layer names (see `vgglab summary`); default: each block's output")
    p.add_argument("--out", default="inspect")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("data", help="look at a dataset: sizes, classes, statistics, sample grids")
    p.add_argument("--config", help="a training recipe; its data and augment sections are used")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--data-root")
    p.add_argument("--out", help="folder for samples.png and samples_augmented.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")
    p.add_argument(
        "--tta",
        default="auto",
        choices=("auto", *TTA_MODES),
        help="TTA reported beside the plain metrics; auto: flip when the model trained with flips, else none",
    )
    p.add_argument("--data-root")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        choices=INFERENCE_PRECISIONS,
        help="auto: the run's own on the machine it trained on, else bf16 where native and measured faster, else fp32",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("features", help="embeddings of a split as .npz (features, labels, classes)")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--layer",
        help="layer names, comma-separated (each spatially averaged; one array per layer when several); "
        "default: the penultimate embedding",
    )
    p.add_argument("--data-root")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument(
        "--precision",
        default="auto",
        choices=INFERENCE_PRECISIONS,
        help="auto: the run's own on the machine it trained on, else bf16 where native and measured faster, else fp32",
    )
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("speed", help="the speed probe's cached verdicts (precision, layout) on this machine")
    p.add_argument("--forget", action="store_true", help="remove them: the next run (and eval/predict) measures again")
    p.add_argument("--cache-dir", help="the cache folder runs use (data.cache_dir; default ~/.cache/vgglab or $VGGLAB_CACHE)")
    p.set_defaults(func=_cmd_speed)

    p = sub.add_parser("export", help="ONNX / torch.export (.pt2) / safetensors / legacy TorchScript, checked against PyTorch")
    p.add_argument("checkpoint")
    p.add_argument(
        "--format",
        required=True,
        choices=list(FORMATS),
        help="onnx: ONNX Runtime and other engines; pt2: torch.export's ExportedProgram with a dynamic batch "
        "(torch.export.load); safetensors: weights and metadata; torchscript: legacy, torch.jit is "
        "deprecated in favour of torch.export, kept for runtimes that only load TorchScript",
    )
    p.add_argument("--out", help="output file (default: next to the checkpoint)")
    p.add_argument("--data-root")
    p.set_defaults(func=_cmd_export)
    for p in sub.choices.values():
        p.add_argument(
            "-q", "--quiet", action="store_true", help="no progress bar or progress lines (also: log.progress: none in a recipe)"
        )
    return parser


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or "DefaultCPUAllocator: can't allocate memory" in text
        or "out of memory" in text
    )


def _one_line_warnings(command: str) -> None:
    """Warnings as ``vgglab train: warning: ...``, one line each (Python's default adds the file,
    the line number and the source line of the call)."""

    def line(message, category, filename, lineno, line=None):
        return f"vgglab {command}: warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = line


def main(argv: list[str] | None = None) -> int:
    signals.install()
    for stream in (sys.stdout, sys.stderr):  # a class or file name with non-UTF-8 bytes prints escaped, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    quiet_shutdown_races()
    _one_line_warnings(args.command)
    try:
        progress.interval_s()  # a bad VGGLAB_PROGRESS_S is one line now, not an hour into a job
        with progress.default_mode("none" if args.quiet else "auto"):
            return args.func(args)
    except VgglabError as exc:
        print(f"vgglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be made or read, past the library's own checks
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vgglab {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"vgglab {args.command}: error: out of memory; lower the batch size, image size or model width", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch's allocators raise RuntimeErrors (CUDA's OutOfMemoryError is one), not MemoryError
        if not _out_of_memory(exc):
            raise
        first = " ".join(str(exc).split())[:160]
        print(
            f"vgglab {args.command}: error: out of memory ({first}); lower the batch size, image size or model width",
            file=sys.stderr,
        )
        return 2
    except BaseException as exc:  # Ctrl-C, SIGTERM, SIGHUP: every file is written whole or not at all (files.atomic_write)
        stop = signals.interrupt_behind(exc)  # also behind what a library raised over it (ImportError in a lazy import)
        if stop is None:
            raise
        resume = " (vgglab train --resume RUN_DIR goes on from the last finished epoch)" if args.command == "train" else ""
        print(f"vgglab {args.command}: {signals.describe(stop)}; nothing was half-written{resume}", file=sys.stderr)
        return signals.exit_status(stop)
