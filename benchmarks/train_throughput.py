"""Training throughput of vgg16_cifar on real CIFAR-10: the tutorial's pipeline vs vgglab's.

Arm (a), the CIFAR-10 notebook's way: a dataset over the decoded uint8 array that builds a PIL
image per item (as torchvision's CIFAR10 does), RandomCrop(32, 4) + RandomHorizontalFlip +
ToTensor + Normalize, a DataLoader with 4 workers, fp32, NCHW, eager.
Arm (b), vgglab: the cached uint8 tensors, BatchLoader (batched augmentation, no workers) and
``train_one_epoch`` with the settings given by --precision / --channels-last / --compile
(default: auto, as ``vgglab train`` resolves them on this machine; see vgglab.speed).
``--device cuda`` runs both arms on a GPU (the tutorial arm with pinned memory and non-blocking
copies, fp32, as the tutorial would). The first line printed names the machine.

Each arm runs in its own subprocess, alternating a, b, a, b, ... so drift of a shared machine
hits both. Prints images/s and the peak resident memory of each arm's whole process tree
(DataLoader workers included), then, last, ``ratio: X.XX`` (median b / median a).

    python benchmarks/train_throughput.py --data-root /path/to/cifar10 [--steps 30] [--repeats 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import psutil

BATCH = 128


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakRSS:
    """Samples the RSS of this process and all its children every 50 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self._proc))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss(self._proc))


def _dataset(data_root: str):
    from vgglab.data import load_dataset
    from vgglab.data.config import DataConfig

    return load_dataset(DataConfig(dataset="cifar10", root=data_root, download=False))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def arm_tutorial(data_root: str, steps: int, warmup: int, device: str) -> dict:
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from vgglab import create_model

    ds = _dataset(data_root)
    images = ds.train.x.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8, as CIFAR10.data
    labels = ds.train.y.tolist()
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return tf(Image.fromarray(images[i])), labels[i]

    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    # on a GPU as the tutorial would run it: pinned batches copied without blocking
    loader = DataLoader(PILDataset(), batch_size=BATCH, shuffle=True, num_workers=4, drop_last=True, pin_memory=cuda)
    model = create_model("vgg16_cifar").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    with PeakRSS() as mem:
        for i, (x, y) in enumerate(loader):
            if i == warmup:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i + 1 == warmup + steps:
                break
        _sync(device)
        seconds = time.perf_counter() - t0
    return {"images_per_s": steps * BATCH / seconds, "peak_rss_mb": mem.peak / 2**20}


def arm_vgglab(data_root: str, steps: int, warmup: int, device: str, precision: str, channels_last: bool, compile_) -> dict:
    import torch

    from vgglab import create_model
    from vgglab.data import BatchLoader, Normalization, Split
    from vgglab.data.config import AugmentConfig
    from vgglab.train.config import OptimConfig, ScheduleConfig
    from vgglab.train.loop import maybe_compile, train_one_epoch
    from vgglab.train.optim import Schedule, build_optimizer
    from vgglab.train.state import TrainState

    ds = _dataset(data_root)
    torch.manual_seed(0)
    perm = torch.randperm(len(ds.train))[: (warmup + steps) * BATCH]
    dev = torch.device(device)
    loaders = [
        BatchLoader(
            Split(ds.train.x[part], ds.train.y[part]),
            BATCH,
            image_size=32,
            norm=Normalization.of(ds.stats),
            device=dev,
            augment=AugmentConfig(crop="pad", padding=4, flip=True),
            shuffle=True,
            drop_last=True,
            channels_last=channels_last,
        )
        for part in (perm[: warmup * BATCH], perm[warmup * BATCH :])
    ]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("vgg16_cifar").to(dev, memory_format=fmt)
    opt = build_optimizer(model, OptimConfig(lr=1e-3, momentum=0.9, weight_decay=5e-4))
    step_model = maybe_compile(model, compile_)
    with PeakRSS() as mem:
        for _i, loader in enumerate(loaders):  # warm-up steps (and compilation), then the timed ones
            sched = Schedule(opt, ScheduleConfig(name="none"), len(loader), 1, "max")
            _sync(device)
            t0 = time.perf_counter()
            train_one_epoch(step_model, loader, TrainState(model, opt, sched), precision=precision)
            _sync(device)
            seconds = time.perf_counter() - t0
    return {"images_per_s": steps * BATCH / seconds, "peak_rss_mb": mem.peak / 2**20}


def _compile_arg(text: str):
    return {"false": False, "true": True}.get(text, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("VGGLAB_CIFAR10"), help="CIFAR-10 (default: $VGGLAB_CIFAR10)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (batch 128)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each arm, alternating")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]; both arms run there")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="vgglab arm's precision")
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="vgglab arm's memory layout")
    ap.add_argument("--nchw", dest="channels_last", action="store_const", const="off", help="same as --channels-last off")
    ap.add_argument(
        "--compile",
        default="false",
        choices=["false", "true", "default", "reduce-overhead", "max-autotune"],
        help="vgglab arm's train.compile",
    )
    ap.add_argument("--arm", choices=["tutorial", "vgglab"], help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if not args.data_root:
        sys.exit("train_throughput: error: no CIFAR-10: pass --data-root PATH or set VGGLAB_CIFAR10")
    if args.arm == "tutorial":
        print(json.dumps(arm_tutorial(args.data_root, args.steps, args.warmup, args.device)))
        return
    if args.arm == "vgglab":
        print(
            json.dumps(
                arm_vgglab(
                    args.data_root,
                    args.steps,
                    args.warmup,
                    args.device,
                    args.precision,
                    args.channels_last == "on",
                    _compile_arg(args.compile),
                )
            )
        )
        return

    import torch

    from vgglab import create_model
    from vgglab.machine import machine_label
    from vgglab.speed import resolve_speed

    _dataset(args.data_root)  # decode and cache once, outside the timed runs
    cl = {"auto": "auto", "on": True, "off": False}[args.channels_last]
    speed = resolve_speed(args.precision, cl, create_model("vgg16_cifar"), BATCH, torch.device(args.device))
    print(machine_label(speed.machine))
    print(f"vgglab arm: {speed.header(args.precision, cl)}, compile {args.compile}", flush=True)
    if speed.warning:
        print(speed.warning, flush=True)
    results = {"tutorial": [], "vgglab": []}
    for r in range(args.repeats):
        for arm in ("tutorial", "vgglab"):
            cmd = [
                sys.executable,
                __file__,
                "--arm",
                arm,
                "--data-root",
                args.data_root,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
                "--precision",
                speed.precision,
                "--channels-last",
                "on" if speed.channels_last else "off",
                "--compile",
                args.compile,
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res = json.loads(out)
            results[arm].append(res)
            print(
                f"run {r + 1} {arm:<8} {res['images_per_s']:7.1f} images/s   peak RSS (process tree) {res['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
    a = statistics.median(x["images_per_s"] for x in results["tutorial"])
    b = statistics.median(x["images_per_s"] for x in results["vgglab"])
    mem_a = max(x["peak_rss_mb"] for x in results["tutorial"])
    mem_b = max(x["peak_rss_mb"] for x in results["vgglab"])
    layout = "channels_last" if speed.channels_last else "NCHW"
    print(f"tutorial (PIL + DataLoader x4 workers, fp32 NCHW, {args.device}): {a:.1f} images/s, peak {mem_a:.0f} MB")
    print(
        f"vgglab ({speed.precision}, {layout}, compile {args.compile}, batched loader, {args.device}): {b:.1f} images/s, peak {mem_b:.0f} MB"
    )
    print(f"memory: vgglab/tutorial {mem_b / mem_a:.2f}")
    print(f"ratio: {b / a:.2f}")


if __name__ == "__main__":
    main()
