"""The speed probe's instrument: timing a model's training steps or forward passes in each
(precision, memory layout) arm, the probe's noise, and the cache of its verdicts. What the
timings decide is :mod:`vgglab.speed.resolve`'s."""

from __future__ import annotations

import collections
import copy
import json
import math
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.cache import cache_root, fingerprint
from ..errors import VgglabError
from ..files import write_text
from ..models.vgg import config_of

PROBE_BUDGET_S = 10.0  # soft limit of one probe (up to 3x at the run's own batch); cached per machine, model and batch


class Rates(dict[tuple[str, bool], float]):
    """Images/s per arm (each arm's median step), with ``spread``: the probe's own noise, the median
    over rounds of how far each round's step ratio between arms strays from the median ratio (0 when
    there was one round). A median, not the worst step: one step disturbed by another job does not
    make a whole probe look noisy, while a probe that shared its cores throughout does."""

    spread: float = 0.0


def shared_parameters(model: nn.Module, train: bool) -> dict[int, nn.Parameter]:
    """What the arms of one probe share instead of each copying: every parameter a step leaves as it is
    (the frozen ones; all of them for forward passes) is ``model``'s own; the trainable ones are one
    private copy that every arm's steps update (their values do not change a step's time). The arms
    are alive together: one copy each of VGG-16's 500 MB of FC weights made four arms 2 GB of peak memory."""
    return {id(p): p if not train or not p.requires_grad else nn.Parameter(p.detach().clone()) for p in model.parameters()}


def _probe_step(
    model: nn.Module,
    precision: str,
    channels_last: bool,
    batch: int,
    device: torch.device,
    train: bool = True,
    shared: dict[int, nn.Parameter] | None = None,
    opt_state: collections.defaultdict[torch.Tensor, dict] | None = None,
):
    """A closure doing one SGD step (``train``) or one forward pass in inference mode of a private
    copy of ``model`` on random data; it holds ``shared``'s parameters (see :func:`shared_parameters`)
    but the 4-D filters a channels_last arm rewrites, and keeps its optimiser state in ``opt_state``
    (the arms' common one, keyed by parameter)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    memo = {k: p for k, p in (shared or {}).items() if p.dim() != 4 or not channels_last}
    m = copy.deepcopy(model, memo=dict(memo)).to(device).to(memory_format=fmt).train(train)
    cfg = config_of(m)
    x = torch.randn(batch, cfg.in_chans, cfg.input_size, cfg.input_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            m(x)

    if not train:
        return forward
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    if opt_state is not None:  # one momentum buffer per shared parameter, not one per arm (keyed by the parameter)
        opt.state = opt_state

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(m(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_arms(
    model: nn.Module,
    arms: list[tuple[str, bool]],
    batch: int,
    device: torch.device,
    budget_s: float = PROBE_BUDGET_S,
    max_rounds: int = 5,
    min_rounds: int = 3,
    train: bool = True,
) -> Rates:
    """Images/s of each (precision, channels_last) arm: a warm-up step each, then timed steps in
    interleaved rounds (alternating the arms' order, so a shared machine's drift and any
    first-after-another effect hit every arm alike), at least ``min_rounds`` and more while the
    budget lasts; each arm's best step counts, and the gap to its next best is the probe's
    ``spread``. ``batch`` is lowered only where a 2-image step says that the warm-ups and
    ``min_rounds`` rounds at full size would take over 3x the budget (a 224-pixel VGG-16 step of 128
    images takes minutes on a laptop CPU); with one timed step per arm a verdict is a coin toss.
    The caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if budget_s > 0 and batch > 2:
            calibrate = _probe_step(model, *arms[0], 2, device, train, shared_parameters(model, train))
            calibrate()  # the first step sets up the kernels
            t = time.perf_counter()
            calibrate()
            per_image = (time.perf_counter() - t) / 2
            # the layout verdict depends on the batch (on the EPYC a probe at a lowered batch chose NCHW, where
            # batch 128 runs 1.14x faster in channels_last): keep the run's batch unless a warm-up and
            # min_rounds rounds would take over 3x the budget
            batch = max(2, min(batch, int(3 * budget_s / ((1 + min_rounds) * len(arms) * per_image))))
        shared = shared_parameters(model, train)
        opt_state: collections.defaultdict[torch.Tensor, dict] = collections.defaultdict(dict)
        steps = {a: _probe_step(model, *a, batch, device, train, shared, opt_state) for a in arms}
        for s in steps.values():
            s()
        t_start = time.perf_counter()
        times: dict = {a: [] for a in arms}
        order = list(steps.items())
        for r in range(max_rounds):
            if r >= min_rounds and time.perf_counter() - t_start > budget_s * (r / (r + 1)):
                break
            for a, s in order if r % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                s()
                times[a].append(time.perf_counter() - t)
    return rates_of(times, batch)


def rates_of(times: dict, batch: int) -> Rates:
    """Images/s per arm from the seconds of each of its steps (one per round, the arms interleaved),
    and the spread (see :class:`Rates`)."""
    rates = Rates({a: batch / statistics.median(ts) for a, ts in times.items()})
    arms = list(times)
    rounds = min(len(ts) for ts in times.values())
    if len(arms) > 1 and rounds > 1:
        base = arms[0]
        devs = []
        for a in arms[1:]:
            ratios = [times[a][r] / times[base][r] for r in range(rounds)]  # one round: the same conditions for both
            mid = statistics.median(ratios)
            devs += [abs(x / mid - 1) for x in ratios]
        rates.spread = statistics.median(devs)
    return rates


class ProbeCache:
    """Verdicts of earlier probes, one JSON file in the cache directory (``vgglab speed --forget``
    removes them). A file or entry of the wrong shape (hand-edited, another version's) is not
    trusted: a warning, and the probe measures again and rewrites it."""

    def __init__(self, root: str | Path | None = None):
        self.path = cache_root(str(root) if root else None) / "speed_probe.json"

    def _read(self, then: str = "probing again") -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            warnings.warn(f"speed probe cache {self.path} is unreadable ({exc}); {then}", stacklevel=3)
            return {}
        if not isinstance(data, dict):
            warnings.warn(f"speed probe cache {self.path} is not a mapping of verdicts; {then}", stacklevel=3)
            return {}
        return data

    def get(self, key: str) -> dict | None:
        entry = self._read().get(key)
        if entry is None or _valid_entry(entry):
            return entry
        warnings.warn(f"speed probe cache {self.path}: an entry of the wrong shape; probing again", stacklevel=3)
        return None

    def put(self, key: str, value: dict) -> None:
        data = self._read()
        data[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps(data, indent=1))
        except (OSError, VgglabError) as exc:
            warnings.warn(f"could not cache the speed probe's verdict ({exc}); it will be measured again next run", stacklevel=3)

    def entries(self) -> dict:
        """The verdicts that a run would use (a listing: nothing is probed here)."""
        data = self._read("the next run probes again (`vgglab speed --forget` removes it)")
        bad = [k for k, v in data.items() if not _valid_entry(v)]
        if bad:
            warnings.warn(
                f"speed probe cache {self.path}: {len(bad)} entr{'ies' if len(bad) > 1 else 'y'} of the wrong shape, "
                "not counted; the next run probes again",
                stacklevel=2,
            )
        return {k: v for k, v in data.items() if k not in bad}

    def forget(self) -> int:
        """Remove every cached verdict; returns how many there were."""
        n = len(self._read("removing it")) if self.path.is_file() else 0
        self.path.unlink(missing_ok=True)
        return n


def _valid_entry(entry) -> bool:
    """``{"rates": [[precision, channels_last, images/s], ...], "spread": number, ...}``."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    try:
        return (
            isinstance(entry, dict)
            and isinstance(entry.get("rates"), list)
            and entry["rates"]
            and number(entry.get("spread"))
            and all(
                isinstance(r, list)
                and len(r) == 3
                and r[0] in ("fp32", "bf16", "fp16")
                and isinstance(r[1], bool)
                and number(r[2])
                and r[2] > 0
                for r in entry["rates"]
            )
        )
    except TypeError:
        return False


def probe_key(info: dict, model: nn.Module, batch: int, what: str) -> str:
    return fingerprint(
        what,
        info["cpu"],
        info["cpu_capability"],
        info["threads"],
        info["torch"],
        sorted(config_of(model).to_dict().items()),
        batch,
    )


def time_forward(model: nn.Module, arms, batch: int, device: torch.device, budget_s: float = PROBE_BUDGET_S) -> Rates:
    """:func:`time_arms` of forward passes in inference mode (what eval, predict and features run)."""
    return time_arms(model, arms, batch, device, budget_s, train=False)
