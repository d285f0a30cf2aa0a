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
COMPILE_MODES = typing.get_args(CompileMode)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = typing.get_args(Precision)
Fraction = Annotated[Number, Field(ge=0, lt=1)]


class ModelSection(Section):
    """A registered model by name with options (``create_model`` keywords), or a whole architecture (``spec``)."""

    section = "model"
    name: str | None = setting("vgg16_cifar", "a registered model (`vgglab models`); ignored when spec is set")
    options: dict = setting({}, "create_model keywords: width, num_classes, input_size, head, hidden, dropout, ...")
    spec: dict | None = setting(None, "a custom architecture (blocks and head); then name is ignored")

    @model_validator(mode="after")
    def _named(self):
        if self.spec is None and not self.name:
            raise ConfigError("model: set model.name (see `vgglab models`) or model.spec")
        return self


class OptimConfig(Section):
    """The optimiser: SGD (with optional Muon for the filters) or AdamW, its rates and weight decay."""

    section = "optim"
    name: Literal["sgd", "adamw"] = setting("sgd", "the optimiser")
    lr: Number = setting(0.01, "the peak learning rate", gt=0)
    momentum: Fraction = setting(0.9, "sgd momentum")
    nesterov: bool = setting(False, "sgd: Nesterov momentum")
    weight_decay: Number = setting(5e-4, "L2 weight decay (AdamW: decoupled)")
    no_decay_bn_bias: bool = setting(False, "exempt BatchNorm parameters and biases from weight decay")
    betas: Annotated[tuple[Fraction, Fraction], Values] = setting((0.9, 0.999), "adamw: the two moment decays")
    head_lr_mult: Number = setting(1.0, "the head learns at lr * head_lr_mult")
    bn_bias_lr_mult: Number = setting(1.0, "BatchNorm biases learn at lr * bn_bias_lr_mult (speed-run recipes use ~64)")
    decoupled: bool = setting(
        False,
        "sgd: lr is the steady-state step per 1024 samples (momentum's gain divided out) and weight_decay the fraction "
        "the weights shrink per 1024 samples at full lr, so neither changes meaning with batch_size, momentum or the "
        "lr multipliers (vgglab.train.optim.param_groups)",
    )
    muon: bool = setting(
        False,
        "sgd: every convolution filter steps by Muon (Jordan et al. 2024): its Nesterov momentum orthogonalised by "
        "Newton-Schulz iterations, times muon_lr, each filter rescaled to norm sqrt(out_channels) first; biases, "
        "BatchNorm and the head stay on SGD",
    )
    muon_lr: Number = setting(0.24, "Muon's step per optimiser step (independent of the gradient's scale and batch_size)", gt=0)
    muon_momentum: Fraction = setting(0.6, "Muon's Nesterov momentum")
    muon_weight_decay: Number = setting(
        0.0, "decoupled weight decay of Muon's steps: w <- w * (1 - muon_lr * it) before each step; below 1 / muon_lr", ge=0
    )
    muon_ns_coefficients: Annotated[tuple[Number, Number, Number], Values] = setting(
        (3.4445, -4.7750, 2.0315),
        "the quintic Newton-Schulz coefficients (a, b, c); they are tuned for a number of steps (muon_ns_steps)",
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


class ScheduleConfig(Section):
    """How the learning rate moves over training."""

    section = "schedule"
    name: Literal["plateau", "step", "cosine", "linear", "none"] = setting(
        "plateau", "plateau (the paper's), step, cosine, linear (one-cycle: warmup then linear decay), none"
    )
    factor: Number = setting(0.1, "plateau: the rate is multiplied by this when validation stops improving")
    patience: int = setting(10, "plateau: epochs without improvement before the rate falls")
    threshold: Number = setting(1e-3, "plateau: the smallest change that counts as an improvement")
    min_lr: Number = setting(0.0, "the rate never falls below this")
    step_size: int = setting(30, "step: epochs between falls")
    gamma: Number = setting(0.1, "step: the factor of each fall")
    warmup_epochs: Number = setting(0.0, "cosine, linear: epochs of linear warmup")
    warmup_start: Number = setting(0.0, "cosine, linear: warmup rises from this fraction of the peak rate", ge=0, le=1)
    end_factor: Annotated[Number, Field(ge=0, le=1)] | None = setting(
        None, "cosine, linear: the final rate as a fraction of the peak; null: min_lr / lr"
    )
    floor: Fraction = setting(
        0.0, "cosine, linear: after warmup the rate never falls below this fraction of the peak (E1 uses 0.05); 0: off"
    )

    @model_validator(mode="after")
    def _floor(self):
        if self.floor and self.name not in ("cosine", "linear"):
            raise ConfigError(
                f"schedule.floor applies to the cosine and linear schedules, not {self.name}; remove it or change name"
            )
        return self


def _auto_if_null(value):
    return "auto" if value is None else value  # configs written before "auto" existed said null


def _as_list(value):
    return [value] if isinstance(value, str) else value


class TrainConfig(Section):
    """How training runs: epochs, seed, device and speed settings, regularisation, initialisation and freezing."""

    section = "train"
    epochs: int = setting(10, "epochs to train (a resume may extend or shorten the run)", ge=1, resume=True)
    seed: int = setting(0, "seed of weights, augmentation and data order")
    device: str = setting("auto", "auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda, cuda:1, mps")
    precision: Precision = setting(
        "auto",
        "auto: decided on the machine that runs: on CUDA bf16 (else fp16), on a CPU bf16 only with native support "
        "where a probe measures it faster, else fp32; or pinned: fp32, bf16 (autocast), fp16 (autocast and a "
        "gradient scaler, CUDA)",
    )
    channels_last: Annotated[bool | Literal["auto"], BeforeValidator(_auto_if_null)] = setting(
        "auto",
        "the channels-last memory layout: auto: on for CUDA, on a CPU whichever a probe measures faster; true/false pin it",
    )
    compile: bool | CompileMode = setting(
        False,
        "torch.compile for training and evaluation: false, true (default mode), reduce-overhead (CUDA graphs, for "
        "launch-bound steps), max-autotune",
        resume=True,
    )
    sync_bn: bool = setting(False, "under torchrun on CUDA: BatchNorm statistics over the global batch")
    label_smoothing: Fraction = setting(0.0, "label smoothing of the cross-entropy loss")
    grad_clip: Annotated[Number, Field(gt=0)] | None = setting(None, "the largest global gradient norm; null: no clipping")
    ema_decay: Annotated[Number, Field(gt=0, lt=1)] | None = setting(
        None, "e.g. 0.999: evaluate and save an exponential moving average of the weights; null: off"
    )
    ema_start: Fraction = setting(
        0.0, "the fraction of training's steps before the average starts (0.9: the last 10 %); 0: from the first step"
    )
    threads: Annotated[int, Field(ge=1, le=4096)] | None = setting(
        None, "torch intra-op threads; null: torch's default", resume=True
    )
    init_from: Text | None = setting(
        None,
        "start from these weights: a vgglab run or checkpoint, a .safetensors file, a torchvision VGG .pth, torchvision:NAME",
    )
    init_mode: TransferMode = setting(
        "exact",
        "how init_from's weights are copied: exact; features (the conv layers); all-but-last (every tensor but the class "
        "layer); cross-geometry (another input size); shallow-to-deep (the paper's initialisation of a deeper net)",
    )
    init_match: Literal["paper", "all"] = setting(
        "paper", "shallow-to-deep: paper (the first four convs and the FC layers) or all (every conv whose shape agrees)"
    )
    init_fold_fc6: bool = setting(False, "cross-geometry: sum an ImageNet FC6 over its 7x7 taps for a 1x1 target map")
    freeze: Annotated[list[str], BeforeValidator(_as_list)] = setting(
        [], "parts that get no gradients, BatchNorm in eval mode: features, head, block1, features.block1.conv1, ..."
    )
    unfreeze_after: Annotated[int, Field(ge=0)] | None = setting(
        None, "epochs after which the frozen parts train too; null: never"
    )
    freeze_bn_scale: bool = setting(False, "BatchNorm weights stay at 1 (only the biases train)")
    whiten_bias_epochs: Annotated[int, Field(ge=0)] | None = setting(
        None, "vgg_fast: the whitening layer's bias trains in epochs 1..N only (airbench94: 3); null: throughout"
    )
    lookahead_every: int = setting(
        0,
        "Lookahead as the speed runs use it: every N steps the weights move to an average that trails them, and "
        "training ends on the average; 0: off",
        ge=0,
    )
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


class LogConfig(Section):
    """What a run reports while it trains, and where."""

    section = "log"
    tensorboard: bool = setting(
        False, "write TensorBoard events into the run directory (pip install 'vgglab[tensorboard]')", resume=True
    )
    mlflow: bool = setting(
        False, "the run in MLflow (MLFLOW_TRACKING_URI, else MLflow's default store; pip install 'vgglab[mlflow]')", resume=True
    )
    progress: Literal["auto", "bar", "line", "none"] = setting(
        "auto", "auto: a bar on a terminal or in a notebook, else plain lines every progress_s seconds", resume=True
    )
    progress_s: Annotated[Number, Field(gt=0)] | None = setting(
        None, "seconds between plain progress lines; null: $VGGLAB_PROGRESS_S, else 30", resume=True
    )

    @model_validator(mode="after")
    def _installed(self):
        for key in ("tensorboard", "mlflow"):
            if getattr(self, key) is True and importlib.util.find_spec(key) is None:  # before any run file is written
                raise ConfigError(
                    f"log.{key}: true needs the {key} package: pip install 'vgglab[{key}]' (or set log.{key}: false)"
                )
        return self
