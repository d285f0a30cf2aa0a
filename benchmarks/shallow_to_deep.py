"""Does shallow-to-deep initialisation help a deep VGG without BatchNorm start training?

Simonyan & Zisserman (2014, sec. 3.1) trained configuration A from random N(0, 0.01) weights,
then initialised deeper nets' first four conv layers and the FC layers from it, because "bad
initialisation can stall learning due to the instability of gradient in deep nets". This
measures it on a CIFAR-10 subset: a trained vgg11 (A) is transferred into vgg16 (D) with
``shallow-to-deep`` (rule ``paper``, the rest N(0, 0.01)), against a fresh vgg16 with the
paper's N(0, 0.01) everywhere; both without BatchNorm, same data order, several seeds.
Prints the mean training loss per window of steps, mean and spread over seeds.

    python benchmarks/shallow_to_deep.py --data-root /path/to/cifar10 [--steps 300] [--seeds 3] [--width 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch


def train_steps(model, ds, steps: int, batch: int, seed: int, lr: float) -> list[float]:
    """Per-step training losses of ``steps`` SGD steps (the library's loop and loader)."""
    from vgglab.data import BatchLoader, Normalization, Split
    from vgglab.data.config import AugmentConfig
    from vgglab.train.config import OptimConfig, ScheduleConfig
    from vgglab.train.loop import train_one_epoch
    from vgglab.train.optim import Schedule, build_optimizer
    from vgglab.train.state import TrainState

    g = torch.Generator().manual_seed(1234)  # the same images and order for every arm and seed
    idx = torch.randperm(len(ds.train), generator=g)[: steps * batch]
    loader = BatchLoader(
        Split(ds.train.x[idx], ds.train.y[idx]),
        batch,
        image_size=32,
        norm=Normalization.of(ds.stats),
        augment=AugmentConfig(crop="pad", padding=4, flip=True),
        shuffle=True,
        drop_last=True,
        seed=1234,
    )
    opt = build_optimizer(model, OptimConfig(lr=lr, momentum=0.9, weight_decay=5e-4))
    sched = Schedule(opt, ScheduleConfig(name="none"), len(loader), 1, "max")
    means: list[float] = []
    torch.manual_seed(seed)  # dropout
    train_one_epoch(
        model,
        loader,
        TrainState(model, opt, sched),
        precision="bf16",
        on_step=lambda loss, top1, seen: means.append(loss),
        progress_every=1,
    )  # every step
    # running means -> the loss of each step
    return [m * (i + 1) - (means[i - 1] * i if i else 0.0) for i, m in enumerate(means)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("VGGLAB_CIFAR10"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.5, help="conv width multiplier (1.0 is the paper's)")
    ap.add_argument("--shallow-epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--window", type=int, default=50)
    args = ap.parse_args()
    if not args.data_root:
        raise SystemExit("shallow_to_deep: error: pass --data-root PATH or set VGGLAB_CIFAR10")

    import vgglab
    from vgglab import create_model
    from vgglab.data import load_dataset
    from vgglab.data.config import DataConfig
    from vgglab.run.checkpoint import load_checkpoint
    from vgglab.train.transfer import transfer

    ds = load_dataset(DataConfig(dataset="cifar10", root=args.data_root, download=False))
    opts = {"width": args.width, "head": "cifar", "hidden": 512, "num_classes": 10, "input_size": 32}
    with tempfile.TemporaryDirectory() as tmp:
        # 1. the shallow net A, trained first (He init: what trains A quickly here)
        shallow_cfg = {
            "name": "vgg11_shallow",
            "data": {"dataset": "cifar10", "root": args.data_root, "download": False, "train_limit": 20000, "batch_size": 64},
            "model": {"name": "vgg11", "options": {k: v for k, v in opts.items() if k not in ("num_classes", "input_size")}},
            "optim": {"lr": args.lr, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "none"},
            "train": {"epochs": args.shallow_epochs, "precision": "bf16"},
            "log": {"progress": "line"},
        }
        res = vgglab.fit(shallow_cfg, out=os.path.join(tmp, "shallow"))
        shallow = load_checkpoint(res.run_dir / "last.pt")
        shallow_model = create_model("vgg11", **opts)
        print(f"vgg11 (A) trained: val top-1 {100 * res.metrics['val_top1']:.2f}%")

        curves: dict[str, list[list[float]]] = {"fresh vgg16 (paper init)": [], "vgg16 from vgg11 (shallow-to-deep)": []}
        for seed in range(args.seeds):
            for arm in curves:
                torch.manual_seed(seed)
                deep = create_model("vgg16", init="paper", **opts)
                if "shallow" in arm:
                    report = transfer(deep, shallow["model"], shallow_model.config, "shallow-to-deep")
                    if seed == 0:
                        print(
                            report.format().splitlines()[0]
                            + "; matched layers: "
                            + ", ".join(sorted({k.rsplit(".", 1)[0] for k, _ in report.matched}))
                        )
                losses = train_steps(deep, ds, args.steps, args.batch, seed, args.lr)
                curves[arm].append(losses)
                print(
                    f"seed {seed} {arm}: loss first {losses[0]:.3f}, last-{args.window} mean {statistics.mean(losses[-args.window :]):.3f}",
                    flush=True,
                )

    print(f"\nmean training loss per window of {args.window} steps (mean ± std over {args.seeds} seeds; chance = ln 10 = 2.303)")
    header = f"{'steps':<12}" + "".join(f"{arm:>40}" for arm in curves)
    print(header)
    for start in range(0, args.steps, args.window):
        row = f"{start + 1}-{start + args.window:<8}"
        for runs in curves.values():
            vals = [statistics.mean(r[start : start + args.window]) for r in runs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            row += f"{statistics.mean(vals):>32.3f} ± {sd:.3f}"
        print(row)


if __name__ == "__main__":
    main()
