"""Time to accuracy: a recipe trained end to end, timed by the wall clock, recorded per run.

    python benchmarks/time_to_accuracy.py --config configs/fast_cifar10.yaml --data-root PATH [--seeds 3]
    python benchmarks/time_to_accuracy.py --config configs/fast_cifar10_short.yaml --data-root PATH \\
        --seeds 2 --ablation no-whitening          # one technique switched off (see ABLATIONS)
    python benchmarks/time_to_accuracy.py --table  # the README's tables, from every record
    python benchmarks/time_to_accuracy.py --curve  # cifar10_compute.csv and its plot, from every record

Each run is ``vgglab.fit`` with ``train.seed`` set, from the start of training to the end of
the final test (plain and with the recipe's ``train.test_tta``), with the dataset already in
vgglab's cache (it is loaded once before the clock starts). Minutes here are wall-clock on the
machine the run was on, which is the point of this benchmark (and the one exception to
vgglab's "ratios, not absolute times"): run it alone on the machine.

Every run writes ``benchmarks/results/time_to_accuracy/<recipe>[-<ablation>]-seed<N>-<time>.json``
with ``recipe, config_sha256, seed, commit, minutes, top1, top1_tta, images_per_s, cpu``
(accuracies as fractions), ``train_pflops`` (every training forward and backward: 6 x the model's
forward MACs at each epoch's input side x the images it sees, vgglab.train.compute),
``val_pflops`` (validation forwards during training) and ``test_pflops`` (the final test with
its TTA views), ``concurrent_runs`` (``--concurrent``: runs sharing the machine; the minutes of a
shared run are kept but not tabled), and a few more keys; the records are small and committed, so runs from
different sessions add up. ``--table`` summarises them (mean +- sample std per recipe).
Records of a recipe whose code has since changed are moved to ``superseded/`` (kept, not tabled).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "time_to_accuracy"

# The four techniques expected to matter most, each switched off by config overrides.
ABLATIONS = {
    "no-whitening": ["model.options.whiten=0"],  # a plain 3-channel input to the first conv
    "no-bn-bias-lr": ["optim.bn_bias_lr_mult=1.0"],  # BatchNorm biases at the base learning rate
    "no-dirac": ["model.options.init=kaiming"],  # He-normal convs instead of identity init
    "no-label-smoothing": ["train.label_smoothing=0.0"],
}


def cpu_name() -> str:
    from vgglab.machine import cpu_model

    return f"{cpu_model()} ({os.cpu_count()} cores)"


def git_commit() -> str:
    """HEAD, with ``+dirty`` when the package, configs or this script differ from it; ``$VGGLAB_COMMIT``
    when set (a copied tree, a GPU machine's, can carry a stale or no .git)."""
    if os.environ.get("VGGLAB_COMMIT"):
        return os.environ["VGGLAB_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "configs", "benchmarks/time_to_accuracy.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def compute_of(cfg, n_train: int, n_val: int, n_test: int, image_size: int) -> dict:
    """The recipe's arithmetic in PFLOPs (see vgglab.train.compute), from its model's own MACs."""
    from vgglab.models import create_model, create_model_from_spec
    from vgglab.train.compute import recipe_compute

    m = cfg.model
    model = create_model_from_spec(m.spec) if m.spec is not None else create_model(m.name, **m.options)
    c = recipe_compute(cfg, model.config, n_train, n_val, n_test, image_size)
    return {
        "train_pflops": round(c.train_pflops, 5),
        "val_pflops": round(c.val_flops / 1e15, 5),
        "test_pflops": round(c.test_flops / 1e15, 6),
        "images_seen": c.images_seen,
    }


CIFAR10_SPLITS = (50_000, 10_000)  # training and test images


def record_compute(r: dict) -> dict:
    """A record's PFLOPs: its own, or (records made before they were counted) the recipe's in
    configs/ with the record's overrides, on CIFAR-10's splits."""
    if "train_pflops" in r:
        return r
    from vgglab.train.config import load_config

    cfg = load_config(ROOT / "configs" / f"{r['recipe']}.yaml", r.get("overrides") or [])
    n_val = int(cfg.data.val_size if cfg.data.val_size is not None else 5000)
    return {**r, **compute_of(cfg, CIFAR10_SPLITS[0] - n_val, n_val, CIFAR10_SPLITS[1], cfg.data.image_size or 32)}


def run_once(config: str, overrides: list[str], seed: int, data_root: str, keep: Path | None) -> dict:
    """One timed training run; returns its record (without the recipe's identity)."""
    from vgglab.train import fit
    from vgglab.train.config import load_config
    from vgglab.train.reporter import MetricsLog

    run_dir = Path(tempfile.mkdtemp(prefix="tta-run-")) if keep is None else keep
    sets = [*overrides, f"data.root={data_root}", f"train.seed={seed}", "log.progress=line"]
    t0 = time.perf_counter()
    result = fit(config, sets, out=run_dir / "run")
    minutes = (time.perf_counter() - t0) / 60
    rows = MetricsLog(result.run_dir / "metrics.csv").rows()
    resolved = load_config(result.run_dir / "config.yaml").resolved or {}
    seconds = sum(float(r["seconds"]) for r in rows)
    images = sum(float(r["images_per_s"]) * float(r["seconds"]) for r in rows)
    tta_keys = [k for k in result.metrics if k.startswith("test_top1_")]
    record = {
        "seed": seed,
        "minutes": round(minutes, 3),
        "top1": result.metrics["test_top1"],
        "top1_tta": result.metrics[tta_keys[0]] if tta_keys else None,
        "tta": tta_keys[0][len("test_top1_") :] if tta_keys else None,
        "images_per_s": round(images / seconds, 1),
        "train_minutes": round(seconds / 60, 3),
        "epochs": len(rows),
        "precision": resolved.get("precision"),
        "channels_last": resolved.get("channels_last"),
    }
    if keep is None:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    return record


def keep_dir(root: Path, name: str) -> Path:
    """A new folder under ``root`` for one kept run, unique also when two benchmarks start the same
    second (side-by-side runs): NAME-TIME-RANDOM."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=root))


def summarise(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def machine_of(r: dict) -> str:
    """A short name of the machine a record ran on: GPU, or CPU model + capability (+ native bf16)."""
    if r.get("gpu"):
        return r["gpu"]
    cpu = r.get("cpu", "?").split(" (")[0].replace("(R)", "").replace(" Processor", "")
    if "cpu_capability" not in r:
        return cpu
    return f"{cpu}, {r['cpu_capability']}{', native bf16' if r.get('native_bf16') else ''}"


def table(records: list[dict]) -> str:
    """Markdown: one row per machine, recipe (and ablation), mean ± sample std over its runs."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:  # a recipe run with further overrides is its own row
        groups[
            (
                machine_of(r),
                variant_of({**r, "ablation": None}) if not r.get("ablation") else r["recipe"],
                r.get("ablation") or "",
            )
        ].append(r)
    lines = [
        "| machine | recipe | switched off | runs | top-1 with TTA (%) | top-1 (%) | minutes (max) | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (machine, recipe, ablation), rs in sorted(groups.items()):
        tta = [r["top1_tta"] for r in rs if r.get("top1_tta") is not None]
        alone = timed(rs)
        minutes = [r["minutes"] for r in alone]
        speed = (
            f"{statistics.fmean(minutes):.1f} ({max(minutes):.1f}) | {statistics.fmean(r['images_per_s'] for r in alone):.0f}"
            if alone
            else "- (cores shared) | -"
        )
        lines.append(
            f"| {machine} | {recipe} | {ablation or '-'} | {len(rs)} | {summarise(tta) if tta else '-'} | {summarise([r['top1'] for r in rs])} | "
            f"{speed} |"
        )
    return "\n".join(lines)


def timed(records: list[dict]) -> list[dict]:
    """The records whose minutes are a time to accuracy: runs that had the machine to themselves
    (``--concurrent`` 1, the default; older records ran alone)."""
    return [r for r in records if r.get("concurrent_runs", 1) == 1]


CURVE_COLUMNS = ["variant", "config", "pflops", "seeds", "mean_tta_top1", "min_tta_top1", "machine", "minutes"]


# Runs of a shipped recipe made before it had a file of its own, as its parent with overrides:
# (recipe run, its overrides) -> the shipped recipe. A test checks that each pair loads to the same settings.
SAME_AS = {
    ("fast_cifar10_muon", ("data.batch_size=1024", "optim.muon_lr=0.17")): "fast_cifar10_muon1024",
    ("fast_cifar10_muon1024", ("train.epochs=9",)): "fast_cifar10_muon_9ep",
}


def recipe_of(r: dict) -> tuple[str, list[str]]:
    """A record's recipe (the shipped one, see SAME_AS) and its overrides beyond the recipe and the ablation."""
    extra = [o for o in r.get("overrides") or [] if o not in ABLATIONS.get(r.get("ablation") or "", [])]
    shipped = SAME_AS.get((r["recipe"], tuple(extra)))
    return (shipped, []) if shipped else (r["recipe"], extra)


def variant_of(r: dict) -> str:
    """A record's variant: its recipe, the ablation and any further overrides."""
    recipe, extra = recipe_of(r)
    return recipe + (f" -{r['ablation']}" if r.get("ablation") else "") + "".join(f" {o}" for o in extra)


def curve_rows(records: list[dict]) -> list[dict]:
    """One row per variant and machine: training PFLOPs, seeds, mean and lowest TTA top-1 (%), mean minutes."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(variant_of(r), machine_of(r))].append(r)
    rows = []
    for (variant, machine), rs in sorted(groups.items(), key=lambda kv: (kv[1][0]["train_pflops"], kv[0])):
        tta = [100 * r["top1_tta"] for r in rs if r.get("top1_tta") is not None]
        shipped = ROOT / "configs" / f"{recipe_of(rs[0])[0]}.yaml"
        minutes = statistics.fmean(r["minutes"] for r in timed(rs)) if timed(rs) else None
        rows.append(
            {
                "variant": variant,
                "config": f"configs/{shipped.name}" if shipped.exists() else "",
                "pflops": round(rs[0]["train_pflops"], 4),
                "seeds": len(rs),
                "mean_tta_top1": round(statistics.fmean(tta), 2) if tta else "",
                "min_tta_top1": round(min(tta), 2) if tta else "",
                "machine": machine,
                "minutes": "" if minutes is None else round(minutes, 1 if minutes >= 1 else 2),
            }
        )
    return rows


def write_curve(rows: list[dict], path: Path) -> Path:
    """The rows as CSV, and accuracy against training PFLOPs as a PNG beside it (one point per
    variant and machine, a bar from its lowest seed to its mean)."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    rows = [r for r in rows if r["mean_tta_top1"] != ""]
    # One column, text sized for the figure shown about 600 px wide (a phone scrolls it in its own box)
    fig, axes = plt.subplots(2, 1, figsize=(7, 9.5), gridspec_kw={"height_ratios": [1, 1.4]})
    zoom = (93.0, 94.45)
    labels: dict = {ax: [] for ax in axes}
    for ax, full in zip(axes, (True, False), strict=True):
        for row in rows:
            mean, low = row["mean_tta_top1"], row["min_tta_top1"]
            gpu = not row["machine"].startswith(("Intel", "AMD"))
            ax.errorbar(
                [row["pflops"]],
                [mean],
                yerr=[[mean - low], [0]],
                fmt="s" if gpu else "o",
                capsize=3,
                color="tab:green" if gpu else "tab:blue",
                alpha=0.8,
                ms=5,
            )
            shipped = row["config"] and row["variant"] == Path(row["config"]).stem
            if shipped and full != (
                zoom[0] <= mean <= zoom[1]
            ):  # shipped recipes by name, each in one panel; the CSV names the rest
                machine = row["machine"].split(",")[0].split()[-1]  # Xeon, EPYC, H200
                labels[ax].append((row["pflops"], mean, f"{row['variant']} ({row['seeds']}x, {machine})"))
        ax.axhline(94.0, color="gray", lw=0.8, ls="--")
        ax.axvline(0.20, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("training PFLOPs (6 x forward MACs x images seen)")
        ax.set_xlim(right=max([r["pflops"] for r in rows] + [0.2]) * 1.45)
    for ax in axes:
        ax.set_ylabel("test top-1 with TTA (%)")
    axes[0].set_title("every variant (the CSV names each); mean, bar to the lowest seed", fontsize=10)
    axes[1].set_ylim(*zoom)
    axes[1].set_xlim(0.18, None)
    axes[1].set_title("near 94 %: circles CPU, squares GPU; shipped recipes named", fontsize=10)
    for ax, marks in labels.items():
        _label_points(ax, marks)
    fig.suptitle("vgglab CIFAR-10 recipes: accuracy against training compute")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return path


def _label_points(ax, marks: list[tuple[float, float, str]], gap: float = 10.0) -> None:
    """Name points beside them; labels of points at about the same x are pushed apart to ``gap``
    points, top to bottom, so that none covers another."""
    to_points = ax.transData.transform
    dpi = ax.figure.dpi
    last: dict[int, float] = {}
    for x, y, text in sorted(marks, key=lambda m: -m[1]):
        column = round(x * 100)
        want = to_points((x, y))[1] * 72 / dpi + 3
        placed = min(want, last.get(column, want + gap) - gap)
        last[column] = placed
        ax.annotate(text, (x, y), fontsize=8, xytext=(4, placed - want + 3), textcoords="offset points")


def write_record(folder: Path, stem: str, rec: dict) -> Path:
    """Write ``rec`` as ``folder/stem.json``, never over another record: runs of the same recipe and
    seed with different overrides, started side by side, can end in the same second (-2, -3, ...)."""
    for n in range(1, 1000):
        path = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            with path.open("x") as f:
                f.write(json.dumps(rec, indent=1) + "\n")
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"{folder}: no free name for {stem}.json")


def load_records(folder: Path = RESULTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a recipe, e.g. configs/fast_cifar10.yaml")
    ap.add_argument("--data-root", help="the CIFAR-10 folder or archive (as data.root)")
    ap.add_argument("--seeds", type=int, default=1, help="number of runs, seeds first-seed .. first-seed + N - 1")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--ablation", choices=sorted(ABLATIONS), help="switch one technique off")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides (recorded)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON records")
    ap.add_argument("--keep-runs", type=Path, help="keep the run directories under this folder (default: deleted)")
    ap.add_argument(
        "--concurrent",
        type=int,
        default=1,
        metavar="N",
        help="runs started side by side on this machine, this one included (recorded; with N > 1 the "
        "minutes are not tabled as a time to accuracy)",
    )
    ap.add_argument("--table", action="store_true", help="print the summary table of every record and exit")
    ap.add_argument("--curve", action="store_true", help="write cifar10_compute.csv and its plot from every record and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(load_records(args.results)))
        return 0
    if args.curve:
        sys.path.insert(0, str(ROOT / "src"))
        rows = curve_rows([record_compute(r) for r in load_records(args.results)])
        csv_path = write_curve(rows, args.results.parent / "cifar10_compute.csv")
        print(f"wrote {csv_path} and {csv_path.with_suffix('.png')} ({len(rows)} variants)")
        return 0
    if not args.config or not args.data_root:
        ap.error("--config and --data-root are required (or --table)")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    if args.concurrent < 1:
        ap.error("--concurrent must be at least 1 (the runs sharing this machine, this one included)")

    sys.path.insert(0, str(ROOT / "src"))
    from vgglab.data import load_dataset
    from vgglab.train.config import load_config

    overrides = [*(ABLATIONS[args.ablation] if args.ablation else []), *args.set]
    cfg = load_config(args.config, overrides)  # the recipe as run, before data root and seed: its hash names it
    sha = cfg.sha256()
    ds = load_dataset(load_config(cfg, [f"data.root={args.data_root}"]).data)  # decode + cache outside the clock
    compute = compute_of(cfg, len(ds.train), len(ds.val) if ds.val is not None else 0, len(ds.test), ds.image_size)
    print(
        f"{cfg.name}{' without ' + args.ablation if args.ablation else ''}: {len(ds.train)} training images cached; "
        f"config sha256 {sha[:12]}; training {compute['train_pflops']:.3f} PFLOPs ({compute['images_seen']:,} images seen), "
        f"validation {compute['val_pflops']:.3f}, final test with its TTA {compute['test_pflops']:.4f}",
        flush=True,
    )
    args.results.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        keep = keep_dir(args.keep_runs, f"{cfg.name}-seed{seed}") if args.keep_runs else None
        rec = run_once(args.config, overrides, seed, args.data_root, keep)
        rec = {
            "recipe": cfg.name,
            "ablation": args.ablation,
            "overrides": overrides,
            "config_sha256": sha,
            "commit": git_commit(),
            "cpu": cpu_name(),
            "torch": _torch_version(),
            "threads": _threads(),
            **_machine(),
            "concurrent_runs": args.concurrent,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **compute,
            **rec,
        }
        stem = f"{cfg.name}{'-' + args.ablation if args.ablation else ''}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        write_record(args.results, stem, rec)
        records.append(rec)
        tta = f", {100 * rec['top1_tta']:.2f} % with TTA" if rec["top1_tta"] is not None else ""
        print(
            f"seed {seed}: {rec['minutes']:.1f} min, {compute['train_pflops']:.3f} training PFLOPs "
            f"(+{compute['test_pflops']:.4f} for the test with TTA), test top-1 {100 * rec['top1']:.2f} %{tta}, "
            f"{rec['images_per_s']:.0f} training images/s",
            flush=True,
        )
    if len(records) > 1:
        tta = [r["top1_tta"] for r in records if r["top1_tta"] is not None]
        print(
            f"mean ± std over {len(records)} seeds: top-1 {summarise([r['top1'] for r in records])} %"
            + (f", with TTA {summarise(tta)} %" if tta else "")
            + f", minutes {summarise([r['minutes'] for r in records], 1.0, 1)}"
        )
    return 0


def _machine() -> dict:
    """The CPU's capability and bf16 support and the GPU, which decide what auto picks and how fast it runs."""
    from vgglab.machine import machine_info

    info = machine_info()
    return {k: info[k] for k in ("cpu_capability", "native_bf16", "gpu")}


def _torch_version() -> str:
    import torch

    return torch.__version__


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    raise SystemExit(main())
