"""``fit``: config -> data -> model -> epochs -> checkpoints -> the final test, as named parts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import BatchLoader, Dataset, Normalization, load_dataset
from ..errors import VgglabError
from ..files import write_text
from ..models import VGG
from ..run.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, save_safetensors
from ..run.context import DistInfo, Run
from ..run.files import BEST, CONFIG, LAST, RESULTS, WEIGHTS
from ..run.lock import RunLock
from ..run.meta import RunMeta
from ..run.record import describe_changes, read_record, write_record
from ..speed import SpeedChoice, resolve_speed
from .config import save_config
from .distributed import barrier, broadcast_object, main_process, per_rank_batch, teardown
from .freeze import FreezePlan
from .linear_probe import fit_probe
from .loaders import eval_loader, make_loaders
from .loop import TrainingDiverged, evaluate_batches, maybe_compile, train_one_epoch
from .optim import start_momentum
from .prepare import prepare_model, read_run_config, start_process, training_normalization
from .reporter import Reporter
from .state import TrainState


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict  # best_epoch, val_top1, test_loss, test_top1, ... (fractions)


def fit(config=None, overrides=None, *, out=None, resume=None, log=print) -> FitResult:
    """Train as configured; returns the run directory and final metrics.

    ``config``: a YAML path, a dict or a Config; ``overrides``: ``["optim.lr=0.05", ...]`` or a
    dict. ``resume``: a run directory to continue (its config.yaml is used, with overrides that
    :data:`~vgglab.train.config.RESUME_KEYS` allows). The run directory is locked while it runs.
    """
    lock = RunLock(log)
    try:
        if resume is not None and main_process():
            if not Path(resume).is_dir():
                raise VgglabError(f"cannot resume {resume}: no such run directory")
            lock.acquire(resume)  # before reading: a second resume of the same run stops here
        return _fit(config, overrides, out, resume, log, lock)
    finally:
        lock.release()


def _fit(config, overrides, out, resume, log, lock: RunLock) -> FitResult:
    cfg, ckpt = read_run_config(config, overrides, resume, log)
    if cfg.probe.enabled:  # descriptors of a frozen network and a fitted head: no epochs to run
        return FitResult(*fit_probe(cfg, out, resume, log, lock))
    info, device = start_process(cfg)
    run = Run(cfg, ckpt, info, device, log if info.is_main else _quiet, lock)
    recorded = read_record(Path(resume)) if resume is not None else None
    with run.clock("data"):
        ds = load_dataset(cfg.data, cfg.augment, device, keep_val=recorded["val"] if recorded else None)
    tree_changes = describe_changes(recorded, ds) if recorded else None
    norm = training_normalization(cfg, ds)
    model = prepare_model(run, ds, norm, out, resume)
    if info.is_main and (recorded is None or tree_changes):
        write_record(run.out, ds)  # the next resume compares with the tree as this start found it
    freeze = FreezePlan(model, cfg.train)
    freeze.apply((ckpt["epoch"] if ckpt is not None else 0) + 1)  # the speed probe times the steps the first epoch takes
    speed = decide_speed(run, model)
    model = model.to(device).to(memory_format=torch.channels_last if speed.channels_last else torch.contiguous_format)
    train_loader, val_loader = make_loaders(run, ds, norm, speed.channels_last)
    state = TrainState.create(model, cfg, len(train_loader), val_loader is not None, speed.precision)
    reporter = Reporter(cfg, run.out, info.is_main, run.log)
    if ckpt is not None:
        state.load_state_dict(ckpt)
        reporter.resumed(state.epoch, changed_from(cfg, state.epoch + 1))
        run.log(f"resuming {run.out} after epoch {state.epoch}" + (f" with {reporter.changed}" if reporter.changed else ""))
    meta = RunMeta(tuple(ds.classes), ds.image_size, ds.store_size, model.config.to_dict(), norm)
    extra = {
        "speed": {
            "precision_setting": cfg.train.precision,
            "channels_last_setting": cfg.train.channels_last,
            "device": device.type,
            **speed.to_dict(),
        }
    }
    announce(run, model, ds, speed)
    if tree_changes:
        run.log(tree_changes)
    reporter.start_tracking()
    try:
        epochs = Epochs(run, state, freeze, train_loader, val_loader, reporter, speed.precision)
        for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
            row, improved = epochs.train_epoch(epoch)
            save_epoch(run, state, meta, extra, row, improved)
            reporter.end_epoch(row)  # after the checkpoint: a metrics row always has its last.pt
        state.release_training_memory()
        barrier(info)  # the selected checkpoint is written before any rank reads it
        result = final_test(run, ds, norm, speed, run.out / state.selection.checkpoint_name, reporter)
    except BaseException as exc:  # the tracked run ends as what happened; the error goes on up
        reporter.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    reporter.close()
    reporter.finish(result)
    teardown(info)
    return FitResult(run.out, result)


def changed_from(cfg, epoch: int) -> str | None:
    """``key=value`` of the settings a resume changed from ``epoch`` on (config.yaml's ``changes``)."""
    for change in cfg.changes or []:
        if change.get("epoch") == epoch:
            return " ".join(f"{k}={v}" for k, v in change["set"].items())
    return None


def announce(run: Run, model: VGG, ds: Dataset, speed: SpeedChoice) -> None:
    """The run's header: model, device, data, where it writes, and the speed settings chosen."""
    cfg = run.cfg
    run.log(
        f"{cfg.name}: {model.config.name} ({sum(p.numel() for p in model.parameters()):,} params) on {run.device}, "
        f"{cfg.data.dataset} train {len(ds.train)} / val {len(ds.val) if ds.val is not None else 0} / test {len(ds.test)} "
        f"(data ready in {ds.load_seconds:.1f}s) -> {run.out}"
    )
    run.log(speed.header(cfg.train.precision, cfg.train.channels_last))
    if ds.storage_note:
        run.log(ds.storage_note)
    if cfg.data.batch_size > len(ds.train):
        run.log(
            f"note: data.batch_size {cfg.data.batch_size} is larger than the training split ({len(ds.train):,} images): "
            f"each epoch is one batch of {len(ds.train):,}"
        )
    if cfg.train.test_tta != "none" and not cfg.augment.flip:
        run.log(
            f"note: train.test_tta {cfg.train.test_tta} mirrors test images, but this model trains without flips (augment.flip: false)"
        )
    if speed.warning:
        run.log(speed.warning)
    for note in cfg.notes_across_sections():
        run.log(note)


def decide_speed(run: Run, model: VGG) -> SpeedChoice:
    """Precision and memory layout, decided once by rank 0 (so every process trains alike) and
    recorded in config.yaml's ``resolved``, which is written here."""
    tc = run.cfg.train
    local_batch = per_rank_batch(run.cfg.data.batch_size, run.info)
    with run.clock("speed probe"):
        speed = broadcast_object(
            resolve_speed(
                tc.precision,
                tc.channels_last,
                model,
                local_batch,
                run.device,
                cache_dir=run.cfg.data.cache_dir,
                previous=run.cfg.resolved,
            )
            if run.info.is_main
            else None,
            run.info,
        )
    run.cfg.resolved = speed.to_dict()
    if run.info.is_main:
        save_config(run.cfg, run.out / CONFIG)
    return speed


class Epochs:
    """Runs one epoch at a time: freezing as planned, training, validating, stepping the
    schedule and the model selection. Keeps the DDP / compiled wrappers between epochs."""

    def __init__(
        self,
        run: Run,
        state: TrainState,
        freeze: FreezePlan,
        train: BatchLoader,
        val: BatchLoader | None,
        reporter: Reporter,
        precision: str,
    ):
        self.run, self.state, self.freeze, self.train, self.val = run, state, freeze, train, val
        self.reporter, self.precision = reporter, precision
        self.step_model: nn.Module | None = None
        self.wrapped_for: list[nn.Module] | None = None
        self.eval_model: nn.Module | None = None

    def train_epoch(self, epoch: int) -> tuple[dict, bool]:
        """Train and validate ``epoch``; returns its metrics row and whether its model is selected."""
        run, state, tc = self.run, self.state, self.run.cfg.train
        self.train.set_epoch(epoch)
        frozen = self.freeze.apply(epoch)
        if self.wrapped_for is None or len(self.wrapped_for) != len(frozen):
            # parts unfrozen now join optimiser groups that may already have momentum; and DDP
            # registers the parameters that need gradients when it is built: rebuild it
            start_momentum(state.optimizer)
            self.step_model, self.wrapped_for = _wrap(state.model, run.info, run.device, tc.compile), frozen
        lr = state.schedule.lr
        on_step = self.reporter.start_epoch(epoch, len(self.train), self.train.local_batch, lambda: state.schedule.lr)
        try:
            tr = train_one_epoch(
                self.step_model, self.train, state, train=tc, precision=self.precision, on_step=on_step, frozen=frozen
            )
            if state.lookahead is not None and epoch == tc.epochs:
                state.lookahead.finish()
        except TrainingDiverged as exc:
            last = run.out / LAST
            lr_key = "optim.muon_lr" if run.cfg.optim.muon else "optim.lr"  # with Muon, the filters' steps are muon_lr's
            if last.exists():
                how = (
                    f"the last good checkpoint is {last}; to go on with a lower {lr_key} or a train.grad_clip, start a new run "
                    f"from it: vgglab train --config {run.out / CONFIG} --init-from {last} --set {lr_key}=... --out NEW_DIR"
                )
            else:
                how = f"no checkpoint was written; restart it in place with vgglab train --resume {run.out} --set {lr_key}=... (or train.grad_clip=1)"
            raise TrainingDiverged(f"epoch {epoch}: {exc}; {how}") from None
        finally:
            seconds = self.reporter.end_training()
        run.clock.seconds["training"] += seconds
        state.epoch, state.step = epoch, state.step + len(self.train)
        va = None
        if self.val is not None:
            self.eval_model = self.eval_model or maybe_compile(state.eval_model, tc.compile)
            with run.clock("validation"):
                va = evaluate_batches(
                    self.eval_model,
                    self.val,
                    precision=self.precision,
                    progress=self.reporter.progress(self.val.local_total, f"validation {epoch}/{tc.epochs}"),
                )
        # Only validation (or training) metrics drive the schedule and model selection; the test split is untouched.
        monitored = state.selection.monitored(tr, va)
        state.schedule.step_epoch(monitored)
        improved = state.selection.update(epoch, monitored)
        row = {
            "epoch": epoch,
            "train_loss": tr["loss"],
            "train_top1": tr["top1"],
            "val_loss": va and va["loss"],
            "val_top1": va and va["top1"],
            "lr": lr,
            "seconds": seconds,
            "images_per_s": tr["n"] / seconds,
        }
        return row, improved


def save_epoch(run: Run, state: TrainState, meta: RunMeta, extra: dict, row: dict, improved: bool) -> None:
    """last.pt every epoch; best.pt (with a validation split) and model.safetensors when selected.
    One write per file, by rank 0, each atomic."""
    if not run.info.is_main:
        return
    ckpt = {**meta.to_dict(), **extra, **state.state_dict(), "config": run.cfg.to_dict(), "metrics": row}
    with run.clock("checkpoints"):
        save_checkpoint(ckpt, run.out / LAST)
        if improved:
            if state.selection.has_val:
                save_checkpoint(ckpt, run.out / BEST)
            save_safetensors(state.eval_model, meta, run.out / WEIGHTS, epoch=state.epoch, config=run.cfg.to_dict())


def final_test(run: Run, ds: Dataset, norm: Normalization, speed: SpeedChoice, checkpoint: Path, reporter: Reporter) -> dict:
    """Evaluate the selected checkpoint (best on validation, else the last) on the validation and
    test splits, once (on the test split also with ``train.test_tta`` when set); results.json."""
    t_start = time.perf_counter()
    cfg, device = run.cfg, run.device
    ckpt = load_checkpoint(checkpoint)
    fmt = torch.channels_last if speed.channels_last else torch.contiguous_format
    model = maybe_compile(model_from_checkpoint(ckpt).to(device).to(memory_format=fmt), cfg.train.compile)
    result = {"best_epoch": ckpt["epoch"]}
    if ds.val is not None:
        loader = eval_loader(run, ds, ds.val, norm, speed.channels_last)
        va = evaluate_batches(
            model, loader, precision=speed.precision, progress=reporter.progress(loader.local_total, "final validation")
        )
        result.update(val_loss=va["loss"], val_top1=va["top1"])
    tta = cfg.train.test_tta
    # with TTA one pass gives both: the plain center crop is the TTA's first view
    loader = eval_loader(run, ds, ds.test, norm, speed.channels_last)
    te = evaluate_batches(
        model, loader, precision=speed.precision, tta=tta, progress=reporter.progress(loader.local_total, "test")
    )
    plain = "" if tta == "none" else "plain_"
    result.update(test_loss=te[f"{plain}loss"], test_top1=te[f"{plain}top1"], test_n=te["n"])
    if tta != "none":
        result[f"test_top1_{tta}"] = te["top1"]
    run.clock.seconds["final test"] += time.perf_counter() - t_start
    result["timings"] = run.clock.summary()
    if run.info.is_main:
        write_text(run.out / RESULTS, json.dumps(result, indent=2))
    if "val_top1" in result:
        run.log(f"best epoch {result['best_epoch']}: val top-1: {100 * result['val_top1']:.2f}%")
    run.log(
        f"test top-1: {100 * result['test_top1']:.2f}%"
        + (f", with TTA {tta}: {100 * result[f'test_top1_{tta}']:.2f}%" if tta != "none" else "")
    )
    return result


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0: they train and stay silent."""


def _wrap(model: nn.Module, info: DistInfo, device: torch.device, compile_: bool | str) -> nn.Module:
    """The module the training steps call: DDP under torchrun, optionally compiled."""
    wrapped: nn.Module = model
    if info.enabled:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return maybe_compile(wrapped, compile_)
