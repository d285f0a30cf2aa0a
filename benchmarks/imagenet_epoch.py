"""How long the paper's ImageNet training takes on this device: vgg16 at 224 trained from a
streamed tree of generated ImageNet-like JPEGs (333-500 px, ~100 kB), the paper's augmentation
(S = 256 rescale, random 224 crop, flip, PCA colour noise), SGD momentum, for a fixed number of
steps; printed as images/s, hours per ImageNet epoch (1,281,167 images) and for the paper's 74
epochs. The baseline in the same process is the same step on batches already on the device (no
decoding): their ratio says whether decoding keeps up with the model (1.00: it does).

    python benchmarks/imagenet_epoch.py [--device auto] [--precision auto] [--batch 64] [--steps 10]
                                        [--workers auto] [--width 1.0] [--dense-eval]

--dense-eval also times the paper's dense evaluation at Q = 256, 384, 512 (flips, 3 scales) of a
vgg16 over the generated validation images, and prints the peak GPU memory on CUDA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402

IMAGENET_TRAIN = 1_281_167
PAPER_EPOCHS = 74


def time_steps(model, opt, batches, steps: int, device, precision: str) -> float:
    """Images/s over ``steps`` training steps after one warm-up step (workers started, kernels chosen)."""
    from vgglab.device import autocast

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    it = iter(batches)
    step(*next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto: bf16 on CUDA, the speed probe's choice on a CPU; or fp32, bf16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", default="auto")
    ap.add_argument("--width", type=float, default=1.0, help="conv width multiplier (1.0: vgg16 itself)")
    ap.add_argument("--images", type=int, default=0, help="JPEGs in the generated tree (default: enough for the steps)")
    ap.add_argument("--dense-eval", action="store_true")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.data import load_dataset
    from vgglab.data.config import AugmentConfig, DataConfig
    from vgglab.data.stream import make_loader
    from vgglab.device import resolve_device
    from vgglab.machine import machine_label
    from vgglab.models import create_model
    from vgglab.speed import resolve_speed

    device = resolve_device(a.device)
    n_images = a.images or a.batch * (a.steps + 2)
    tree = make_tree(Path(a.root) / f"imagenet-like-{n_images}", n_images, n_test=max(8, a.batch), classes=10)
    aug = AugmentConfig(crop="scale", scale_min=256, scale_max=256, flip=True, pca_std=0.1, normalize="subtract_mean")
    model = create_model("vgg16", num_classes=1000, width=a.width, init="paper").to(device)
    speed = resolve_speed(a.precision, "auto", model, a.batch, device)
    fmt = torch.channels_last if speed.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    workers = a.workers if a.workers == "auto" else int(a.workers)
    with tempfile.TemporaryDirectory() as cache:
        ds = load_dataset(
            DataConfig(
                dataset="imagefolder",
                root=str(tree),
                image_size=224,
                storage="stream",
                cache_dir=cache,
                val_size=0,
                workers=workers,
            ),
            aug,
        )
        loader = make_loader(
            ds.train,
            a.batch,
            image_size=224,
            norm=ds.normalization(aug),
            augment=aug,
            pca=ds.stats,
            shuffle=True,
            drop_last=True,
            device=device,
            channels_last=speed.channels_last,
            workers=workers,
        )
        streamed = time_steps(model, opt, loader, a.steps, device, speed.precision)
        x, y = next(iter(loader))  # the baseline: one real batch, reused, already on the device
        synthetic = time_steps(model, opt, iter(lambda: (x, y), None), a.steps, device, speed.precision)
        hours = IMAGENET_TRAIN / streamed / 3600
        print(f"machine: {machine_label()}, device {device}")
        print(
            f"vgg16 (width {a.width}) at 224, batch {a.batch}, {speed.precision}, "
            f"{'channels_last' if speed.channels_last else 'NCHW'}, decoding workers {loader.workers}, {a.steps} timed steps"
        )
        print(
            f"streamed training {streamed:.3g} images/s; same step on on-device batches {synthetic:.3g} images/s; "
            f"streamed/on-device {streamed / synthetic:.2f}"
        )
        print(
            f"implied: {hours:.2f} h per ImageNet epoch ({IMAGENET_TRAIN:,} images), "
            f"{hours * PAPER_EPOCHS:.1f} h = {hours * PAPER_EPOCHS / 24:.1f} days for the paper's {PAPER_EPOCHS} epochs"
        )
        if a.dense_eval:
            dense_eval(model, ds, device, speed.precision, fmt)


def dense_eval(model, ds, device, precision: str, fmt) -> None:
    """The paper's dense evaluation (Q = 256, 384, 512, flips) over the test split's whole images."""
    from vgglab.data.stream import full_image_batches
    from vgglab.device import autocast
    from vgglab.evaluate.tta import dense_head, scale_probs

    model.eval()
    norm = ds.normalization()
    head = dense_head(model)
    scales = [256, 384, 512]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n, t = 0, time.perf_counter()
    with torch.inference_mode():
        for rows, batches in full_image_batches(ds.test, scales, 32 * 224 * 224):
            scaled = {q: norm(b, device).contiguous(memory_format=fmt) for q, b in zip(scales, batches, strict=True)}
            with autocast(device, precision):
                scale_probs(model, scaled, "dense", 224, dense=head)
            n += len(rows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - t)
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(
        f"dense evaluation, Q = 256, 384, 512 with flips (6 passes per image): {n} images, {rate:.3g} images/s{peak}; "
        f"implied {50_000 / rate / 3600:.2f} h for ImageNet's 50,000 validation images"
    )


if __name__ == "__main__":
    main()
