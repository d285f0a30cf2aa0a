"""The ``vgglab`` command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import VgglabError


def _cmd_models(args) -> int:
    from .models import get_entry, list_models

    names = list_models(args.pattern)
    print(f"{'model':<16}{'params':>14}  {'input':>5}  {'classes':>7}  {'head':<8}  description")
    for name in names:
        entry = get_entry(name)
        cfg = entry.config
        params = _param_count(cfg)
        print(f"{name:<16}{params:>14,}  {cfg.input_size:>5}  {cfg.num_classes:>7}  {cfg.head.type:<8}  {entry.description}")
    return 0


def _param_count(cfg) -> int:
    import torch

    from .models import VGG

    with torch.device("meta"):  # counts shapes without allocating 100+ MB per model
        model = VGG(cfg)
    return sum(p.numel() for p in model.parameters())


def _cmd_summary(args) -> int:
    from .models import create_model, format_summary, summarize

    options = {"num_classes": args.num_classes, "head": args.head, "width": args.width,
               "in_chans": args.in_chans, "input_size": args.input_size}
    model = create_model(args.model, **{k: v for k, v in options.items() if v is not None})
    result = summarize(model)
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


def _cmd_train(args) -> int:
    from .train import fit

    if args.config is None and args.resume is None:
        raise VgglabError("train needs --config FILE (see configs/) or --resume RUN_DIR")
    fit(args.config, args.set, out=args.out, resume=args.resume)
    return 0


def _cmd_demo(args) -> int:
    from .train import fit

    fit(_shipped_config("demo_digits.yaml"), args.set, out=args.out)
    return 0


def _shipped_config(name: str):
    """The demo's recipe ships inside the package, so the demo works from any folder."""
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("vgglab").joinpath("recipes", name).read_text())
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgglab", description="Build, train, evaluate and look inside VGG networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vgg16*'")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="per-layer shapes, params, MACs, memory and receptive field")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, help="input side in pixels (default: the model's own)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--head", choices=["imagenet", "cifar", "gap"])
    p.add_argument("--width", type=float, help="multiplier for every conv width")
    p.add_argument("--in-chans", type=int)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("train", help="train a model from a YAML recipe")
    p.add_argument("--config", help="YAML recipe (configs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    p.add_argument("--out", help="run directory (default runs/<config name>-<timestamp>); must be new or empty")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="offline demo: train a small VGG on scikit-learn's digits (about a minute)")
    p.add_argument("--out", help="run directory (default runs/demo_digits-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VgglabError as exc:
        print(f"vgglab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vgglab {args.command}: interrupted", file=sys.stderr)
        return 130
