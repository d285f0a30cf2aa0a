"""``vgglab data``: look at a dataset before training: sizes, classes, statistics, samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset
from ..data.config import AugmentConfig, DataConfig
from ..data.errors import DataError
from ..data.stream import StreamSplit, make_loader
from ..files import check_output_dir
from ..memory import check_fits, human
from .plots import plot_image_grid


def describe_data(
    data: DataConfig, augment: AugmentConfig, out: str | Path | None = None, per_class: int = 8, seed: int = 0
) -> dict:
    ds = load_dataset(data, augment)
    st, norm = ds.stats, ds.normalization(augment)
    norm_mean, norm_std = normalized_sample_stats(ds, norm)
    info: dict[str, Any] = {
        "dataset": data.dataset,
        "splits": {"train": len(ds.train), "val": len(ds.val) if ds.val is not None else 0, "test": len(ds.test)},
        "classes": ds.classes,
        "counts": {
            name: torch.bincount(s.y, minlength=ds.num_classes).tolist()
            for name, s in (("train", ds.train), ("val", ds.val), ("test", ds.test))
            if s is not None
        },
        "image_size": ds.image_size,
        "stored_size": ds.store_size,
        "channels": ds.in_chans,
        "mean": st.mean.tolist(),
        "std": st.std.tolist(),
        "normalized_mean_sample": norm_mean,  # close to 0 (and std to 1 when standardising)
        "normalized_std_sample": norm_std,
        "pca_eigenvalues": st.eigvals.tolist(),
        "pca_eigenvectors": st.eigvecs.tolist(),
        "skipped_files": len(ds.skipped),
        "cache_file": str(ds.cache_file),
        "storage": ds.storage,
        "storage_note": ds.storage_note,
        # what each storage holds in memory: memory the decoded squares, stream one batch per worker
        "memory_bytes": {
            "memory": sum(len(s) for s in (ds.train, ds.val, ds.test) if s is not None) * ds.in_chans * ds.store_size**2,
            "stream": 0,
        },
    }
    if ds.storage == "stream":
        info["sides"] = {
            name: _side_stats(s.sides)
            for name, s in (("train", ds.train), ("val", ds.val), ("test", ds.test))
            if isinstance(s, StreamSplit)
        }
    if out is not None:
        out = check_output_dir(out)
        g = torch.Generator().manual_seed(seed)
        idx = torch.cat(
            [
                (ds.train.y == k).nonzero().flatten()[torch.randperm(int((ds.train.y == k).sum()), generator=g)[:per_class]]
                for k in range(ds.num_classes)
            ]
        )
        sample = ds.train.subset(idx)
        # one float32 batch of the sample, the augmentation's working copies and the figure: ~4 copies
        check_fits(
            f"the sample grids ({len(idx)} images of {ds.image_size}x{ds.image_size})",
            16 * len(idx) * ds.in_chans * ds.image_size**2,
            "lower data.image_size, or leave out --out (only the grids hold their images at once)",
        )
        plain = make_loader(sample, len(idx), image_size=ds.image_size, norm=norm)
        aug = make_loader(sample, len(idx), image_size=ds.image_size, norm=norm, augment=augment, pca=st, seed=seed)
        titles = [ds.classes[int(y)] for y in sample.y]
        for name, ld in (("samples.png", plain), ("samples_augmented.png", aug)):
            xb, _ = next(iter(ld))
            shown = norm.invert(xb)
            plot_image_grid(
                shown,
                titles,
                out / name,
                cols=per_class,
                suptitle="training samples" + (" after augmentation" if "aug" in name else ""),
            )
        info["pictures"] = [str(out / "samples.png"), str(out / "samples_augmented.png")]
    return info


SAMPLE_IMAGES = 512  # images whose normalised pixels are summarised (spread evenly over the split)
SAMPLE_VALUES = 2**22  # float values per batch at most (16 MB), whatever the image side


def normalized_sample_stats(ds, norm, n: int = SAMPLE_IMAGES) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images as training normalises them, over a fixed
    sample of ``n`` images, accumulated batch by batch: memory bounded by :data:`SAMPLE_VALUES`
    whatever the number and size of the images (one batch of all of them took 23 GB at 448 px)."""
    idx = torch.linspace(0, len(ds.train) - 1, min(n, len(ds.train))).round().long().unique()
    batch = max(1, SAMPLE_VALUES // (ds.in_chans * ds.image_size**2))
    # decoded in this process: batches received from a loader worker grew this process's RSS by
    # ~10 MB each at 448 px (shared-memory transfers; 3.4 GB over the sample), in-process stays flat
    loader = make_loader(ds.train.subset(idx), batch, image_size=ds.image_size, norm=norm, workers=0)
    total = sq = None
    count = 0
    for x, _ in loader:
        x = x.double()
        s, q = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.numel() // x.shape[1]
    if total is None or sq is None:
        raise DataError("no training images to measure the normalised pixels of")
    mean = total / count
    std = ((sq / count - mean**2) * count / max(count - 1, 1)).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def format_data(info: dict) -> str:
    lines = [
        f"{info['dataset']}: train {info['splits']['train']}, val {info['splits']['val']}, test {info['splits']['test']}; "
        f"{len(info['classes'])} classes; images {info['channels']}x{info['image_size']}x{info['image_size']} (stored at {info['stored_size']})",
        "per-channel mean " + ", ".join(f"{v:.4f}" for v in info["mean"]) + "; std " + ", ".join(f"{v:.4f}" for v in info["std"]),
        "after normalisation (sample): mean "
        + ", ".join(f"{v:+.3f}" for v in info["normalized_mean_sample"])
        + "; std "
        + ", ".join(f"{v:.3f}" for v in info["normalized_std_sample"]),
        "PCA colour eigenvalues " + ", ".join(f"{v:.5f}" for v in info["pca_eigenvalues"]),
        f"{'class':<16}" + "".join(f"{s:>8}" for s in info["counts"]),
    ]
    for k, c in enumerate(info["classes"]):
        lines.append(f"{c:<16}" + "".join(f"{info['counts'][s][k]:>8}" for s in info["counts"]))
    if info["skipped_files"]:
        lines.append(f"skipped unreadable files: {info['skipped_files']}")
    for name, s in info.get("sides", {}).items():
        lines.append(f"{name} image sides (shorter, longer): min {s['min']}, median {s['median']}, max {s['max']}")
    lines.append(
        f"storage: {info['storage_note'] or info['storage']}; memory storage needs {human(info['memory_bytes']['memory'])}, "
        "stream holds only its index and one batch per worker"
    )
    return "\n".join(lines)


def _side_stats(sides: torch.Tensor) -> dict:
    """(shorter, longer) sides of a split's images: min, median, max."""
    short, long_ = sides.min(1).values, sides.max(1).values
    return {k: [int(f(short)), int(f(long_))] for k, f in (("min", torch.min), ("median", torch.median), ("max", torch.max))}
