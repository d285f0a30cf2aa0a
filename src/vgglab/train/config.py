"""The typed training config: YAML + ``--set key=value`` -> validated dataclasses.

Every section is a dataclass built with ``strict_init``, so a misspelled key is an error
naming it (and the nearest valid key) instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.config import AugmentConfig, DataConfig
from ..data.views import TRAIN_TTA_MODES
from ..errors import VgglabError
from ..files import write_text
from ..shipped import find_recipe, unknown_recipe
from ..strict import ConfigError, _suggest, plain, strict_init
from ..strict import check_choice as _choice
from .probe_config import ProbeConfig
from .speed import SpeedChoice
from .yamlio import apply_overrides, check_structure, read_yaml

__all__ = ["Config", "ConfigError", "load_config", "save_config", "apply_overrides", "read_yaml", "RESUME_KEYS", "SECTIONS"]


@dataclass
class ModelSection:
    """A registered name plus options (``create_model`` keywords), or a full ``spec``."""

    name: str | None = "vgg16_cifar"
    options: dict = field(default_factory=dict)
    spec: dict | None = None  # a custom architecture; then ``name`` is ignored

    def __post_init__(self):
        if self.spec is None and not self.name:
            raise ConfigError("model: set model.name (see `vgglab models`) or model.spec")


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False  # exempt BatchNorm parameters and biases from weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    head_lr_mult: float = 1.0  # the head's learning rate is lr * head_lr_mult
    bn_bias_lr_mult: float = 1.0  # BatchNorm biases learn at lr * bn_bias_lr_mult (speed-run recipes use ~64)
    # decoupled (sgd): lr is the steady-state step per 1024 samples (momentum's gain 1/(1 - momentum)
    # divided out) and weight_decay the fraction the weights shrink per 1024 samples at full lr, so
    # neither changes meaning with batch_size, momentum or the lr multipliers. See optim.param_groups.
    decoupled: bool = False
    # muon (sgd): every convolution filter (4-D weight) steps by Muon (Jordan et al. 2024; Bernstein &
    # Newhouse 2024, "Old optimizer, new norm"): its Nesterov momentum, reshaped to out x (in * k * k),
    # orthogonalised by five Newton-Schulz iterations, times muon_lr. That step's size does not depend on
    # the gradient's scale nor on batch_size: muon_lr is per optimiser step. Each filter tensor is first
    # rescaled to Frobenius norm sqrt(out_channels) (the BatchNorm after it makes its scale irrelevant;
    # this replaces weight decay for it). Biases, BatchNorm and the head stay on SGD as set above.
    muon: bool = False
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    # decoupled weight decay of the filters' Muon steps (w <- w * (1 - muon_lr * it), after the rescale
    # to norm sqrt(out_channels), before the step), the quintic Newton-Schulz coefficients (a, b, c) and
    # iterations: coefficients are tuned for a number of steps (E1's, 3.4576 -4.7391 2.0843, for 3: at 5
    # they leave singular values up to 1.36 and a vgg_fast epoch 2 at 39 % train top-1 instead of 67 %)
    muon_weight_decay: float = 0.0
    muon_ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
    muon_ns_steps: int = 5

    def __post_init__(self):
        _choice("optim", "name", self.name, ("sgd", "adamw"))
        if self.muon and self.name != "sgd":
            raise ConfigError(
                "optim.muon applies to sgd only (the other parameters step by SGD); set optim.name: sgd or muon: false"
            )
        given = self.muon_ns_coefficients
        coefficients = tuple(given) if isinstance(given, (list, tuple)) else (given,)
        if len(coefficients) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coefficients):
            raise ConfigError(
                f"optim.muon_ns_coefficients are three numbers (a, b, c), e.g. [3.4445, -4.7750, 2.0315], got {list(coefficients)}"
            )
        self.muon_ns_coefficients = (coefficients[0], coefficients[1], coefficients[2])
        if isinstance(self.muon_ns_steps, bool) or not isinstance(self.muon_ns_steps, int) or not 1 <= self.muon_ns_steps <= 10:
            raise ConfigError(
                f"optim.muon_ns_steps is a number of Newton-Schulz iterations, 1..10 (5 by default), got {self.muon_ns_steps!r}"
            )
        if self.muon_lr <= 0 or not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError(
                f"optim.muon_lr must be positive and muon_momentum in [0, 1), got {self.muon_lr}, {self.muon_momentum}"
            )
        if self.muon_weight_decay and not self.muon:
            raise ConfigError("optim.muon_weight_decay applies to Muon's steps: set optim.muon: true, or remove it")
        if not 0.0 <= self.muon_weight_decay * self.muon_lr < 1.0 or self.muon_weight_decay < 0:
            raise ConfigError(
                f"optim.muon_weight_decay must be >= 0 and below 1 / muon_lr (each step keeps 1 - muon_lr * it), got {self.muon_weight_decay}"
            )
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {list(betas)}")
        self.betas = (betas[0], betas[1])
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.decoupled and self.name != "sgd":
            raise ConfigError("optim.decoupled applies to sgd only (AdamW's weight decay is already decoupled); set it false")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")


@dataclass
class ScheduleConfig:
    name: str = "plateau"  # plateau, step, cosine, linear (one-cycle: warmup then linear decay), none
    factor: float = 0.1  # plateau
    patience: int = 10  # plateau, epochs
    threshold: float = 1e-3  # plateau
    min_lr: float = 0.0
    step_size: int = 30  # step, epochs
    gamma: float = 0.1  # step
    warmup_epochs: float = 0.0  # cosine, linear
    warmup_start: float = 0.0  # cosine, linear: warmup rises linearly from this fraction of the peak lr
    end_factor: float | None = None  # cosine, linear: final lr as a fraction of the peak (default min_lr / lr)
    # cosine, linear: after warmup the rate never falls below this fraction of the peak: a linear decay
    # to 0 meets a floor of 0.05 at 95 % of training and stays there (the E1 speed-run recipe). 0: off
    floor: float = 0.0

    def __post_init__(self):
        _choice("schedule", "name", self.name, ("plateau", "step", "cosine", "linear", "none"))
        if not 0.0 <= self.warmup_start <= 1.0 or (self.end_factor is not None and not 0.0 <= self.end_factor <= 1.0):
            raise ConfigError(
                f"schedule.warmup_start and end_factor are fractions of the peak lr in [0, 1], got {self.warmup_start}, {self.end_factor}"
            )
        if not 0.0 <= self.floor < 1.0:
            raise ConfigError(f"schedule.floor is a fraction of the peak lr in [0, 1) (0.05: 5 %; 0: off), got {self.floor}")
        if self.floor and self.name not in ("cosine", "linear"):
            raise ConfigError(
                f"schedule.floor applies to the cosine and linear schedules, not {self.name}; remove it or change name"
            )


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# how train.init_from's weights are copied (vgglab.train.transfer); not the model's own weight init
# all-but-last: every tensor but the class layer (torchvision's fine-tuning tutorial; the paper's Appendix B keeps fc6/fc7)
TRANSFER_MODES = ("exact", "features", "all-but-last", "cross-geometry", "shallow-to-deep")


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    # auto: decided on the machine that runs (vgglab.train.speed): on CUDA bf16 (else fp16); on a CPU
    # bf16 only with native support and where a probe measures it faster, else fp32. Or pin one of
    # fp32, bf16 (autocast, CPU and CUDA), fp16 (autocast + grad scaler, CUDA).
    precision: str = "auto"
    # auto: on for CUDA; on a CPU whichever layout the probe measures faster (it measured 0.95x on
    # one 2-core Xeon and 1.22x on a 2-core EPYC in fp32). true / false pin it.
    channels_last: bool | str | None = "auto"
    # torch.compile for training and evaluation: false, true (default mode), reduce-overhead (CUDA
    # graphs: pays where steps are launch-bound, as small CIFAR models on a big GPU), max-autotune
    compile: bool | str = False
    sync_bn: bool = False  # under torchrun on CUDA: BatchNorm statistics over the global batch
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    ema_decay: float | None = None  # e.g. 0.999: evaluate and save an exponential moving average
    # the fraction of training's steps before the average starts (its first update copies the weights):
    # 0.9 averages the last 10 % of steps only, an EMA "tail"; 0: from the first step
    ema_start: float = 0.0
    threads: int | None = None  # torch intra-op threads; None: torch's default
    init_from: str | None = None  # a vgglab run/checkpoint, a .safetensors file or a torchvision VGG .pth
    init_mode: str = "exact"  # exact, features, all-but-last, cross-geometry, shallow-to-deep
    init_match: str = "paper"  # shallow-to-deep: paper (first four convs + FC layers) or all (every conv whose shape agrees)
    init_fold_fc6: bool = False  # cross-geometry: sum an ImageNet FC6 over its 7x7 taps for a 1x1 target map
    freeze: list | str = field(default_factory=list)  # "features", "head", "block1", ...: no gradients, BatchNorm in eval mode
    unfreeze_after: int | None = None  # epochs; then the frozen parts train too
    freeze_bn_scale: bool = False  # BatchNorm weights stay at 1 (only the biases train)
    # the whitening layer's bias (vgg_fast) trains in epochs 1..whiten_bias_epochs only, then stays as it
    # is (airbench94 trains it for its first 3 epochs); None: it trains throughout
    whiten_bias_epochs: int | None = None
    # Lookahead (Zhang et al. 2019) as the speed-run recipes use it: every ``lookahead_every`` steps the
    # weights move to an average that trails them, ema <- d * ema + (1 - d) * w, then w <- ema, with
    # d = lookahead_decay * (step / total_steps) ** lookahead_power; training ends on the average. 0: off.
    lookahead_every: int = 0
    lookahead_decay: float = 0.95**5
    lookahead_power: float = 3.0
    test_tta: str = "none"  # the final test also reports top-1 under this TTA (none, flip, flip-shift, flip-translate)

    def __post_init__(self):
        _choice("train", "precision", self.precision, PRECISIONS)
        if self.channels_last is None:  # configs written before "auto" existed said null
            self.channels_last = "auto"
        if not isinstance(self.channels_last, bool) and self.channels_last != "auto":
            raise ConfigError(f"train.channels_last must be auto, true or false, got {self.channels_last!r}")
        if self.compile is True or self.compile is False:
            pass
        elif self.compile not in COMPILE_MODES:
            raise ConfigError(f"train.compile must be false, true or one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.threads is not None and not 1 <= self.threads <= 4096:
            raise ConfigError(
                f"train.threads must be a positive number of threads (or null for torch's default), got {self.threads}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train.grad_clip must be a positive gradient norm (or null for none), got {self.grad_clip}")
        if self.whiten_bias_epochs is not None and self.whiten_bias_epochs < 0:
            raise ConfigError(
                f"train.whiten_bias_epochs must be >= 0 epochs (or null: it trains throughout), got {self.whiten_bias_epochs}"
            )
        if self.unfreeze_after is not None and self.unfreeze_after < 0:
            raise ConfigError(f"train.unfreeze_after must be >= 0 epochs (or null), got {self.unfreeze_after}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _choice("train", "init_mode", self.init_mode, TRANSFER_MODES)
        _choice("train", "init_match", self.init_match, ("paper", "all"))
        if isinstance(self.freeze, str):
            self.freeze = [self.freeze]
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.ema_start < 1.0:
            raise ConfigError(
                f"train.ema_start is a fraction of training's steps in [0, 1) (0.9: the last 10 %), got {self.ema_start}"
            )
        if self.ema_start and self.ema_decay is None:
            raise ConfigError("train.ema_start delays an exponential moving average: set train.ema_decay too, or remove it")
        if self.lookahead_every < 0 or not 0.0 <= self.lookahead_decay < 1.0:
            raise ConfigError(
                f"train.lookahead_every must be >= 0 and lookahead_decay in [0, 1), got {self.lookahead_every}, {self.lookahead_decay}"
            )
        if self.lookahead_every and self.ema_decay:
            raise ConfigError("train.lookahead_every and train.ema_decay are two kinds of weight averaging: set only one")
        _choice("train", "test_tta", self.test_tta, TRAIN_TTA_MODES)


@dataclass
class LogConfig:
    tensorboard: bool = False
    mlflow: bool = False  # the run in MLflow (MLFLOW_TRACKING_URI, else MLflow's default store): vgglab.train.tracking
    # auto: a bar on a terminal or in a notebook, else plain lines every progress_s seconds; bar; line; none
    progress: str = "auto"
    progress_s: float | None = None  # seconds between plain lines; None: $VGGLAB_PROGRESS_S, else 30

    def __post_init__(self):
        _choice("log", "progress", self.progress, ("auto", "bar", "line", "none"))
        for key, module, extra in (("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow")):
            if getattr(self, key) is True and importlib.util.find_spec(module) is None:  # before any run file is written
                raise ConfigError(
                    f"log.{key}: true needs the {module} package: pip install 'vgglab[{extra}]' (or set log.{key}: false)"
                )
        if self.progress_s is not None and (
            isinstance(self.progress_s, bool)
            or not isinstance(self.progress_s, (int, float))
            or not 0 < self.progress_s < float("inf")
        ):
            raise ConfigError(
                f"log.progress_s must be a positive number of seconds (or null for $VGGLAB_PROGRESS_S, else 30), "
                f"got {self.progress_s!r}"
            )


# Settings added after recipes were published, left out of a recipe's hash at their defaults so
# its identity (benchmarks/results, the README's tables) does not change as vgglab gains options.
LATER_KEYS: dict[str, dict[str, object]] = {
    "data": {"storage": "auto", "workers": "auto"},
    "augment": {
        "scale_min": 256,
        "scale_max": 512,
        "early_crop": None,
        "early_epochs": 0,
        "stages": [],
        "brightness": 0.0,
        "contrast": 0.0,
    },
    "train": {"whiten_bias_epochs": None, "ema_start": 0.0},
    "optim": {
        "muon": False,
        "muon_lr": 0.24,
        "muon_momentum": 0.6,
        "muon_weight_decay": 0.0,
        "muon_ns_coefficients": [3.4445, -4.7750, 2.0315],
        "muon_ns_steps": 5,
    },
    "schedule": {"floor": 0.0},
    "log": {"mlflow": False, "progress_s": None},
}
# a section added later: left out of the hash whole while every setting in it is its default
LATER_SECTIONS = ("probe",)

SECTIONS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelSection,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "log": LogConfig,
    "probe": ProbeConfig,
}


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # Written by fit, never read from a recipe's meaning: what the auto speed settings resolved to on
    # the machine that ran (vgglab.train.speed.SpeedChoice), so resume, eval and the report reuse it.
    resolved: dict | None = None
    # Written by a resume that changed settings (RESUME_KEYS): [{epoch: first epoch trained with
    # them, set: {dotted key: value}}, ...], so the record says when each value took effect.
    changes: list | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> Config:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(d).__name__}")
        valid = ["name", *SECTIONS, "resolved", "changes"]
        for key in d:
            if key not in valid:
                raise ConfigError(f"{where}: unknown section {key!r}{_suggest(str(key), valid)}; valid: {', '.join(valid)}")
        kwargs: dict[str, Any] = {}
        if "name" in d:
            kwargs["name"] = str(d["name"])
        if d.get("resolved") is not None:
            if not isinstance(d["resolved"], dict):
                raise ConfigError(f"{where}: resolved is written by vgglab (a mapping); delete it to resolve again")
            SpeedChoice.read(d["resolved"], f"{where}: resolved")  # one line for a hand-edited record, before it is reused
            kwargs["resolved"] = dict(d["resolved"])
        if d.get("changes") is not None:
            if not isinstance(d["changes"], list) or not all(
                isinstance(c, dict)
                and set(c) == {"epoch", "set"}
                and isinstance(c["epoch"], int)
                and not isinstance(c["epoch"], bool)
                and c["epoch"] >= 1
                and isinstance(c["set"], dict)
                and all(isinstance(k, str) for k in c["set"])
                for c in d["changes"]
            ):
                raise ConfigError(
                    f"{where}: changes is written by vgglab on resume (a list of {{epoch: N, set: {{key: value}}}}); "
                    "it was edited: restore it, or delete it (the record of what resumes changed is then lost)"
                )
            kwargs["changes"] = list(d["changes"])
        for key, section in SECTIONS.items():
            try:
                kwargs[key] = strict_init(section, d.get(key) or {}, f"{where}: {key}")
            except TypeError as exc:  # a wrong type that the dataclass itself rejected
                raise ConfigError(f"{where}: {key}: {exc}") from None
            except VgglabError as exc:
                raise ConfigError(str(exc)) from None
        return cls(**kwargs)

    def notes_across_sections(self) -> list[str]:
        """Settings that are each valid but together train something other than a reader may expect:
        printed in the run's header (not refused: a short trial run of a long recipe is legitimate)."""
        notes = []
        aug, epochs = self.augment, self.train.epochs
        if aug.early_crop is not None and aug.early_epochs >= epochs:
            notes.append(
                f"note: augment.early_epochs {aug.early_epochs} covers all {epochs} of train.epochs: every epoch trains on "
                f"{aug.early_crop}-pixel crops and none at the size the model is evaluated at; set early_epochs below "
                "train.epochs for a model that has seen full-size images"
            )
        staged = sum(n for n, _, _ in aug.resolution_stages())
        if aug.stages and staged >= epochs:
            notes.append(
                f"note: augment.stages cover {staged} epochs of train.epochs {epochs}: no epoch trains at the size the "
                "model is evaluated at; shorten the stages for a model that has seen full-size images"
            )
        return notes

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))

    def sha256(self) -> str:
        """The recipe's identity: every setting, not what auto resolved to on some machine."""
        d = self.to_dict()
        d.pop("resolved")
        d.pop("changes")
        for section, defaults in LATER_KEYS.items():
            for key, default in defaults.items():
                if d[section].get(key) == default:
                    del d[section][key]
        for section in LATER_SECTIONS:
            if d[section] == plain(dataclasses.asdict(SECTIONS[section]())):
                del d[section]
        return hashlib.sha256(yaml.safe_dump(d, sort_keys=True).encode()).hexdigest()


# What `vgglab train --resume RUN --set key=value` may change: settings that do not alter what the
# checkpointed weights, optimiser, schedule and data order mean. Anything else would be recorded
# in config.yaml while the resumed state kept the old meaning, so it is refused in one line.
RESUME_KEYS = (
    "train.epochs",  # extend (or shorten) a run; a cosine/linear schedule is recomputed for the new length
    "train.threads",
    "train.compile",  # how fast, not what
    "data.root",
    "data.cache_dir",
    "data.download",
    "data.eval_batch_size",  # where the same data is, how it is read
    "log.progress",
    "log.progress_s",
    "log.tensorboard",
    "log.mlflow",
)


def load_config(source: str | Path | dict | Config | None = None, overrides=None) -> Config:
    """A Config from a YAML path, a dict or a Config, with dotted overrides applied."""
    if isinstance(source, Config):
        source = source.to_dict()
    where = "config"
    if isinstance(source, (str, Path)):
        if not Path(source).exists():  # a path wins; else a shipped recipe by name (vgglab recipes)
            shipped = find_recipe(str(source))
            if shipped is None and Path(source).parent == Path("."):
                raise ConfigError(unknown_recipe(str(source)))
            source = shipped or source
        where = str(source)
        data = read_yaml(source)
        data.setdefault("name", Path(source).stem)
    else:
        data = source or {}
        check_structure(data, where)
    try:
        return Config.from_dict(apply_overrides(data, overrides), where)
    except ConfigError as exc:
        if not overrides or where == "config" or where not in str(exc):
            raise
        try:  # the recipe alone is fine: the override is at fault, so name it, not the file
            Config.from_dict(data, where)
        except ConfigError:
            raise exc from None
        raise ConfigError(str(exc).replace(f"{where}: ", "--set ", 1)) from None


def save_config(config: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
