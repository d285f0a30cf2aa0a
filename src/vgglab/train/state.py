"""What changes as a run trains, in one object with one checkpoint layout, and model selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .averaging import EMA, Lookahead
from .config import Config
from .optim import Schedule, build_optimizer


@dataclass
class Selection:
    """Which epoch's model is kept: with a validation split the best on validation top-1
    (``best.pt``); without one the last (``last.pt``), since training loss says nothing of
    generalisation. The test split never takes part."""

    has_val: bool
    epochs: int
    value: float | None = None
    epoch: int | None = None

    @property
    def mode(self) -> Literal["min", "max"]:
        """Whether larger monitored values are better (for ReduceLROnPlateau)."""
        return "max" if self.has_val else "min"

    @property
    def checkpoint_name(self) -> str:
        return "best.pt" if self.has_val else "last.pt"

    @staticmethod
    def monitored(train: dict, val: dict | None) -> float:
        """What drives the schedule and the selection: validation top-1, else training loss."""
        return val["top1"] if val is not None else train["loss"]

    def update(self, epoch: int, monitored: float) -> bool:
        """Record ``epoch``'s monitored value; True when its model is the one to keep."""
        improved = (self.value is None or monitored > self.value) if self.has_val else epoch == self.epochs
        if improved:
            self.value, self.epoch = monitored, epoch
        return improved

    def state_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.epoch = state["value"], state["epoch"]


def rng_state() -> dict:
    state: dict[str, object] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """The model and everything that trains it (optimiser, schedule, weight averages, grad scaler),
    the epoch and step reached and the model selection. :meth:`state_dict` is the checkpoint's
    training part and :meth:`load_state_dict` its one reader, so they cannot disagree."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    ema: EMA | None = None
    lookahead: Lookahead | None = None
    scaler: torch.amp.GradScaler | None = None
    selection: Selection = field(default_factory=lambda: Selection(has_val=True, epochs=1))
    epoch: int = 0
    step: int = 0

    @classmethod
    def create(cls, model: nn.Module, cfg: Config, steps_per_epoch: int, has_val: bool, precision: str) -> TrainState:
        """A fresh state for ``model`` (already on its device) as ``cfg`` configures it."""
        tc = cfg.train
        selection = Selection(has_val, tc.epochs)
        optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size)
        schedule = Schedule(optimizer, cfg.schedule, steps_per_epoch, tc.epochs, selection.mode, cfg.optim)
        lookahead = None
        if tc.lookahead_every:
            lookahead = Lookahead(model, tc.lookahead_every, tc.lookahead_decay, tc.lookahead_power, steps_per_epoch * tc.epochs)
        ema = EMA(model, tc.ema_decay) if tc.ema_decay else None
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        return cls(model, optimizer, schedule, ema, lookahead, scaler, selection)

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluated and saved: the weight average where there is one (once it has started:
        before ``train.ema_start`` the weights themselves)."""
        return self.ema.module if self.ema is not None and self.ema.started else self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_full": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "best": self.selection.state_dict(),
        }

    def release_training_memory(self) -> None:
        """Once the last epoch is checkpointed: drop the gradients and the optimiser's state (momentum
        and the like, one or two copies of every trained weight), which the final test does not need
        (VGG-16's head alone: 1 GB of the fine-tune's peak memory at its final test)."""
        for p in self.model.parameters():
            p.grad = None
        self.optimizer.state.clear()

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue from a checkpoint: every part, the RNG too, so the run goes on as if never stopped."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        if self.ema is not None and ckpt.get("ema_full"):
            self.ema.load_state_dict(ckpt["ema_full"])
        if self.lookahead is not None and ckpt.get("lookahead"):
            self.lookahead.load_state_dict(ckpt["lookahead"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.selection.load_state_dict(ckpt["best"])
