"""The small named steps of training: one epoch, one evaluation, the weight averages."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..data.views import view_probs
from ..device import autocast
from ..errors import VgglabError
from .config import TrainConfig
from .distributed import all_sum

if TYPE_CHECKING:  # annotations only: state.py builds on this module
    from .state import TrainState


class TrainingDiverged(VgglabError):
    pass


def maybe_compile(module: nn.Module, setting: bool | str) -> nn.Module:
    """``train.compile``: false, true (inductor's default mode), reduce-overhead or max-autotune."""
    if setting is False:
        return module
    if next(module.parameters(), torch.empty(0)).device.type == "mps":
        warnings.warn(
            "train.compile is not used on Apple's MPS (torch.compile's MPS backend is experimental): running uncompiled",
            stacklevel=2,
        )
        return module
    mode = None if setting is True or setting == "default" else str(setting)
    return cast(nn.Module, torch.compile(module, mode=mode))  # of a Module: an OptimizedModule, itself a Module


CHECK_EVERY = 100  # steps between host reads of the non-finite-loss flag (each read waits for the device)


def train_one_epoch(
    model,
    loader,
    state: TrainState,
    *,
    train: TrainConfig | None = None,
    precision="fp32",
    on_step=None,
    frozen=(),
    check_every=CHECK_EVERY,
) -> dict:
    """One pass over ``loader``, stepping ``state`` (its optimiser, schedule, grad scaler and weight
    averages; ``model`` is ``state.model`` or its DDP / compiled wrapper) with ``train``'s label
    smoothing and gradient clipping; returns mean loss and top-1 (fraction) over the seen samples.

    Nothing is read back to the host per step, so a CUDA device runs ahead of Python: the loss and
    accuracy sums stay on the device, a non-finite loss is flagged there (its first batch index
    kept) and raised every ``check_every`` steps and at the end. ``on_step(seen, means)`` is
    called after every step with the images seen (a host count) and ``means()``, which reads the
    running loss and top-1 from the device: the caller decides how rarely to pay for that read.
    ``frozen`` modules stay in eval mode (BatchNorm keeps its running statistics)."""
    tc = train or TrainConfig()
    device, optimizer, scaler = loader.device, state.optimizer, state.scaler
    model.train()
    for m in frozen:
        m.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)  # batch index of the first non-finite loss
    seen = 0
    step = -1
    ema_from = round(tc.ema_start * len(loader) * tc.epochs)  # the global step the average starts at
    for step, (x, y) in enumerate(loader):
        with autocast(device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if tc.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if tc.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
        state.schedule.step_batch()
        if state.ema is not None and state.step + step >= ema_from:
            state.ema.update_parameters(model)
        if state.lookahead is not None:
            state.lookahead.after_step()
        n = len(y)
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == y).sum()
        seen += n
        if (step + 1) % check_every == 0:
            _raise_if_diverged(first_bad)
        if on_step is not None:
            on_step(seen, lambda: _means(loss_sum, correct, seen))  # noqa: B023 (on_step calls it within this step)
    _raise_if_diverged(first_bad)
    loss_sum, correct, seen_t = all_sum(loss_sum, correct, torch.tensor(seen, device=device))  # over all ranks
    stats = torch.stack([loss_sum, correct.double(), seen_t.double()]).tolist()  # one read for all three
    return {"loss": stats[0] / stats[2], "top1": stats[1] / stats[2], "n": int(stats[2])}


def _means(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float]:
    total, right = torch.stack([loss_sum, correct.double()]).tolist()
    return total / seen, right / seen


def _raise_if_diverged(first_bad: torch.Tensor) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise TrainingDiverged(f"loss became nan or inf at batch {bad}")


@torch.inference_mode()
def evaluate_batches(model, loader, *, precision="fp32", tta="none", progress=None) -> dict:
    """Mean cross-entropy and top-1 (fraction) of ``model`` on every sample of ``loader``;
    with ``tta`` (none, flip, flip-shift, flip-translate; see ``vgglab.evaluate.tta``) of its views'
    averaged probabilities, and then also ``plain_loss`` / ``plain_top1`` of the first view (the
    plain center crop) from the same pass. The sums live on ``loader.device``.

    Under torchrun each rank evaluates its shard and the sums are all-reduced, which gives
    exactly the single-process numbers. ``progress`` (a :class:`~vgglab.progress.Progress`)
    advances by each batch's images, counted on the host."""
    device = loader.device
    model.eval()
    sums = torch.zeros(5, device=device, dtype=torch.float64)  # loss, correct, n, plain loss, plain correct
    for x, y in loader:
        with autocast(device, precision):
            if tta == "none":
                logits = plain = model(x).float()
            else:  # logs of probabilities: argmax and cross-entropy as for logits
                probs = view_probs(model, x, tta, x.shape[-1])
                logits, plain = probs.mean(0).clamp_min(1e-12).log(), probs[0].clamp_min(1e-12).log()
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                (logits.argmax(1) == y).sum().double(),
                torch.tensor(len(y), dtype=torch.float64, device=device),
                F.cross_entropy(plain, y, reduction="sum").double(),
                (plain.argmax(1) == y).sum().double(),
            ]
        )
        if progress is not None:
            progress.advance(len(y))
    if progress is not None:
        progress.close()
    (sums,) = all_sum(sums)
    total, right, n, plain_total, plain_right = sums.tolist()  # the one read back
    n = max(int(n), 1)
    out = {"loss": total / n, "top1": right / n, "n": int(n)}
    if tta != "none":
        out.update(plain_loss=plain_total / n, plain_top1=plain_right / n)
    return out
