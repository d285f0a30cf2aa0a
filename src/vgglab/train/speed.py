"""Speed settings decided on the machine a run is on: ``train.precision: auto`` and
``train.channels_last: auto``.

No fixed choice is right everywhere: bf16 autocast is 1.3-1.9x faster than fp32 on the CPUs with
native bf16 measured (AVX-512 BF16 / AMX) and 15-25x *slower* where it is emulated (AVX2 only), and
channels_last measured 0.95x on one 2-core Xeon and 1.22x on a 2-core EPYC. So on a CPU a short
probe (a few SGD steps of the run's own model on random data, the arms interleaved round by round)
times the candidates and keeps the fastest; its verdict is cached per (CPU model, torch version,
threads, model, batch) in the cache directory (``vgglab speed --forget`` clears it).

A probe that shares its cores with other jobs measures noise: where its spread (a median over
rounds, :func:`rates_of`) is larger than the gap it would decide, the verdict is inconclusive, the
choice is the one known to be faster on that hardware (bf16 where native, channels_last), the run's
header says so, and nothing is cached: the next run measures again.
On CUDA: bf16 where the GPU supports it, else fp16 with the grad scaler, and channels_last on.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.cache import cache_root, fingerprint
from ..errors import VgglabError
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
    """Images/s per arm (each arm's median step), with ``spread``: the probe's own noise, the median
    over rounds of how far each round's step ratio between arms strays from the median ratio (0 when
    there was one round). A median, not the worst step: one step disturbed by another job does not
    make a whole probe look noisy, while a probe that shared its cores throughout does."""

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
    provisional: bool = False  # the probe's noise decided part of it: not cached, measured again next run

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpeedChoice":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def header(self, precision_setting: str, channels_last_setting) -> str:
        cl_setting = "auto" if channels_last_setting in (None, "auto") else str(bool(channels_last_setting)).lower()
        return (f"precision {precision_setting} -> {self.precision} ({self.precision_reason}), "
                f"channels_last {cl_setting} -> {'on' if self.channels_last else 'off'} ({self.channels_last_reason})"
                + ("; the probe was inconclusive (noisy machine?): not cached, measured again next run" if self.provisional else ""))


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

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            warnings.warn(f"speed probe cache {self.path} is unreadable ({exc}); probing again", stacklevel=3)
            return {}
        if not isinstance(data, dict):
            warnings.warn(f"speed probe cache {self.path} is not a mapping of verdicts; probing again", stacklevel=3)
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
        return self._read()

    def forget(self) -> int:
        """Remove every cached verdict; returns how many there were."""
        n = len(self._read()) if self.path.is_file() else 0
        self.path.unlink(missing_ok=True)
        return n


def _valid_entry(entry) -> bool:
    """``{"rates": [[precision, channels_last, images/s], ...], "spread": number, ...}``."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    try:
        return (isinstance(entry, dict) and isinstance(entry.get("rates"), list) and entry["rates"] and number(entry.get("spread"))
                and all(isinstance(r, list) and len(r) == 3 and r[0] in ("fp32", "bf16", "fp16") and isinstance(r[1], bool)
                        and number(r[2]) and r[2] > 0 for r in entry["rates"]))
    except TypeError:
        return False


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
        key = probe_key(info, model, pb, f"arms={arms}")
        rates, source = _rates(cache, key, timer, model, arms, pb, device, budget_s)
        verdict = Verdict(rates, cl_auto, precision == "auto" and native)
        if source == "probe" and verdict.undecided:
            rates, source = _rates(cache, key, timer, model, arms, pb, device, budget_s, more=rates)  # measure once more
            verdict = Verdict(rates, cl_auto, precision == "auto" and native)
        if source != "cached probe":
            # a verdict that noise decided is not kept: the next run measures again
            cache.put(key, {"rates": [[p, cl, r] for (p, cl), r in rates.items()], "spread": rates.spread,
                            "provisional": verdict.inconclusive})
        verdict.apply(choice, cap, source)
    if precision == "bf16" and not native:
        choice.warning = _emulated_bf16_warning(model, choice.channels_last, device, info, cache, timer)
    return choice


# bf16 on every native-bf16 CPU measured (Xeon, EPYC Zen 4: benchmarks/results/cpu_settings-*, issue 26)
KNOWN_BF16_GAIN = "1.3-1.9x on the native-bf16 CPUs measured"


class Verdict:
    """What a probe's rates decide, and which of its decisions the probe's own noise could have made:
    two arms closer than ``margin`` (the noise floor, or the probe's spread when larger). A tie within
    the floor on a quiet probe is a real tie (either is as fast); a gap within a larger spread is
    ``inconclusive``: the choice then falls back to what is known to be faster on such hardware."""

    def __init__(self, rates: Rates, cl_auto: bool, bf16_candidate: bool):
        self.rates, self.cl_auto, self.bf16_candidate = rates, cl_auto, bf16_candidate
        self.margin = max(NOISE_FLOOR, rates.spread)
        self.noisy = rates.spread > NOISE_FLOOR
        precisions = sorted({p for p, _ in rates}, key=["fp32", "bf16", "fp16"].index)
        self.tied = {p: cl_auto and _tied(rates, (p, False), (p, True), self.margin) for p in precisions}
        self.best = {p: (p, CPU_TIE_LAYOUT) if self.tied[p] else max((a for a in rates if a[0] == p), key=rates.get)
                     for p in precisions}
        self.gain = rates[self.best["bf16"]] / rates[self.best["fp32"]] if bf16_candidate else None
        self.precision_close = self.gain is not None and abs(self.gain - 1) < self.margin
        # on a quiet probe a bf16 gain within the floor is a measured "no faster" (fp32 then); only noise makes it unclear
        self.precision_unclear = self.precision_close and self.noisy

    @property
    def undecided(self) -> bool:
        """Worth measuring once more: a layout tie, or a precision gap within the noise."""
        return any(self.tied.values()) or self.precision_close

    @property
    def inconclusive(self) -> bool:
        """A decision that only the probe's noise made (not to be cached as a verdict)."""
        return self.noisy and self.undecided

    def apply(self, choice: SpeedChoice, cap: str, source: str) -> None:
        rates, margin = self.rates, self.margin
        pick = self.best["fp32"] if "fp32" in self.best else next(iter(self.best.values()))
        if self.gain is not None:
            gain = self.gain
            if self.precision_unclear:
                pick = self.best["bf16"]
                choice.precision_reason = (f"native bf16 ({cap}); {gain:.2f}x fp32 in the {source}, within its noise ({margin:.0%}): "
                                           f"inconclusive, so bf16, {KNOWN_BF16_GAIN}")
            elif gain >= BF16_MIN_GAIN:
                pick = self.best["bf16"]
                choice.precision_reason = f"native bf16 ({cap}), {gain:.2f}x fp32 in the {source}"
            else:
                choice.precision_reason = (f"native bf16 ({cap}), but it measured {gain:.2f}x fp32 in the {source}, "
                                           f"below the {BF16_MIN_GAIN:.2f}x worth its rounding")
        choice.precision, choice.channels_last = pick
        if self.cl_auto:
            other = (pick[0], not pick[1])
            choice.channels_last_reason = f"{_ratio_text(rates, pick, other)} {'NCHW' if pick[1] else 'channels_last'} in the {source}"
            if self.tied[pick[0]]:
                if self.noisy:
                    choice.channels_last_reason += (f", within its noise ({margin:.0%}): inconclusive, kept the layout never "
                                                    "much slower on CPUs")
                else:
                    choice.channels_last_reason += f", a tie (within {margin:.0%}): kept the layout never much slower on CPUs"
        choice.provisional = self.inconclusive


def _tied(rates: dict, a, b, margin: float) -> bool:
    """Whether arms ``a`` and ``b`` (both measured) differ by less than ``margin``."""
    return a in rates and b in rates and abs(rates[a] / rates[b] - 1) < margin


def _rates(cache: ProbeCache, key: str, timer, model, arms, batch, device, budget_s, more: dict | None = None) -> tuple[Rates, str]:
    """Images/s per arm from the cache (a verdict that was not provisional), else measured by
    ``timer``; and which it was. ``more``: rates already measured, to which another measurement
    adds (each arm's best of both; the spread the smaller, as the better-informed)."""
    cached = cache.get(key) if more is None else None
    if cached is not None and not cached.get("provisional"):
        rates = Rates({(p, cl): r for p, cl, r in cached["rates"]})
        rates.spread = cached["spread"]
        if set(rates) == set(arms):
            return rates, "cached probe"
    got = timer(model, arms, batch, device, budget_s)
    rates = Rates(got)
    rates.spread = getattr(got, "spread", 0.0)
    if more is None:
        return rates, "probe"
    both = Rates({a: max(more[a], got[a]) for a in arms})
    both.spread = min(getattr(more, "spread", 0.0), rates.spread)
    return both, "probe, measured twice"


def _emulated_bf16_warning(model, channels_last, device, info, cache, timer) -> str:
    """Measured at a small batch: emulated bf16 steps are so slow that a full-size one takes minutes."""
    arms = [("fp32", channels_last), ("bf16", channels_last)]
    key = probe_key(info, model, 8, f"arms={arms}")
    rates, source = _rates(cache, key, timer, model, arms, 8, device, 0.0)
    if source != "cached probe":
        cache.put(key, {"rates": [[p, cl, r] for (p, cl), r in rates.items()], "spread": rates.spread, "provisional": False})
    slowdown = rates[arms[0]] / rates[arms[1]]
    return (f"warning: train.precision bf16 on a CPU without native bf16 ({info['cpu_capability']}) is emulated and "
            f"measured {slowdown:.1f}x slower than fp32 here; set train.precision: auto (or fp32)")
