"""What each ``vgglab`` command does once its arguments are parsed: call the library, print the result.
A command returns its exit status where it is not 0 (``None``: done)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

from .. import shipped
from ..errors import VgglabError
from ..evaluate import expand_inputs, format_metrics, load_inference, predict_files
from ..evaluate.checkpoint_eval import default_out, evaluate_checkpoint
from ..export import export_model, extract_features, features_out, save_features
from ..machine import machine_label
from ..models import create_model, format_summary, get_entry, list_models, param_count, summarize
from ..speed import ProbeCache
from ..train import fit
from ..train.config import load_config, schema_text
from ..viz.data import describe_data, format_data
from ..viz.inspect import inspect_checkpoint
from ..viz.plots import write_eval_pictures
from ..viz.report import build_report


def cmd_models(args) -> None:
    print(f"{'model':<16}{'params':>14}  {'input':>5}  {'classes':>7}  {'head':<8}  description")
    for name in list_models(args.pattern):
        entry = get_entry(name)
        cfg = entry.config
        params = param_count(cfg)
        print(f"{name:<16}{params:>14,}  {cfg.input_size:>5}  {cfg.num_classes:>7}  {cfg.head.type:<8}  {entry.description}")


def _given(args, *names: str) -> dict:
    """The options ``names`` that were given on the command line (argparse's None: not given), by name."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def cmd_summary(args) -> None:
    result = summarize(create_model(args.model, **_given(args, "num_classes", "head", "width", "in_chans", "input_size")))
    print(json.dumps(result) if args.json else format_summary(result))


def cmd_train(args) -> None:
    if args.config is None and args.resume is None:
        raise VgglabError("train needs --config FILE (see configs/) or --resume RUN_DIR")
    init = [f"train.{k}={v}" for k, v in _given(args, "init_from", "init_mode").items() if v]
    fit(args.config, [*args.set, *init], out=args.out, resume=args.resume)


def cmd_demo(args) -> None:
    fit(shipped.find_recipe("demo_digits"), args.set, out=args.out)  # ships in the package: works from any folder


def cmd_eval(args) -> None:
    out = args.out or default_out(args.checkpoint)
    keys = ("split", "tta", "topk", "data_root", "shift", "scales", "grid", "device", "precision")
    m = evaluate_checkpoint(args.checkpoint, out=out, pictures=write_eval_pictures, **_given(args, *keys))
    print(format_metrics(m))
    print(f"wrote {out}")


def cmd_predict(args) -> int | None:
    inf = load_inference(args.checkpoint, args.device, precision=args.precision)
    results = predict_files(inf, expand_inputs(args.inputs), args.topk)
    print(f"precision {inf.precision}: {inf.precision_reason}", file=sys.stderr)
    if not results:
        raise VgglabError("no image files found in the given inputs")
    for r in results:
        if args.json:
            row: dict[str, object] = {"file": r.path, "error": r.error}  # a file that could not be read: its error
            if r.top is not None:
                row = {"file": r.path, "top": [{"class": c, "probability": p} for c, p in r.top], "precision": inf.precision}
            print(json.dumps(row))
        elif r.top is None:
            print(f"vgglab predict: error: {r.path}: {r.error}", file=sys.stderr)
        else:
            print(f"{r.path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top))
    # the exit status fails only when no input could be classified
    return 1 if all(r.error for r in results) else None


def cmd_inspect(args) -> None:
    layers = [n.strip() for n in args.layers.split(",")] if args.layers else None
    for name, path in inspect_checkpoint(args.checkpoint, args.image, layers, args.out, args.device).items():
        print(f"{name}: {path}")


def cmd_data(args) -> None:
    if not (args.config or args.dataset):
        raise VgglabError("data needs --config FILE or --dataset NAME [--data-root PATH]")
    cfg = load_config(
        args.config or {"data": {"dataset": args.dataset, "root": args.data_root or f"data/{args.dataset}"}}, args.set
    )
    if args.config and args.data_root:
        cfg.data.root = args.data_root
    info = describe_data(cfg.data, cfg.augment, args.out)
    print(json.dumps(info) if args.json else format_data(info))
    for p in info.get("pictures", []):
        print(f"wrote {p}")


def cmd_report(args) -> None:
    print(f"wrote {build_report(args.run_dir, args.out, **_given(args, 'data_root', 'device', 'tta', 'precision'))}")


def cmd_features(args) -> None:
    layers = [n.strip() for n in args.layer.split(",")] if args.layer else None
    out = features_out(args.out, args.checkpoint)
    feats = extract_features(args.checkpoint, args.split, layers, args.data_root, precision=args.precision)
    save_features(feats, out)
    arrays = ", ".join(f"{k} {v.shape}" for k, v in feats.items() if k not in ("labels", "classes", "precision"))
    print(
        f"wrote {out}: {arrays}, labels {feats['labels'].shape}, {len(feats['classes'])} classes (computed in {feats['precision']})"
    )


def cmd_export(args) -> None:
    r = export_model(args.checkpoint, args.format, args.out, data_root=args.data_root)
    opset = f", opset {r['opset']}" if r["opset"] else ""
    print(
        f"wrote {r['path']} ({r['format']}{opset}); parity on {', '.join(r['checked'])}: max |diff| {r['max_abs_diff']:.2e} in logits"
    )
    if r["skipped"]:
        print(f"note: {r['skipped']}")


def cmd_speed(args) -> None:
    cache = ProbeCache(args.cache_dir)
    if cache.path.parent.exists() and not cache.path.parent.is_dir():
        raise VgglabError(f"--cache-dir {cache.path.parent} is a file; give the cache folder runs use (data.cache_dir)")
    n = cache.forget() if args.forget else len(cache.entries())
    verdicts = f"{n} cached speed verdict{'s' if n != 1 else ''}"
    if args.forget:
        print(f"forgot {verdicts} ({cache.path}); the next run probes again")
    else:
        print(f"{verdicts} in {cache.path} ({machine_label()}); `vgglab speed --forget` removes them")


def cmd_recipes(args) -> None:
    rows = [shipped.describe(p) for p in shipped.recipe_files()]
    if args.json:
        print(json.dumps(rows))
        return
    columns = shutil.get_terminal_size().columns  # $COLUMNS or 80 when not a terminal
    for r in rows:
        print(f"{r['name']}  ({r['model']} on {r['data']}, {r['epochs']} epochs)")
        print(textwrap.fill(r["summary"], width=max(40, columns), initial_indent="    ", subsequent_indent="    "))
    print(f"({len(rows)} recipes in {shipped.recipes_dir()}; run one with vgglab train --config NAME)")


def cmd_schema(args) -> None:
    print(schema_text(), end="")
