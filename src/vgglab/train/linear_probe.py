"""A linear probe as an ordinary run: descriptors of a frozen pretrained VGG computed once into the
feature cache, a multinomial logistic regression fitted on them (or, over cached augmented views, the
class layer trained by the recipe's optimiser), and the head written into the model's class layer, so ``eval``, ``predict``, ``report``, ``export`` and ``load_model`` take the
run as they take any other.

The regularisation strength is chosen on the validation split from ``probe.c_grid`` (the best top-1,
ties to the lower validation loss), as CLIP's and DINOv2's linear evaluations do; the head is fitted on
the training split only, so the validation and test figures stay held out (vgglab.train.linear_head).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..errors import VgglabError
from ..files import write_text
from ..machine import machine_info
from ..models import VGG
from ..pretrained import is_pretrained, parse_pretrained
from ..run.checkpoint import resolve_checkpoint, save_checkpoint
from ..run.context import DistInfo
from ..run.files import CONFIG, LAST, METRICS, PROBE, RESULTS
from ..run.lock import RunLock
from ..run.meta import RunMeta
from ..run.record import write_record
from ..speed import SpeedChoice, resolve_inference_precision
from .config import Config, ConfigError, save_config
from .descriptors import descriptor_batches, probe_model
from .feature_cache import FeatureCache, check_writable, features_root, file_sha256, image_keys
from .linear_head import fit_head, fold_into, score, train_head
from .prepare import open_run_dir, start_process, training_normalization
from .reporter import MetricsLog, Reporter
from .transfer import read_source


def weights_file(source: str) -> Path:
    """The file behind ``train.init_from``: the hub cache's copy of torchvision weights, a run's checkpoint, or the file."""
    if is_pretrained(source):
        return parse_pretrained(source).cache_file
    path = Path(source)
    return resolve_checkpoint(path) if path.is_dir() or path.suffix == ".pt" else path


def check_probe_config(cfg: Config) -> str:
    """The weights to probe (train.init_from), once the settings are known to make a probe."""
    if not cfg.train.init_from:
        raise ConfigError(
            "probe.enabled needs train.init_from: the pretrained weights (torchvision:vgg16, a torchvision .pth file or a vgglab run)"
        )
    if len(cfg.probe.c_grid) > 1 and cfg.data.val_size == 0:
        raise ConfigError(
            f"probe.c_grid holds {len(cfg.probe.c_grid)} values, chosen among on a validation split, and data.val_size is 0: "
            "set data.val_size (e.g. 0.1) or give probe.c_grid a single value"
        )
    tracked = [k for k in ("tensorboard", "mlflow") if getattr(cfg.log, k)]
    if tracked:
        raise ConfigError(
            f"log.{tracked[0]}: a probe has no epochs to track (its figures are in results.json and probe.json); set it false"
        )
    return cfg.train.init_from


def fit_probe(cfg: Config, out, resume, log, lock: RunLock):
    """Run ``cfg`` (``probe.enabled``) as a probe: returns the run directory and its results."""
    if resume is not None:
        raise VgglabError(
            f"{resume} is a probe run: there is no training to resume; run the recipe again, its feature cache makes that quick"
        )
    source = check_probe_config(cfg)
    check_writable(features_root(cfg.data.cache_dir))  # before minutes of work that could not be kept
    t0 = time.perf_counter()
    _, device = start_process(cfg)
    ds = load_dataset(cfg.data, cfg.augment if cfg.probe.views else None, device)
    norm = training_normalization(cfg, ds)
    model = load_probe_model(cfg, source, ds.num_classes, ds.image_size)
    speed = probe_precision(cfg, model, device)
    cfg.resolved = speed.to_dict()
    run_dir = open_run_dir(out, cfg, None, DistInfo(), lock)
    save_config(cfg, run_dir / CONFIG)
    write_record(run_dir, ds)
    reporter = Reporter(cfg, run_dir, True, log)
    log(
        f"{cfg.name}: a probe of {source} ({model.config.name}, {cfg.probe.layer}, {cfg.probe.descriptor} descriptor"
        + (f", {cfg.probe.views} augmented views per training image" if cfg.probe.views else "")
        + f") on {device}, {cfg.data.dataset} train {len(ds.train)} / val {len(ds.val) if ds.val is not None else 0} / "
        f"test {len(ds.test)} -> {run_dir}"
    )
    log(speed.header(cfg.train.precision, cfg.train.channels_last))
    identity = {
        "weights_sha256": file_sha256(weights_file(source), cfg.data.cache_dir),
        "arch": model.config.name,
        "layer": cfg.probe.layer,
        "descriptor": cfg.probe.descriptor,
        **({"scales": cfg.probe.scales, "scale_pool": cfg.probe.scale_pool} if cfg.probe.descriptor == "dense" else {}),
        "image_size": ds.image_size,
        "store_size": ds.store_size,
        "normalization": norm.to_dict(),
        "precision": speed.precision,  # not the layout: NCHW and NHWC kernels agree to rounding
        "device": device.type,
    }
    t_cache = time.perf_counter()
    features, views, computed = gather_descriptors(cfg, identity, model, norm, ds, device, speed, reporter)
    cache_s = time.perf_counter() - t_cache
    total = sum(len(v) for v in features.values()) + sum(len(v) for v in views)
    log(
        f"descriptors: {computed:,} computed, {total - computed:,} read from the feature cache "
        f"{features_root(cfg.data.cache_dir)} ({cache_s:.1f}s)"
    )
    y = {name: split.y.numpy() for name in features if (split := ds.split(name)) is not None}
    t_fit = time.perf_counter()
    rows: list[dict] = []
    if cfg.probe.trains_head:
        head, rows = train_head(
            [features["train"], *views], y["train"], features.get("val"), y.get("val"), cfg, ds.num_classes, log
        )
        grid: list[dict] = []
    else:
        head, grid = fit_head(
            np.concatenate([features["train"], *views]),
            np.concatenate([y["train"]] * (1 + len(views))),
            features.get("val"),
            y.get("val"),
            cfg.probe.c_grid,
            cfg.probe.max_iter,
            ds.num_classes,
        )
    fit_s = time.perf_counter() - t_fit
    fold_into(model.to(memory_format=torch.contiguous_format), head)
    result = score(head, features, y)
    if rows:  # a trained head: a row per epoch (the first one's time includes the descriptors'), the best kept
        best_epoch = max(rows, key=lambda r: r.get("val_top1", 0.0))["epoch"] if "val" in features else rows[-1]["epoch"]
        rows[0]["seconds"] += cache_s
        log(f"probe: the class layer trained {len(rows)} epochs on the views, epoch {best_epoch} kept; {fit_s:.1f}s")
    else:  # a fitted head: one row for the whole probe
        best_epoch = 1
        rows = [
            {
                "epoch": 1,
                "train_loss": result["train_loss"],
                "train_top1": result["train_top1"],
                "val_loss": result.get("val_loss"),
                "val_top1": result.get("val_top1"),
                "seconds": cache_s + fit_s,
                "images_per_s": computed / cache_s if computed else None,
            }
        ]
        log(
            f"probe: C={head['C']:g} chosen"
            + (
                " on validation (top-1 by C: " + ", ".join(f"{g['C']:g} {100 * g['val_top1']:.1f}%" for g in grid) + ")"
                if "val" in features
                else " (one value, no validation split)"
            )
            + f"; fitted in {fit_s:.1f}s"
        )
    record = {
        "head": "sgd" if cfg.probe.trains_head else "logistic",
        "C": head.get("C"),
        "grid": grid,
        "descriptors_computed": computed,
        "cache": str(FeatureCache(cfg.data.cache_dir, identity).dir),
        # center descriptors are what the model computes on eval's crop: its predictions are the probe's.
        # Appendix B's are L2-normalised dense averages over scales: the model's single center view approximates them
        "model_equals_probe": cfg.probe.descriptor == "center",
    }
    final = {"best_epoch": best_epoch, **{k: v for k, v in result.items() if not k.startswith("train_")}, "probe": record}
    meta = RunMeta(tuple(ds.classes), ds.image_size, ds.store_size, model.config.to_dict(), norm)
    write_probe_run(run_dir, cfg, model, meta, speed, device, rows)
    write_text(run_dir / PROBE, json.dumps(record, indent=2))
    final["timings"] = {"descriptors": round(cache_s, 3), "fit": round(fit_s, 3), "total": round(time.perf_counter() - t0, 3)}
    write_text(run_dir / RESULTS, json.dumps(final, indent=2))
    if "val_top1" in final:
        log(f"val top-1: {100 * final['val_top1']:.2f}%")
    log(f"test top-1: {100 * final['test_top1']:.2f}%")
    reporter.close()
    return run_dir, final


def load_probe_model(cfg: Config, source: str, classes: int, input_size: int) -> VGG:
    """The frozen network of ``train.init_from`` up to ``probe.layer``, with a class layer for ``classes``."""
    source_sd, source_cfg = read_source(source)
    if cfg.model.name and cfg.model.spec is None and source_cfg.name != cfg.model.name:
        raise ConfigError(
            f"train.init_from {source} holds a {source_cfg.name}, the recipe's model.name is {cfg.model.name}: "
            f"set model.name: {source_cfg.name}, or give {cfg.model.name} weights"
        )
    if cfg.probe.descriptor == "dense" and cfg.probe.layer != "pool5" and source_cfg.head.type not in ("imagenet", "cifar"):
        raise ConfigError(
            f"probe.descriptor dense runs the FC layers as convolutions over the whole image, and {source_cfg.name}'s "
            f"{source_cfg.head.type} head has none: use probe.layer: pool5 (the conv map) or probe.descriptor: center"
        )
    return probe_model(source_sd, source_cfg, cfg.probe.layer, classes, input_size)


def gather_descriptors(cfg: Config, identity: dict, model, norm, ds, device, speed, reporter):
    """Every split's descriptors and the training split's augmented views, from the cache where it holds
    them: ({split: (N, D)}, [(N_train, D) per view], how many were computed)."""
    computed = 0
    features: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        split = ds.split(name)
        if split is not None:
            cache = FeatureCache(cfg.data.cache_dir, identity)
            features[name], n = cached_descriptors(cache, split, name, cfg, model, norm, ds, device, speed, reporter)
            computed += n
    views = []
    for k in range(1, cfg.probe.views + 1):
        cache = FeatureCache(
            cfg.data.cache_dir, {**identity, "view": k, "seed": cfg.train.seed, "augment": cfg.to_dict()["augment"]}
        )
        x, n = cached_descriptors(cache, ds.train, f"train view {k}", cfg, model, norm, ds, device, speed, reporter, view=k)
        views.append(x)
        computed += n
    return features, views, computed


def write_probe_run(run_dir: Path, cfg: Config, model: VGG, meta: RunMeta, speed: SpeedChoice, device, rows: list[dict]) -> None:
    """The run's checkpoint (the whole network with its fitted class layer, as eval and predict read any
    run's) and its metrics rows."""
    extra = {
        "speed": {
            "precision_setting": cfg.train.precision,
            "channels_last_setting": cfg.train.channels_last,
            "device": device.type,
            **speed.to_dict(),
        }
    }
    state = {
        **meta.to_dict(),
        **extra,
        "model": model.state_dict(),
        "epoch": rows[-1]["epoch"],
        "config": cfg.to_dict(),
        "metrics": rows[-1],
    }
    save_checkpoint(state, run_dir / LAST)
    metrics = MetricsLog(run_dir / METRICS)
    for row in rows:
        metrics.append(row)


def probe_precision(cfg: Config, model: VGG, device: torch.device) -> SpeedChoice:
    """The precision and layout descriptors are computed in: as train.precision and train.channels_last
    pin them, else the inference rule with the layout probed too (bf16 where native and measured faster
    on a CPU, bf16 on a GPU that has it, else fp32; channels_last where it measures faster)."""
    if cfg.train.precision != "auto" and cfg.train.channels_last != "auto":
        return SpeedChoice(cfg.train.precision, bool(cfg.train.channels_last), machine=machine_info())
    choice = resolve_inference_precision(  # timed at the batch the descriptors are computed in
        model, device, cache_dir=cfg.data.cache_dir, layouts=cfg.train.channels_last == "auto", batch=cfg.data.eval_batch_size
    )
    if cfg.train.precision != "auto":
        choice.precision, choice.precision_reason = cfg.train.precision, "set in the config"
    if cfg.train.channels_last != "auto":
        choice.channels_last, choice.channels_last_reason = bool(cfg.train.channels_last), "set in the config"
    return choice


def cached_descriptors(
    cache: FeatureCache, split, what: str, cfg: Config, model, norm, ds, device, speed, reporter, view: int = 0
):
    """The descriptors of every image of ``split`` (N, D), computing (and caching) only the missing ones."""
    keys = image_keys(split)
    missing = cache.missing(keys)
    if missing:
        cache.check_writable()
        todo = split.subset(torch.tensor(missing))
        progress = reporter.progress(len(missing), f"descriptors {what}")
        try:
            for rows, d in descriptor_batches(
                model,
                todo,
                cfg.probe,
                image_size=ds.image_size,
                norm=norm,
                device=device,
                precision=speed.precision,
                channels_last=speed.channels_last,
                batch_size=cfg.data.eval_batch_size,
                workers=descriptor_workers(cfg.data.workers, device),
                augment=cfg.augment if view else None,
                seed=cfg.train.seed,
                view=view,
            ):
                cache.add([keys[missing[i]] for i in rows.tolist()], d)
                if progress is not None:
                    progress.advance(len(rows))
        finally:
            if progress is not None:
                progress.close()
    return cache.read(keys), len(missing)


def descriptor_workers(setting, device: torch.device):
    """``data.workers: auto`` for descriptors: decoding in the main process on a CPU, where a VGG forward
    pass costs tens of times a photo's reduced-size decode and a forked worker holds a second view of
    the weights (1.3 GB more peak RSS, no faster, measured on a 2-core Xeon); loader workers elsewhere."""
    return 0 if setting == "auto" and device.type == "cpu" else setting
