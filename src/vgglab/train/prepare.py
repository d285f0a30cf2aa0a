"""Getting a run ready to train, apart from the epochs: its config (new or resumed), the process
and device it runs on, the run directory, and the model with its first weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import Dataset, Normalization
from ..data.stream import make_loader
from ..device import resolve_device
from ..errors import VgglabError
from ..files import write_text
from ..memory import check_fits
from ..models import VGG, VGGConfig, create_model, create_model_from_spec
from ..models.vgg import PatchWhitening
from ..pretrained import is_pretrained, parse_pretrained
from ..run.checkpoint import load_checkpoint
from ..run.context import DistInfo, Run
from ..run.directory import new_run_dir
from ..run.files import BEST, CONFIG, INIT_REPORT, LAST, METRICS, RESULTS, WEIGHTS
from ..run.lock import RunLock
from ..strict import plain
from ..yamlio import read_yaml
from .config import RESUME_KEYS, Config, ConfigError, load_config
from .distributed import broadcast_object, per_rank_batch, setup
from .reporter import MetricsLog
from .transfer import init_as_configured


def read_run_config(config, overrides, resume, log=print) -> tuple[Config, dict | None]:
    """The run's config and, when resuming, its last checkpoint. A resumed run uses its own
    config.yaml; ``overrides`` may change :data:`RESUME_KEYS` (recorded in ``changes`` with the
    epoch they take effect) and nothing else. A ``config`` given beside it must say the same. A
    run that stopped before its first checkpoint starts again in place, with any overrides."""
    if resume is None:
        return load_config(config, overrides), None
    run_dir = Path(resume)
    if not (run_dir / CONFIG).is_file():
        raise VgglabError(f"cannot resume {run_dir}: it has no config.yaml (is it a vgglab run directory?)")
    saved = load_config(run_dir / CONFIG)
    cfg = load_config(run_dir / CONFIG, overrides)
    if config is not None:
        differ = load_config(config, overrides).differences(cfg)
        if differ:
            shown = ", ".join(differ[:6]) + (" ..." if len(differ) > 6 else "")
            raise ConfigError(
                f"cannot resume {run_dir} with --config {config}: it differs from the run's config.yaml in {shown}; "
                f"omit --config to continue the run as it was, and give changes with --set"
            )
    if not (run_dir / LAST).is_file():
        refuse_trained_without_last(run_dir)
        log(f"note: {run_dir} stopped before its first checkpoint; training it again from epoch 1 in place")
        return cfg, None
    ckpt = load_checkpoint(run_dir / LAST)
    check_config_matches_checkpoint(run_dir, saved, ckpt)
    changed = saved.differences(cfg)
    refused = [k for k in changed if k not in RESUME_KEYS]
    if refused:
        raise ConfigError(
            f"cannot change {', '.join(refused)} on resume: the checkpoint's weights, optimiser and schedule "
            f"continue as they were. Resume may change {', '.join(RESUME_KEYS)}; for other settings start a new "
            f"run from this one: --config {run_dir / 'config.yaml'} --init-from {run_dir} --set ..."
        )
    if cfg.train.epochs < ckpt["epoch"]:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} is below the {ckpt['epoch']} epochs {run_dir} has trained; "
            f"give at least {ckpt['epoch']}"
        )
    if changed:
        now = cfg.flat()
        cfg.changes = [*(saved.changes or []), {"epoch": ckpt["epoch"] + 1, "set": {k: now.get(k) for k in changed}}]
    return cfg, ckpt


SECTIONS_WRITTEN = ("name", "data", "augment", "model", "optim", "schedule", "train", "log")


def refuse_trained_without_last(run_dir: Path) -> None:
    """A run with trained epochs (metrics.csv rows, best.pt, model.safetensors, results.json) whose
    last.pt is gone cannot continue exactly, and must never be trained again from epoch 1 over them."""
    evidence = [n for n in (BEST, WEIGHTS, RESULTS) if (run_dir / n).exists()]
    epochs = len(MetricsLog(run_dir / METRICS).rows()) if (run_dir / METRICS).is_file() else 0
    if epochs:
        evidence.insert(0, f"metrics.csv ({epochs} epoch{'s' if epochs != 1 else ''})")
    if evidence:
        start = f"--init-from {run_dir / 'best.pt'} " if (run_dir / BEST).exists() else ""
        raise VgglabError(
            f"cannot resume {run_dir}: its last.pt is missing, yet it has trained ({', '.join(evidence)}); nothing was "
            f"changed. Restore last.pt to continue it, or start a new run from it: vgglab train --config "
            f"{run_dir / 'config.yaml'} {start}--out NEW_DIR"
        )


def check_config_matches_checkpoint(run_dir: Path, saved: Config, ckpt: dict) -> None:
    """config.yaml is vgglab's record of the run, written whole; the checkpoint holds the config it
    trained with. A section missing from the file, or a value that differs from the checkpoint's
    (beyond what a resume changed and recorded in ``changes``), means the file was edited: the
    resumed state would keep the old meaning while the file said another, so it is refused."""
    path = run_dir / CONFIG
    raw = read_yaml(path)
    missing = [k for k in SECTIONS_WRITTEN if k not in raw]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(missing)} (vgglab writes every section); it was edited: restore it "
            f"(last.pt holds the run's config) before resuming"
        )
    recorded = ckpt.get("config")
    if not isinstance(recorded, dict):
        return
    try:
        trained = load_config(recorded)
    except ConfigError:
        return  # a checkpoint of an older vgglab: its config is what load_checkpoint accepted
    later = {k for change in saved.changes or [] for k in (change.get("set") or {})}
    differ = [k for k in trained.differences(saved) if not (k in RESUME_KEYS and k in later)]
    if differ:
        now, then = saved.flat(), trained.flat()
        shown = ", ".join(f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in differ[:4]) + (" ..." if len(differ) > 4 else "")
        raise ConfigError(
            f"{path} differs from the config its checkpoint trained with ({shown}): it was edited after the run "
            f"started. Restore those values to resume; change what resume allows with --set, or start a new run "
            f"from this one with --init-from {run_dir}"
        )


def start_process(cfg: Config) -> tuple[DistInfo, torch.device]:
    """Join the torchrun job if there is one, pick the device, check what it can do, seed."""
    tc = cfg.train
    info, device_name = setup(tc.device)
    device = resolve_device(device_name)
    if tc.sync_bn and device.type != "cuda":
        raise ConfigError(
            "train.sync_bn: PyTorch's SyncBatchNorm is CUDA-only; set it false on CPU (each process then keeps its own BatchNorm statistics)"
        )
    if tc.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision fp16 needs CUDA (its grad scaler is CUDA-only); use bf16 on CPU")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    return info, device


def open_run_dir(out, cfg: Config, resume, info: DistInfo, lock: RunLock) -> Path:
    """The resumed run's directory (locked already), or a new one made and locked by rank 0 and
    shared with the others."""
    if resume is not None:
        return Path(resume)
    return broadcast_object(new_run_dir(out, cfg.name, lock) if info.is_main else None, info)


def build_model_for(cfg: Config, ds: Dataset) -> VGG:
    """The configured model, sized for the dataset (classes, channels, input size) unless set."""
    fitted = {"num_classes": ds.num_classes, "in_chans": ds.in_chans, "input_size": ds.image_size}
    if cfg.model.spec is not None:
        model = create_model_from_spec(VGGConfig.from_dict({**fitted, **cfg.model.spec}, "model.spec"))
    elif cfg.model.name is not None:
        model = create_model(cfg.model.name, **{**fitted, **cfg.model.options})
    else:
        raise ConfigError("model: set model.name (see `vgglab models`) or model.spec")
    mc = model.config
    if mc.num_classes != ds.num_classes or mc.in_chans != ds.in_chans:
        raise ConfigError(
            f"model has {mc.num_classes} classes / {mc.in_chans} channels but the dataset has "
            f"{ds.num_classes} / {ds.in_chans}: remove model.options.num_classes/in_chans to size it from the data"
        )
    return model


def check_early_crop(cfg: Config, model: VGG, ds: Dataset) -> None:
    """``augment.early_crop`` or each of ``augment.stages`` needs a side below the input that the model
    takes: a head that pools (linear, gap, imagenet), not one that flattens a fixed map (cifar), and at
    least its smallest input."""
    aug = cfg.augment
    key = "early_crop" if aug.early_crop is not None else "stages"
    mc = model.config
    for _, side, _ in aug.resolution_stages():
        if side >= ds.image_size:
            raise ConfigError(
                f"augment.{key} {side} is not smaller than the {ds.image_size}-pixel input: fewer pixels early means "
                f"a smaller side; lower it (e.g. {max(mc.min_input_size, ds.image_size * 3 // 4)}) or remove it"
            )
        if mc.head.type == "cifar":
            raise ConfigError(
                f"augment.{key} {side}: {mc.name}'s cifar head flattens a map of its {mc.input_size}-pixel input and "
                f"takes no other size; use a pooling head (model.options.head: gap or linear) or remove augment.{key}"
            )
        if side < mc.min_input_size:
            raise ConfigError(f"augment.{key} {side}: {mc.name} takes inputs of at least {mc.min_input_size} pixels; raise it")


def check_resumable(ckpt: dict, model: VGG, classes: list[str]) -> None:
    saved, now = plain(ckpt["model_config"]), plain(model.config.to_dict())  # tuples and lists alike
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(
            f"cannot resume: the model differs from the checkpoint's in {', '.join(diff)}; resume with the run's own config.yaml"
        )
    if ckpt["classes"] != classes:
        raise ConfigError("cannot resume: the dataset's classes differ from the checkpoint's")


def check_training_memory(cfg: Config, model: VGG, ds: Dataset, run: Run) -> None:
    """Refuse, before anything is allocated on the device, a run whose weights, gradients and
    optimiser state (4 fp32 copies) plus one batch's conv outputs (kept for the backward pass, about
    3 fp32 values per output: conv, BatchNorm, activation) exceed the device's free memory."""
    batch = min(per_rank_batch(cfg.data.batch_size, run.info), len(ds.train))
    n = sum(p.numel() for p in model.parameters())
    needed = 16 * n + 12 * batch * model.config.conv_outputs()
    side = model.config.input_size
    check_fits(
        f"training {model.config.name} ({n:,} parameters) on batches of {batch} images of {side}x{side}",
        needed,
        "lower data.batch_size, data.image_size or model.options.width",
        device=run.device,
    )


def training_normalization(cfg: Config, ds: Dataset) -> Normalization:
    """The training images' statistics, unless the recipe pins ``augment.mean``/``std``, or the run
    starts from torchvision weights, whose ImageNet mean and std the features were trained with."""
    aug, source = cfg.augment, cfg.train.init_from
    if is_pretrained(source) and aug.mean is None and aug.std is None:
        pinned = parse_pretrained(source).meta().normalization
        return Normalization(aug.normalize, pinned.mean, pinned.std)
    return ds.normalization(aug)


def fit_whitening(model: VGG, ds: Dataset, norm: Normalization, n: int = 5000) -> None:
    """Set the patch-whitening layer from the first ``n`` training images, normalised as training sees them."""
    loader = make_loader(ds.train, n, image_size=ds.image_size, norm=norm, channels_last=False)
    images, _ = next(iter(loader))
    whiten = model.features.whiten
    if not isinstance(whiten, PatchWhitening):
        raise TypeError(f"{model.config.name} has no patch-whitening layer to fit")
    whiten.fit(images)


def prepare_model(run: Run, ds: Dataset, norm: Normalization, out, resume) -> VGG:
    """The model for the run, and the run directory (made once the model is known to fit the
    data): checked against a resumed checkpoint (whose weights come later, with the rest of the
    training state), else initialised from ``train.init_from`` or, for a patch-whitening model,
    fitted to the training images."""
    cfg, info, tc = run.cfg, run.info, run.cfg.train
    model = build_model_for(cfg, ds)
    if tc.sync_bn and info.enabled:  # same parameter names, so checkpoints stay interchangeable
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    check_early_crop(cfg, model, ds)
    if run.ckpt is not None:
        check_resumable(run.ckpt, model, ds.classes)
    check_training_memory(cfg, model, ds, run)
    run.dir = open_run_dir(out, cfg, resume, info, run.lock)
    if run.ckpt is None and tc.init_from:
        report = init_as_configured(model, tc)
        if info.is_main:
            write_text(run.dir / INIT_REPORT, report.format() + "\n")
        run.log(f"initialised from {tc.init_from} ({tc.init_mode}): {report.brief(run.dir / 'init_report.txt')}")
    elif run.ckpt is None and model.config.whiten:
        with run.clock("whitening"):
            fit_whitening(model, ds, norm)
    return model
