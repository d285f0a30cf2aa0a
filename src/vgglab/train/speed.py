"""Speed settings decided on the machine a run is on: ``train.precision: auto`` and
``train.channels_last: auto``.

No fixed choice is right everywhere: bf16 autocast is ~1.1x faster than fp32 on a CPU with native
bf16 (AVX-512 BF16 / AMX) and 15-25x *slower* where it is emulated (AVX2 only), and channels_last
measured 0.95x on one 2-core Xeon and 1.22x on a 2-core EPYC. So on a CPU a short probe (a few
SGD steps of the run's own model on random data) times the candidates and keeps the fastest; its
verdict is cached per (CPU model, torch version, threads, model, batch) in the cache directory.
On CUDA: bf16 where the GPU supports it, else fp16 with the grad scaler, and channels_last on.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.cache import cache_root, fingerprint
from ..files import write_text

PROBE_BATCH = 128  # images per probe step at most: larger batches give the same images/s on a CPU
PROBE_BUDGET_S = 10.0  # soft limit of one probe (up to 3x at the run's own batch); cached per machine, model and batch
BF16_MIN_GAIN = 1.05  # bf16 costs a little accuracy: keep it only where it is clearly faster
# Two arms closer than this, or than the probe's own spread, are a tie: measured once more, and if
# still tied the layout never much slower on CPUs is kept (channels_last: 0.95x NCHW at worst on the
# Xeon, 1.17-1.22x on the EPYC; benchmarks/results/cpu_settings-*). A 2-core shared machine's steps
# vary by a few percent, enough to flip a verdict between two equal arms.
NOISE_FLOOR = 0.03
CPU_TIE_LAYOUT = True


class Rates(dict):
    """Images/s per arm, with ``spread``: the probe's own noise, the largest relative gap between an
    arm's best step and its next best (0 when an arm was timed once)."""

    spread: float = 0.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether oneDNN runs bf16 in hardware here (AVX-512 BF16 or AMX); otherwise it is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:
        return "unknown"


def machine_info() -> dict:
    """The facts a speed figure depends on, recorded beside every run and benchmark."""
    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "cpu_capability": cpu_capability(),
        "native_bf16": native_bf16(), "threads": torch.get_num_threads(), "torch": str(torch.__version__), "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = str(torch.cuda.get_device_name())
    return info


def machine_label(info: dict | None = None) -> str:
    """One line naming the machine, e.g. ``AMD EPYC (2 cores, AVX2, no native bf16), torch 2.14.1``."""
    info = info or machine_info()
    cpu = f"{info['cpu']} ({info['cores']} cores, {info['cpu_capability']}, {'native' if info['native_bf16'] else 'no native'} bf16)"
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{cpu}{gpu}, torch {info['torch']}"


@dataclass
class SpeedChoice:
    """What ``auto`` resolved to, and why: recorded in config.yaml (``resolved``) and checkpoints."""

    precision: str
    channels_last: bool
    precision_reason: str = "set in the config"
    channels_last_reason: str = "set in the config"
    machine: dict = field(default_factory=dict)
    warning: str | None = None  # a pinned setting that measured much slower than the alternative

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpeedChoice":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def header(self, precision_setting: str, channels_last_setting) -> str:
        cl_setting = "auto" if channels_last_setting in (None, "auto") else str(bool(channels_last_setting)).lower()
        return (f"precision {precision_setting} -> {self.precision} ({self.precision_reason}), "
                f"channels_last {cl_setting} -> {'on' if self.channels_last else 'off'} ({self.channels_last_reason})")


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cpu_capability", "native_bf16", "threads", "torch", "gpu")
    return all(a.get(k) == b.get(k) for k in keys)


def _probe_step(model: nn.Module, precision: str, channels_last: bool, batch: int, device: torch.device):
    """A closure doing one SGD step of a private copy of ``model`` on random data."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = copy.deepcopy(model).to(device, memory_format=fmt).train()
    cfg = m.config
    x = torch.randn(batch, cfg.in_chans, cfg.input_size, cfg.input_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(m(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_arms(model: nn.Module, arms: list[tuple[str, bool]], batch: int, device: torch.device,
              budget_s: float = PROBE_BUDGET_S, max_rounds: int = 5, min_rounds: int = 3) -> Rates:
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
            calibrate = _probe_step(model, *arms[0], 2, device)
            calibrate()  # the first step sets up the kernels
            t = time.perf_counter()
            calibrate()
            per_image = (time.perf_counter() - t) / 2
            # the layout verdict depends on the batch (on the EPYC a probe at a lowered batch chose NCHW, where
            # batch 128 runs 1.14x faster in channels_last): keep the run's batch unless a warm-up and
            # min_rounds rounds would take over 3x the budget
            batch = max(2, min(batch, int(3 * budget_s / ((1 + min_rounds) * len(arms) * per_image))))
        steps = {a: _probe_step(model, *a, batch, device) for a in arms}
        for s in steps.values():
            s()
        t_start = time.perf_counter()
        times: dict = {a: [] for a in arms}
        order = list(steps.items())
        for r in range(max_rounds):
            if r >= min_rounds and time.perf_counter() - t_start > budget_s * (r / (r + 1)):
                break
            for a, s in (order if r % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                s()
                times[a].append(time.perf_counter() - t)
    rates = Rates({a: batch / min(ts) for a, ts in times.items()})
    rates.spread = max((sorted(ts)[1] / sorted(ts)[0] - 1 for ts in times.values() if len(ts) > 1), default=0.0)
    return rates


class ProbeCache:
    """Verdicts of earlier probes, one JSON file in the cache directory."""

    def __init__(self, root: str | Path | None = None):
        self.path = cache_root(str(root) if root else None) / "speed_probe.json"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> dict | None:
        return self._read().get(key)

    def put(self, key: str, value: dict) -> None:
        data = self._read()
        data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(data, indent=1))


def probe_key(info: dict, model: nn.Module, batch: int, what: str) -> str:
    return fingerprint(what, info["cpu"], info["cpu_capability"], info["threads"], info["torch"],
                       sorted(model.config.to_dict().items()), batch)


def _ratio_text(rates: dict, a, b) -> str:
    return f"{rates[a] / rates[b]:.2f}x"


def resolve_speed(precision: str, channels_last, model: nn.Module, batch: int, device: torch.device, *,
                  cache_dir=None, previous: dict | None = None, budget_s: float = PROBE_BUDGET_S,
                  timer=None) -> SpeedChoice:
    """Resolve ``precision`` (auto, fp32, bf16, fp16) and ``channels_last`` (auto/None, True, False)
    for ``model`` trained at ``batch`` on ``device``. ``previous``: a recorded choice (config.yaml's
    ``resolved``) that is reused as it is when it was made on this same machine."""
    cl_auto = channels_last in (None, "auto")
    info = machine_info()
    if previous and same_machine(previous.get("machine", {}), info):
        prev = SpeedChoice.from_dict(previous)
        if (precision == "auto" or precision == prev.precision) and (cl_auto or bool(channels_last) == prev.channels_last):
            return prev
    if device.type == "cuda":
        return _resolve_cuda(precision, channels_last, cl_auto, info)
    return _resolve_cpu(precision, channels_last, cl_auto, model, batch, device, info, ProbeCache(cache_dir), budget_s, timer or time_arms)


def _resolve_cuda(precision, channels_last, cl_auto, info) -> SpeedChoice:
    choice = SpeedChoice(precision, bool(channels_last), machine=info)
    if precision == "auto":
        if torch.cuda.is_bf16_supported():
            choice.precision, choice.precision_reason = "bf16", f"{info['gpu']} supports bf16"
        else:
            choice.precision, choice.precision_reason = "fp16", f"no bf16 on {info['gpu']}: fp16 with the grad scaler"
    if cl_auto:
        choice.channels_last, choice.channels_last_reason = True, "CUDA: tensor-core convolutions want NHWC"
    return choice


def _resolve_cpu(precision, channels_last, cl_auto, model, batch, device, info, cache, budget_s, timer) -> SpeedChoice:
    native = native_bf16()
    cap = info["cpu_capability"]
    layouts = [False, True] if cl_auto else [bool(channels_last)]
    if precision == "auto":
        precisions = ["fp32", "bf16"] if native else ["fp32"]
    else:
        precisions = [precision]
    choice = SpeedChoice(precisions[0], layouts[0], machine=info)
    if precision == "auto" and not native:
        choice.precision_reason = f"no native bf16 on this CPU: {cap}"
    # emulated bf16 steps take ~20x longer: probe its layouts on a small batch to stay near the budget
    pb = min(batch, 16 if precision == "bf16" and not native else PROBE_BATCH)
    arms = [(p, cl) for p in precisions for cl in layouts]
    if len(arms) > 1:
        rates, source = _rates(cache, timer, model, arms, pb, device, info, budget_s)
        margin = max(NOISE_FLOOR, getattr(rates, "spread", 0.0))
        if cl_auto and any(_tied(rates, (p, False), (p, True), margin) for p in precisions):
            rates, source = _rates(cache, timer, model, arms, pb, device, info, budget_s, more=rates)  # measure once more
            margin = max(NOISE_FLOOR, getattr(rates, "spread", 0.0))
        tied = {p: cl_auto and _tied(rates, (p, False), (p, True), margin) for p in precisions}
        best = {p: (p, CPU_TIE_LAYOUT) if tied[p] else max((a for a in arms if a[0] == p), key=rates.get) for p in precisions}
        pick = best["fp32"] if "fp32" in best else best[precisions[0]]
        if "bf16" in best and precision == "auto":
            gain = rates[best["bf16"]] / rates[best["fp32"]]
            if gain >= max(BF16_MIN_GAIN, 1 + margin):
                pick = best["bf16"]
                choice.precision_reason = f"native bf16 ({cap}), {gain:.2f}x fp32 in the {source}"
            else:
                choice.precision_reason = f"native bf16 ({cap}) but only {gain:.2f}x fp32 in the {source}"
        choice.precision, choice.channels_last = pick
        if cl_auto:
            other = (pick[0], not pick[1])
            choice.channels_last_reason = (f"{_ratio_text(rates, pick, other)} "
                                           f"{'NCHW' if pick[1] else 'channels_last'} in the {source}")
            if tied[pick[0]]:
                choice.channels_last_reason += (f", within its noise ({margin:.0%}) twice: kept the layout never much slower "
                                                "on CPUs")
    if precision == "bf16" and not native:
        choice.warning = _emulated_bf16_warning(model, choice.channels_last, device, info, cache, timer)
    return choice


def _tied(rates: dict, a, b, margin: float) -> bool:
    """Whether arms ``a`` and ``b`` (both measured) differ by less than ``margin``."""
    return a in rates and b in rates and abs(rates[a] / rates[b] - 1) < margin


def _rates(cache: ProbeCache, timer, model, arms, batch, device, info, budget_s, more: dict | None = None) -> tuple[dict, str]:
    """Images/s per arm from the cache, else measured by ``timer`` and cached; and which it was.
    ``more``: rates already measured, to which another measurement adds (each arm's best of both),
    once; a cached verdict is final (it was measured more when it needed to be)."""
    key = probe_key(info, model, batch, f"arms={arms}")
    cached = cache.get(key)
    if cached is not None and (more is None or cached.get("measured_more")):
        rates = Rates({(p, cl): r for p, cl, r in cached["rates"]})
        rates.spread = cached.get("spread", 0.0)
        return rates, "cached probe"
    got = timer(model, arms, batch, device, budget_s)
    rates = Rates(got)
    rates.spread = getattr(got, "spread", 0.0)
    if more is not None:
        rates = Rates({a: max(more[a], got[a]) for a in arms})
        rates.spread = max(getattr(more, "spread", 0.0), getattr(got, "spread", 0.0))
    cache.put(key, {"rates": [[p, cl, r] for (p, cl), r in rates.items()], "spread": rates.spread, "measured_more": more is not None})
    return rates, "probe" if more is None else "probe, measured twice"


def _emulated_bf16_warning(model, channels_last, device, info, cache, timer) -> str:
    """Measured at a small batch: emulated bf16 steps are so slow that a full-size one takes minutes."""
    arms = [("fp32", channels_last), ("bf16", channels_last)]
    rates, _ = _rates(cache, timer, model, arms, 8, device, info, 0.0)
    slowdown = rates[arms[0]] / rates[arms[1]]
    return (f"warning: train.precision bf16 on a CPU without native bf16 ({info['cpu_capability']}) is emulated and "
            f"measured {slowdown:.1f}x slower than fp32 here; set train.precision: auto (or fp32)")
