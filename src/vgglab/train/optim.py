"""Optimisers and learning-rate schedules from the config."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, cfg: OptimConfig, batch_size: int = 1024) -> list[dict]:
    """Groups by weight decay (BatchNorm and biases exempt when asked) and by learning rate
    (the head at ``lr * head_lr_mult``). Frozen parameters are included: they have no gradient,
    so SGD/AdamW leave them alone, and they train once unfrozen.

    With ``cfg.decoupled`` a group meant to learn at rate ``r`` gets PyTorch's
    ``lr = r * (1 - momentum) * batch_size / 1024``: for a steady gradient, Nesterov/heavy-ball
    momentum multiplies steps by 1 / (1 - momentum), and a batch of B samples takes B / 1024 of
    a 1024-sample step. Its weight decay is ``weight_decay / r``, so that lr * decay, the fraction
    the weights shrink per 1024 samples, is ``weight_decay`` whatever r, B and momentum are.
    (The idea and the 1024-sample unit follow Jordan 2024, "94% on CIFAR-10 in 3.29 seconds".)
    """
    bn_bias = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    no_decay = set()
    if cfg.no_decay_bn_bias:
        no_decay = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
        no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    groups: dict[tuple[float, float], list] = {}
    filters = []
    for name, p in model.named_parameters():
        if cfg.muon and p.ndim == 4:
            filters.append(p)
            continue
        lr = cfg.lr * (cfg.head_lr_mult if name.startswith("head.") else 1.0) * (cfg.bn_bias_lr_mult if id(p) in bn_bias else 1.0)
        wd = 0.0 if id(p) in no_decay else cfg.weight_decay
        if cfg.decoupled:
            lr, wd = lr * (1.0 - cfg.momentum) * batch_size / 1024, wd / lr
        groups.setdefault((lr, wd), []).append(p)
    out = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    if filters:  # last, so that the first group (the schedule's reference) is an SGD one
        out.append({"params": filters, "lr": cfg.muon_lr, "weight_decay": cfg.muon_weight_decay, "muon": True})
    return out


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = NS_COEFFICIENTS) -> torch.Tensor:
    """An approximately orthogonal matrix with ``g``'s singular vectors (its singular values pushed
    to roughly 0.7-1.2): the quintic Newton-Schulz iteration with the coefficients (3.4445, -4.7750,
    2.0315) of Jordan et al. 2024 ("Muon: an optimizer for hidden layers"), also torch.optim.Muon's,
    unless ``coefficients`` gives others (hiverge's CIFAR-10 record: 3.4576, -4.7391, 2.0843)."""
    a, b, c = coefficients
    x = g / (g.norm() + 1e-7)
    wide = x.shape[0] <= x.shape[1]
    if not wide:
        x = x.T
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return x if wide else x.T


class MuonSGD(torch.optim.SGD):
    """SGD for every group but the one marked ``muon`` (the convolution filters, see
    :func:`param_groups`), which steps by Muon: Nesterov momentum ``muon_momentum``, the update
    orthogonalised per filter tensor, the tensor first rescaled to norm sqrt(out_channels).
    torch.optim.Muon takes 2-D parameters only; a filter bank is used as out x (in * k * k).
    One optimiser, so the schedule, lookahead and checkpoints treat it like plain SGD."""

    def __init__(
        self,
        groups: list[dict],
        lr: float,
        momentum: float,
        nesterov: bool,
        muon_momentum: float,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_steps: int = 5,
    ):
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov)
        self.muon_momentum = muon_momentum
        self.ns_coefficients, self.ns_steps = ns_coefficients, ns_steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon = [g for g in self.param_groups if g.get("muon")]
        for group in muon:
            self._muon_step(group)
        everything = self.param_groups
        self.param_groups = [g for g in everything if not g.get("muon")]
        try:
            super().step()
        finally:
            self.param_groups = everything
        return loss

    def _muon_step(self, group: dict) -> None:
        mu = self.muon_momentum
        for p in group["params"]:
            if p.grad is None:
                continue
            buf = self.state[p].get("momentum_buffer")
            if buf is None:
                buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            buf.mul_(mu).add_(p.grad)
            update = p.grad.add(buf, alpha=mu)  # Nesterov
            p.mul_(p.shape[0] ** 0.5 / p.norm().clamp_min(1e-12))
            if group["weight_decay"]:  # decoupled, as torch.optim.Muon's (0 in the earlier recipes)
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
            o = newton_schulz(update.reshape(len(update), -1).float(), self.ns_steps, self.ns_coefficients).view_as(p)
            p.add_(o.to(p.dtype), alpha=-group["lr"])


def build_optimizer(model: nn.Module, cfg: OptimConfig, batch_size: int = 1024) -> torch.optim.Optimizer:
    """``batch_size`` is the global batch (it matters only with ``cfg.decoupled``)."""
    groups = param_groups(model, cfg, batch_size)
    # On CUDA, PyTorch's fused kernels update every parameter in a few launches (the per-tensor
    # loop is launch-bound for small models); on a CPU the default (foreach where it exists) stays.
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    fast = {"fused": True} if on_cuda else {}
    if cfg.name == "sgd" and cfg.muon:
        return MuonSGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            muon_momentum=cfg.muon_momentum,
            ns_coefficients=cfg.muon_ns_coefficients,
            ns_steps=cfg.muon_ns_steps,
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **fast)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **fast)


@torch.no_grad()
def start_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give parameters that are about to take their first SGD step (just unfrozen) a zero momentum
    buffer where others of their group already have one. PyTorch's fused SGD (used on CUDA) cannot
    step such a mixed group; without dampening the zero buffer gives the very same first step
    (``buf = momentum * 0 + grad = grad``), so results are unchanged."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group["momentum"] == 0 or group["dampening"] != 0:
            continue
        params = [p for p in group["params"] if p.requires_grad]
        if any(optimizer.state[p].get("momentum_buffer") is not None for p in params):
            for p in params:
                if optimizer.state[p].get("momentum_buffer") is None:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)


class Schedule:
    """Learning-rate schedule stepped per batch (step/cosine/linear) or per epoch (plateau).

    ``plateau`` is the VGG recipe: multiply the LR by ``factor`` when the monitored
    validation accuracy (or, with no validation split, training loss) stops improving.
    ``optim`` (the recipe's optimiser section) sets the units :attr:`lr` reports in.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        steps_per_epoch: int,
        epochs: int,
        monitor_mode: Literal["min", "max"],
        optim: OptimConfig | None = None,
    ):
        self.cfg = cfg
        self.optimizer = optimizer
        # the first group's rate before any scheduling: lr / this is the schedule's current factor
        self._base = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        self._recipe_lr = optim.lr if optim is not None else self._base
        self.plateau = None
        self.lambda_lr = None
        if cfg.name == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode=monitor_mode,
                factor=cfg.factor,
                patience=cfg.patience,
                threshold=cfg.threshold,
                min_lr=cfg.min_lr,
            )
        elif cfg.name != "none":
            total = max(1, steps_per_epoch * epochs)
            warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
            base = optimizer.param_groups[0]["lr"]
            floor = cfg.end_factor if cfg.end_factor is not None else cfg.min_lr / base

            def factor(step: int) -> float:
                if step < warmup:
                    return cfg.warmup_start + (1 - cfg.warmup_start) * (step + 1) / warmup
                if cfg.name == "step":
                    return max(floor, cfg.gamma ** (step // steps_per_epoch // cfg.step_size))
                t = min(1.0, (step - warmup) / max(1, total - warmup))
                if cfg.name == "cosine":
                    return max(cfg.floor, floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
                return max(cfg.floor, floor + (1 - floor) * (1 - t))  # linear decay to min_lr

            self.lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step_batch(self) -> None:
        if self.lambda_lr is not None:
            self.lambda_lr.step()

    def step_epoch(self, monitored: float) -> None:
        """``monitored`` is validation top-1 (or training loss when there is no validation split)."""
        if self.plateau is not None:
            self.plateau.step(monitored)

    @property
    def lr(self) -> float:
        """The learning rate in the recipe's own units (``optim.lr`` times the schedule's factor),
        also under ``optim.decoupled``, where PyTorch's rate is rescaled (see param_groups)."""
        return self._recipe_lr * (self.optimizer.param_groups[0]["lr"] / self._base)

    def state_dict(self) -> dict:
        sched = self.plateau or self.lambda_lr
        if sched is None:
            return {}
        state = sched.state_dict()
        state.pop("lr_lambdas", None)  # functions are rebuilt from the config
        return state

    def load_state_dict(self, state: dict) -> None:
        sched = self.plateau or self.lambda_lr
        if sched is not None and state:
            sched.load_state_dict({**state, "lr_lambdas": [None]} if self.lambda_lr is not None else state)
        if self.lambda_lr is not None and state:
            # the rate of the step reached, from this config's schedule: the same value the checkpoint
            # holds, unless a resume changed train.epochs, which recomputes the curve from here on
            s = self.lambda_lr
            for group, base, fn in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas, strict=True):
                group["lr"] = base * fn(s.last_epoch)
