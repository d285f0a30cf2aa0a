"""The training config's sections (``model``, ``optim``, ``schedule``, ``train``, ``log``), each key
declared once (:mod:`vgglab.declare`); the data sections are in :mod:`vgglab.data.config`, the probe's in
:mod:`.probe_config`, the whole config in :mod:`.config`."""

from __future__ import annotations

import importlib.util
import typing
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from ..data.views import TrainTTA
from ..declare import Number, Section, Text, Values, setting
from ..strict import ConfigError

TransferMode = Literal["exact", "features", "all-but-last", "cross-geometry", "shallow-to-deep"]
TRANSFER_MODES = typing.get_args(TransferMode)
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Fraction = Annotated[Number, Field(ge=0, lt=1)]
Positive = Annotated[Number, Field(gt=0)]
Epochs = Annotated[int, Field(ge=0)]


class ModelSection(Section, section="model"):
    """A registered model by name with options (``create_model`` keywords), or a whole architecture (``spec``)."""

    name: str | None = setting("vgg16_cifar", "a registered model (`vgglab models`); ignored when spec is set")
    options: dict = setting({}, "create_model keywords: width, num_classes, input_size, head, hidden, dropout, ...")
    spec: dict | None = setting(None, "a custom architecture (blocks and head) instead of a registered one")

    @model_validator(mode="after")
    def _named(self):
        if self.spec is None and not self.name:
            raise ConfigError("model: set model.name (see `vgglab models`) or model.spec")
        return self


class OptimConfig(Section, section="optim"):
    """The optimiser: SGD (optionally Muon for the filters) or AdamW, its rates and weight decay."""

    name: Literal["sgd", "adamw"] = setting("sgd", "the optimiser")
    lr: Positive = setting(0.01, "the peak learning rate")
    momentum: Fraction = setting(0.9, "sgd momentum")
    nesterov: bool = setting(False, "sgd: Nesterov momentum")
    weight_decay: Number = setting(5e-4, "L2 weight decay (AdamW: decoupled)")
    no_decay_bn_bias: bool = setting(False, "exempt BatchNorm parameters and biases from weight decay")
    betas: Annotated[tuple[Fraction, Fraction], Values] = setting((0.9, 0.999), "adamw: the two moment decays")
    head_lr_mult: Number = setting(1.0, "the head learns at lr * head_lr_mult")
    bn_bias_lr_mult: Number = setting(1.0, "BatchNorm biases learn at lr * bn_bias_lr_mult (speed runs: ~64)")
    decoupled: bool = setting(False, "sgd: lr and weight_decay per 1024 samples, independent of batch and momentum")
    muon: bool = setting(False, "sgd: convolution filters step by Muon (orthogonalised momentum, Jordan et al. 2024)")
    muon_lr: Positive = setting(0.24, "Muon's step per optimiser step (independent of the gradient's scale)")
    muon_momentum: Fraction = setting(0.6, "Muon's Nesterov momentum")
    muon_weight_decay: Number = setting(0.0, "decoupled decay of Muon's steps, w *= 1 - muon_lr * it; below 1 / muon_lr", ge=0)
    muon_ns_coefficients: Annotated[tuple[Number, Number, Number], Values] = setting(
        (3.4445, -4.7750, 2.0315), "the quintic Newton-Schulz coefficients (a, b, c), tuned for muon_ns_steps"
    )
    muon_ns_steps: int = setting(5, "Newton-Schulz iterations per Muon step", ge=1, le=10)

    @model_validator(mode="after")
    def _consistent(self):
        if self.muon and self.name != "sgd":
            raise ConfigError(
                "optim.muon applies to sgd only (the other parameters step by SGD); set optim.name: sgd or muon: false"
            )
        if self.muon_weight_decay and not self.muon:
            raise ConfigError("optim.muon_weight_decay applies to Muon's steps: set optim.muon: true, or remove it")
        if self.muon_weight_decay * self.muon_lr >= 1.0:
            raise ConfigError(
                f"optim.muon_weight_decay must be below 1 / muon_lr (each step keeps 1 - muon_lr * it), got {self.muon_weight_decay}"
            )
        if self.decoupled and self.name != "sgd":
            raise ConfigError("optim.decoupled applies to sgd only (AdamW's weight decay is already decoupled); set it false")
        return self


class ScheduleConfig(Section, section="schedule"):
    """How the learning rate moves over training."""

    name: Literal["plateau", "step", "cosine", "linear", "none"] = setting(
        "plateau", "plateau (the paper's), step, cosine, linear (warmup then linear decay) or none"
    )
    factor: Number = setting(0.1, "plateau: the rate's factor when validation stops improving")
    patience: int = setting(10, "plateau: epochs without improvement before the rate falls")
    threshold: Number = setting(1e-3, "plateau: the smallest change that counts as an improvement")
    min_lr: Number = setting(0.0, "the rate never falls below this")
    step_size: int = setting(30, "step: epochs between falls")
    gamma: Number = setting(0.1, "step: the factor of each fall")
    warmup_epochs: Number = setting(0.0, "cosine, linear: epochs of linear warmup")
    warmup_start: Number = setting(0.0, "cosine, linear: warmup rises from this fraction of the peak rate", ge=0, le=1)
    end_factor: Annotated[Number, Field(ge=0, le=1)] | None = setting(
        None, "cosine, linear: the last rate / the peak; null: min_lr / lr"
    )
    floor: Fraction = setting(0.0, "cosine, linear: after warmup the rate stays above this fraction of the peak; 0: off")

    @model_validator(mode="after")
    def _floor(self):
        if self.floor and self.name not in ("cosine", "linear"):
            raise ConfigError(
                f"schedule.floor applies to the cosine and linear schedules, not {self.name}; remove it or change name"
            )
        return self


class TrainConfig(Section, section="train"):
    """How training runs: epochs, seed, device and speed settings, regularisation, initialisation and freezing."""

    epochs: int = setting(10, "epochs to train (a resume may extend or shorten the run)", ge=1, resume=True)
    seed: int = setting(0, "seed of weights, augmentation and data order")
    device: str = setting("auto", "auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:1 or mps")
    precision: Precision = setting("auto", "auto: decided on the machine that runs (bf16 where native and faster); or pinned")
    channels_last: Annotated[bool | Literal["auto"], BeforeValidator(lambda v: "auto" if v is None else v)] = setting(
        "auto", "the NHWC memory layout: auto (on for CUDA, on a CPU what a probe measures faster), true or false"
    )
    compile: bool | CompileMode = setting(False, "torch.compile: false, true (default mode) or a mode", resume=True)
    sync_bn: bool = setting(False, "under torchrun on CUDA: BatchNorm statistics over the global batch")
    label_smoothing: Fraction = setting(0.0, "label smoothing of the cross-entropy loss")
    grad_clip: Positive | None = setting(None, "the largest global gradient norm; null: no clipping")
    ema_decay: Annotated[Number, Field(gt=0, lt=1)] | None = setting(None, "e.g. 0.999: evaluate and save a moving average")
    ema_start: Fraction = setting(0.0, "the fraction of the steps before the average starts (0.9: the last 10 %)")
    threads: Annotated[int, Field(ge=1, le=4096)] | None = setting(
        None, "torch intra-op threads; null: torch's default", resume=True
    )
    init_from: Text | None = setting(
        None, "start from these weights: a run, a checkpoint, .safetensors, .pth or torchvision:NAME"
    )
    init_mode: TransferMode = setting("exact", "how init_from's weights are copied (vgglab.train.transfer)")
    init_match: Literal["paper", "all"] = setting(
        "paper", "shallow-to-deep: the paper's layers, or every conv whose shape agrees"
    )
    init_fold_fc6: bool = setting(False, "cross-geometry: sum an ImageNet FC6 over its 7x7 taps for a 1x1 map")
    freeze: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = setting(
        [], "parts without gradients, BatchNorm in eval mode: features, head, block1, features.block1.conv1, ..."
    )
    unfreeze_after: Epochs | None = setting(None, "epochs after which the frozen parts train too; null: never")
    freeze_bn_scale: bool = setting(False, "BatchNorm weights stay at 1 (only the biases train)")
    whiten_bias_epochs: Epochs | None = setting(None, "vgg_fast: the whitening bias trains for N epochs only; null: always")
    lookahead_every: Epochs = setting(0, "Lookahead: every N steps the weights move to a trailing average; 0: off")
    lookahead_decay: Fraction = setting(0.95**5, "Lookahead: the average's decay at the end of training")
    lookahead_power: Number = setting(3.0, "Lookahead: the decay grows as (step / total_steps) ** power")
    test_tta: TrainTTA = setting("none", "the final test also reports top-1 under this test-time augmentation")

    @model_validator(mode="after")
    def _consistent(self):
        if self.ema_start and self.ema_decay is None:
            raise ConfigError("train.ema_start delays an exponential moving average: set train.ema_decay too, or remove it")
        if self.lookahead_every and self.ema_decay:
            raise ConfigError("train.lookahead_every and train.ema_decay are two kinds of weight averaging: set only one")
        return self


class LogConfig(Section, section="log"):
    """What a run reports while it trains, and where."""

    tensorboard: bool = setting(False, "TensorBoard events in the run directory (vgglab[tensorboard])", resume=True)
    mlflow: bool = setting(False, "the run in MLflow, at MLFLOW_TRACKING_URI (vgglab[mlflow])", resume=True)
    progress: Literal["auto", "bar", "line", "none"] = setting("auto", "auto: a bar on a terminal, else lines", resume=True)
    progress_s: Positive | None = setting(None, "seconds between progress lines; null: $VGGLAB_PROGRESS_S, else 30", resume=True)

    @model_validator(mode="after")
    def _installed(self):
        for key in ("tensorboard", "mlflow"):
            if getattr(self, key) is True and importlib.util.find_spec(key) is None:  # before any run file is written
                raise ConfigError(
                    f"log.{key}: true needs the {key} package: pip install 'vgglab[{key}]' (or set log.{key}: false)"
                )
        return self
