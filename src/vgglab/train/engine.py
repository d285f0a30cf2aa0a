"""The training loop: ``fit`` wires config -> data -> model -> epochs -> checkpoints."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import BatchLoader, Dataset, load_dataset
from ..errors import VgglabError
from ..models import VGG, VGGConfig, create_model, create_model_from_spec
from .checkpoint import load_checkpoint, save_checkpoint, save_safetensors
from .config import Config, ConfigError, load_config, save_config
from .distributed import DistInfo, barrier, broadcast_object, per_rank_batch, setup, teardown
from .loop import (EMA, Lookahead, TrainingDiverged, evaluate, freeze_bn_scales, frozen_modules, maybe_compile, set_frozen,
                   train_one_epoch)
from .optim import Schedule, build_optimizer
from .run import MetricsLog, PhaseClock, new_run_dir, progress_mode
from .speed import resolve_speed


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict  # best_epoch, val_top1, test_loss, test_top1, ... (fractions)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r}: CUDA is not available on this machine; use device: auto or cpu")
    return dev


def build_model_for(cfg: Config, ds: Dataset) -> VGG:
    """The configured model, sized for the dataset (classes, channels, input size) unless set."""
    fitted = {"num_classes": ds.num_classes, "in_chans": ds.in_chans, "input_size": ds.image_size}
    if cfg.model.spec is not None:
        spec = {**fitted, **cfg.model.spec}
        model = create_model_from_spec(VGGConfig.from_dict(spec, "model.spec"))
    else:
        model = create_model(cfg.model.name, **{**fitted, **cfg.model.options})
    mc = model.config
    if mc.num_classes != ds.num_classes or mc.in_chans != ds.in_chans:
        raise ConfigError(
            f"model has {mc.num_classes} classes / {mc.in_chans} channels but the dataset has "
            f"{ds.num_classes} / {ds.in_chans}: remove model.options.num_classes/in_chans to size it from the data"
        )
    return model


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(ckpt: dict, model: VGG, classes: list[str]) -> None:
    saved = ckpt["model_config"]
    now = model.config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"cannot resume: the model differs from the checkpoint's in {', '.join(diff)}; resume with the run's own config.yaml")
    if ckpt["classes"] != classes:
        raise ConfigError("cannot resume: the dataset's classes differ from the checkpoint's")


def fit(config=None, overrides=None, *, out=None, resume=None, log=print) -> FitResult:
    """Train as configured; returns the run directory and final metrics.

    ``config``: a YAML path, a dict or a Config; ``overrides``: ``["optim.lr=0.05", ...]`` or a
    dict. ``resume``: a run directory to continue (its config.yaml is used, with overrides).
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "last.pt").is_file():
            raise VgglabError(f"cannot resume {run_dir}: it has no config.yaml and last.pt (is it a vgglab run directory?)")
        cfg = load_config(run_dir / "config.yaml", overrides)
        if config is not None:
            given = load_config(config, overrides)
            if given.model != cfg.model or given.data.dataset != cfg.data.dataset:
                raise ConfigError(f"cannot resume {run_dir} with a different model or dataset; omit --config to use the run's own")
        ckpt = load_checkpoint(run_dir / "last.pt")
    else:
        cfg = load_config(config, overrides)
        ckpt = None
    tc = cfg.train
    info, device_name = setup(tc.device)
    if not info.is_main:
        log = _quiet
    device = resolve_device(device_name)
    if tc.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn: PyTorch's SyncBatchNorm is CUDA-only; set it false on CPU (each process then keeps its own BatchNorm statistics)")
    local_batch = per_rank_batch(cfg.data.batch_size, info)
    if tc.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision fp16 needs CUDA (its grad scaler is CUDA-only); use bf16 on CPU")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    clock = PhaseClock()
    with clock("data"):
        ds = load_dataset(cfg.data)
    model = build_model_for(cfg, ds)
    if tc.sync_bn and info.enabled:  # same parameter names, so checkpoints stay interchangeable
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ckpt is not None:
        _check_resumable(ckpt, model, ds.classes)
    if resume is None:
        run_dir = broadcast_object(new_run_dir(out, cfg.name) if info.is_main else None, info)
        if tc.init_from:
            from .transfer import init_from

            report = init_from(model, tc.init_from, tc.init_mode, tc.init_match, tc.init_fold_fc6)
            if info.is_main:
                (run_dir / "init_report.txt").write_text(report.format() + "\n")
            log(f"initialised from {tc.init_from} ({tc.init_mode}):\n{report.format()}")
    aug = cfg.augment
    if aug.mean is not None or aug.std is not None:  # e.g. ImageNet statistics for a pretrained model
        ds.stats = dataclasses.replace(
            ds.stats, mean=torch.tensor(aug.mean, dtype=torch.float32) if aug.mean is not None else ds.stats.mean,
            std=torch.tensor(aug.std, dtype=torch.float32) if aug.std is not None else ds.stats.std)
    if resume is None and not tc.init_from and model.config.whiten:
        with clock("whitening"):
            fit_whitening(model, ds, cfg)
    frozen = frozen_modules(model, tc.freeze)
    # decided once, by rank 0, so that every process trains alike
    with clock("speed probe"):
        speed = broadcast_object(resolve_speed(tc.precision, tc.channels_last, model, local_batch, device, cache_dir=cfg.data.cache_dir,
                                               previous=cfg.resolved) if info.is_main else None, info)
    cfg.resolved = speed.to_dict()
    precision, channels_last = speed.precision, speed.channels_last
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)

    train_loader = BatchLoader(ds.train, cfg.data.batch_size, image_size=ds.image_size, stats=ds.stats, augment=cfg.augment,
                               normalize=cfg.augment.normalize, device=device, seed=tc.seed, channels_last=channels_last,
                               rank=info.rank, world_size=info.world_size)
    eval_kw = dict(image_size=ds.image_size, stats=ds.stats, normalize=cfg.augment.normalize, device=device,
                   channels_last=channels_last, rank=info.rank, world_size=info.world_size)
    val_loader = BatchLoader(ds.val, cfg.data.eval_batch_size, **eval_kw) if ds.val is not None else None
    has_val = val_loader is not None
    optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size)
    schedule = Schedule(optimizer, cfg.schedule, len(train_loader), tc.epochs, "max" if has_val else "min")
    lookahead = None
    if tc.lookahead_every:
        lookahead = Lookahead(model, tc.lookahead_every, tc.lookahead_decay, tc.lookahead_power, len(train_loader) * tc.epochs)
    ema = None
    if tc.ema_decay:
        ema = EMA(model, tc.ema_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    metrics_log = MetricsLog(run_dir / "metrics.csv")

    start_epoch, step, best = 0, 0, {"value": None, "epoch": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        if ema is not None and ckpt.get("ema_full"):
            ema.load_state_dict(ckpt["ema_full"])
        if lookahead is not None and ckpt.get("lookahead"):
            lookahead.load_state_dict(ckpt["lookahead"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, step, best = ckpt["epoch"], ckpt["step"], ckpt["best"]
        if info.is_main:
            metrics_log.truncate(start_epoch)
        log(f"resuming {run_dir} after epoch {start_epoch}")

    writer = _tensorboard(cfg, run_dir) if info.is_main else None
    meta = {
        "classes": ds.classes, "image_size": ds.image_size, "eval_resize": ds.store_size, "model_config": model.config.to_dict(),
        "normalization": {"mode": cfg.augment.normalize, "mean": ds.stats.mean.tolist(), "std": ds.stats.std.tolist()},
        "speed": {"precision_setting": tc.precision, "channels_last_setting": tc.channels_last, "device": device.type, **speed.to_dict()},
    }
    log(f"{cfg.name}: {model.config.name} ({sum(p.numel() for p in model.parameters()):,} params) on {device}, "
        f"{cfg.data.dataset} train {len(ds.train)} / val {len(ds.val) if ds.val is not None else 0} / test {len(ds.test)} "
        f"(data ready in {ds.load_seconds:.1f}s) -> {run_dir}")
    log(speed.header(tc.precision, tc.channels_last))
    if speed.warning:
        log(speed.warning)

    mode = progress_mode(cfg.log.progress) if info.is_main else "none"
    step_model, wrapped_for, compiled_eval = None, None, None
    for epoch in range(start_epoch + 1, tc.epochs + 1):
        train_loader.set_epoch(epoch)
        still_frozen = frozen if tc.unfreeze_after is None or epoch <= tc.unfreeze_after else []
        set_frozen(frozen, True)
        set_frozen([m for m in frozen if m not in still_frozen], False)
        if tc.freeze_bn_scale:
            freeze_bn_scales(model)
        if wrapped_for is None or len(wrapped_for) != len(still_frozen):
            # DDP registers the parameters that need gradients when it is built: rebuild after unfreezing
            step_model, wrapped_for = _wrap(model, info, device, tc.compile), list(still_frozen)
        t0 = time.perf_counter()
        bar = _bar(mode, len(train_loader), f"epoch {epoch}/{tc.epochs}")
        on_step = None
        if bar is not None:
            def on_step(loss, top1, seen, bar=bar):
                bar.update(min(bar.total, -(-seen // train_loader.local_batch)) - bar.n)
                bar.set_postfix(loss=f"{loss:.3f}", top1=f"{100 * top1:.2f}%", lr=f"{schedule.lr:.3g}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        lr = schedule.lr
        try:
            tr = train_one_epoch(step_model, train_loader, optimizer, schedule, device=device, precision=precision,
                                 label_smoothing=tc.label_smoothing, grad_clip=tc.grad_clip, scaler=scaler, ema=ema,
                                 lookahead=lookahead, on_step=on_step, frozen=still_frozen)
            if lookahead is not None and epoch == tc.epochs:
                lookahead.finish()
        except TrainingDiverged as exc:
            kept = f"the last good checkpoint is {run_dir / 'last.pt'}" if (run_dir / "last.pt").exists() else "no checkpoint was written"
            raise TrainingDiverged(f"epoch {epoch}: {exc}; {kept}. Lower optim.lr or set train.grad_clip") from None
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        clock.seconds["training"] += seconds
        step += len(train_loader)
        eval_model = ema.module if ema is not None else model
        if has_val and compiled_eval is None:
            compiled_eval = maybe_compile(eval_model, tc.compile)
        with clock("validation"):
            va = evaluate(compiled_eval, val_loader, device=device, precision=precision) if has_val else None
        # Only validation (or training) metrics drive the schedule and model selection; the test split is untouched.
        monitored = va["top1"] if has_val else tr["loss"]
        schedule.step_epoch(monitored)
        # with a validation split the best epoch on it is selected (best.pt); without one, the last (last.pt)
        improved = (best["value"] is None or monitored > best["value"]) if has_val else epoch == tc.epochs
        if improved:
            best = {"value": monitored, "epoch": epoch}
        row = {"epoch": epoch, "train_loss": tr["loss"], "train_top1": tr["top1"], "val_loss": va and va["loss"],
               "val_top1": va and va["top1"], "lr": lr, "seconds": seconds, "images_per_s": tr["n"] / seconds}
        state = {
            **meta, "model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
            "ema_full": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
            "lookahead": lookahead.state_dict() if lookahead is not None else None,
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "epoch": epoch, "step": step, "best": best, "config": cfg.to_dict(),
            "metrics": row,
        }
        if info.is_main:  # one write per save, by rank 0
            with clock("checkpoints"):
                save_checkpoint(state, run_dir / "last.pt")
                if improved:
                    if has_val:
                        save_checkpoint(state, run_dir / "best.pt")
                    save_safetensors(eval_model, {**meta, "epoch": epoch}, run_dir / "model.safetensors")
            metrics_log.append(row)
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    writer.add_scalar(k, v, epoch)
        if mode != "none":
            val = f"  val loss {va['loss']:.4f} top-1 {100 * va['top1']:.2f}%" if has_val else ""
            log(f"epoch {epoch}/{tc.epochs}  train loss {tr['loss']:.4f} top-1 {100 * tr['top1']:.2f}%{val}  "
                f"lr {lr:.3g}  {row['images_per_s']:.0f} img/s  {seconds:.1f}s")
    if writer is not None:
        writer.close()
    barrier(info)  # the selected checkpoint is written before any rank reads it
    selected = run_dir / ("best.pt" if has_val else "last.pt")
    result = final_test(run_dir, ds, cfg, eval_kw, log, write=info.is_main, precision=precision, checkpoint=selected, clock=clock)
    teardown(info)
    return FitResult(run_dir, result)


def fit_whitening(model: VGG, ds: Dataset, cfg: Config, n: int = 5000) -> None:
    """Set the patch-whitening layer from the first ``n`` training images, normalised as training sees them."""
    loader = BatchLoader(ds.train, n, image_size=ds.image_size, stats=ds.stats, normalize=cfg.augment.normalize, channels_last=False)
    images, _ = next(iter(loader))
    model.features.whiten.fit(images)


def final_test(run_dir: Path, ds: Dataset, cfg: Config, kw: dict, log=print, write: bool = True, precision: str = "fp32",
               checkpoint: Path | None = None, clock: PhaseClock | None = None) -> dict:
    """Evaluate the selected checkpoint (best on validation, else the last) on the validation and
    test splits, once (on the test split also with ``train.test_tta`` when set)."""
    from .checkpoint import model_from_checkpoint

    t_start = time.perf_counter()
    device = kw["device"]
    ckpt = load_checkpoint(checkpoint or run_dir)
    fmt = torch.channels_last if kw["channels_last"] else torch.contiguous_format
    model = maybe_compile(model_from_checkpoint(ckpt).to(device, memory_format=fmt), cfg.train.compile)
    result = {"best_epoch": ckpt["epoch"]}
    if ds.val is not None:
        va = evaluate(model, BatchLoader(ds.val, cfg.data.eval_batch_size, **kw), device=device, precision=precision)
        result.update(val_loss=va["loss"], val_top1=va["top1"])
    tta = cfg.train.test_tta
    # with TTA one pass gives both: the plain center crop is the TTA's first view
    te = evaluate(model, BatchLoader(ds.test, cfg.data.eval_batch_size, **kw), device=device, precision=precision, tta=tta)
    if tta == "none":
        result.update(test_loss=te["loss"], test_top1=te["top1"], test_n=te["n"])
    else:
        result.update(test_loss=te["plain_loss"], test_top1=te["plain_top1"], test_n=te["n"])
        result[f"test_top1_{tta}"] = te["top1"]
    if clock is not None:
        clock.seconds["final test"] += time.perf_counter() - t_start
        result["timings"] = clock.summary()
    if write:
        (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    if "val_top1" in result:
        log(f"best epoch {result['best_epoch']}: val top-1: {100 * result['val_top1']:.2f}%")
    log(f"test top-1: {100 * result['test_top1']:.2f}%" + (f", with TTA {tta}: {100 * result[f'test_top1_{tta}']:.2f}%" if tta != "none" else ""))
    return result


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0: they train and stay silent."""


def _wrap(model: VGG, info: DistInfo, device: torch.device, compile_: bool | str):
    """The module the training steps call: DDP under torchrun, optionally compiled."""
    wrapped = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return maybe_compile(wrapped, compile_)


def _bar(mode: str, total: int, desc: str):
    if mode != "bar":
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _tensorboard(cfg: Config, run_dir: Path):
    if not cfg.log.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("log.tensorboard: true needs the tensorboard package: pip install 'vgglab[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
