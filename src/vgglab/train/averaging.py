"""The weight averages a run may keep beside its weights: Lookahead (the speed-run recipes') and an
exponential moving average. Their state lives in ``TrainState``; the loop steps them."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Lookahead:
    """Weight averaging with periodic reset (Zhang et al. 2019, in the form the CIFAR-10 speed
    runs use): every ``every`` steps, ``avg <- d * avg + (1 - d) * w`` and then ``w <- avg``, with
    ``d = decay * (step / total_steps) ** power`` ramping up from 0, over every floating-point
    tensor of the state dict (BatchNorm running statistics too). :meth:`finish` ends on the average.
    """

    def __init__(self, model: nn.Module, every: int, decay: float, power: float, total_steps: int):
        self.model = model  # the bare model (not its DDP / compiled wrapper), so state-dict keys agree
        self.every, self.decay, self.power, self.total = every, decay, power, max(1, total_steps)
        self.step = 0
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def weight(self, step: int) -> float:
        """The average's weight ``d`` at optimizer step ``step``."""
        return self.decay * (step / self.total) ** self.power

    @torch.no_grad()
    def _sync(self, d: float) -> None:
        state = self.model.state_dict()
        for k, avg in self.avg.items():
            avg.lerp_(state[k], 1.0 - d)
            state[k].copy_(avg)

    def after_step(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self._sync(self.weight(self.step))

    def finish(self) -> None:
        """Set the weights to the average (the last update of training)."""
        self._sync(1.0)

    def state_dict(self) -> dict:
        return {"step": self.step, "avg": self.avg}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for k, v in state["avg"].items():
            self.avg[k].copy_(v)


class EMA(torch.optim.swa_utils.AveragedModel):
    """An exponential moving average of the weights and buffers, ``avg <- d * avg + (1 - d) * w``:
    PyTorch's ``AveragedModel`` (same state-dict layout, so checkpoints load either way) with the
    update count kept on the host, where the parent reads ``n_averaged`` back from the device twice
    per step."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self._count = 0

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        mine = list(itertools.chain(self.module.parameters(), self.module.buffers()))
        theirs = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
        if self._count == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            floats = [(a, b) for a, b in zip(mine, theirs, strict=True) if a.is_floating_point()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - self.decay)
            for a, b in zip(mine, theirs, strict=True):
                if not a.is_floating_point():  # BatchNorm's step counter, as AveragedModel's EMA does it
                    a.copy_(a * self.decay + b * (1.0 - self.decay))
        self.n_averaged += 1
        self._count += 1

    @property
    def started(self) -> bool:
        """Whether any update has been averaged in (with ``train.ema_start``, none before it)."""
        return self._count > 0

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._count = int(self.n_averaged)
        return out
