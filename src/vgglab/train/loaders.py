"""The loaders a training run reads: its shuffled, augmented training batches and its in-order evaluation ones."""

from __future__ import annotations

from ..data import BatchLoader, Dataset, Normalization
from ..data.stream import make_loader
from ..run.context import Run


def make_loaders(run: Run, ds: Dataset, norm: Normalization, channels_last: bool) -> tuple[BatchLoader, BatchLoader | None]:
    """The training loader (shuffled, augmented, the ragged batch as :func:`drops_ragged_batch` says)
    and the validation one."""
    cfg, info = run.cfg, run.info
    train = make_loader(
        ds.train,
        cfg.data.batch_size,
        image_size=ds.image_size,
        norm=norm,
        augment=cfg.augment,
        pca=ds.stats,
        shuffle=True,
        drop_last=drops_ragged_batch(len(ds.train), cfg.data.batch_size, info.world_size),
        seed=cfg.train.seed,
        device=run.device,
        channels_last=channels_last,
        shard=(info.rank, info.world_size),
        workers=cfg.data.workers,
    )
    return train, eval_loader(run, ds, ds.val, norm, channels_last) if ds.val is not None else None


RAGGED_KEPT_BELOW = 50  # full batches per epoch: below this the ragged last batch is trained on, not dropped


def drops_ragged_batch(n: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether an epoch leaves out its ragged last batch. Kept on a small training split (fewer than
    :data:`RAGGED_KEPT_BELOW` full batches: 29 of 221 photos would sit out every epoch at batch 32),
    dropped on a large one, where it is a few per cent of a shuffled epoch and a short batch would
    only add a step of a noisier gradient; always dropped when it would hold a single image (BatchNorm
    cannot normalise one) or under several processes (each rank's share must hold images)."""
    ragged = n % batch_size
    return ragged == 0 or ragged < 2 or world_size > 1 or n // batch_size >= RAGGED_KEPT_BELOW


def eval_loader(run: Run, ds: Dataset, split, norm: Normalization, channels_last: bool) -> BatchLoader:
    """Center crops of ``split`` in order, this process's shard of each batch."""
    return make_loader(
        split,
        run.cfg.data.eval_batch_size,
        image_size=ds.image_size,
        norm=norm,
        device=run.device,
        channels_last=channels_last,
        shard=(run.info.rank, run.info.world_size),
        workers=run.cfg.data.workers,
    )
