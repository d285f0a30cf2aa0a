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

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..strict import ConfigError, strict_init, typed_values
from .probe import PROBE_BUDGET_S, ProbeCache, Rates, probe_key, rates_of, time_arms, time_forward

__all__ = [
    "SpeedChoice",
    "ProbeCache",
    "Rates",
    "rates_of",
    "time_arms",
    "time_forward",
    "resolve_speed",
    "resolve_inference_precision",
    "machine_info",
    "machine_label",
    "native_bf16",
]

PROBE_BATCH = 128  # images per probe step at most: larger batches give the same images/s on a CPU
BF16_MIN_GAIN = 1.05  # bf16 costs a little accuracy: keep it only where it is clearly faster
# Two arms closer than this, or than the probe's own spread, are a tie: measured once more, and if
# still tied the layout never much slower on CPUs is kept (channels_last: 0.95x NCHW at worst on the
# Xeon, 1.17-1.22x on the EPYC; benchmarks/results/cpu_settings-*). A 2-core shared machine's steps
# vary by a few percent, enough to flip a verdict between two equal arms.
NOISE_FLOOR = 0.03
CPU_TIE_LAYOUT = True


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether bf16 arithmetic runs in hardware here (AVX-512 BF16 or AMX). oneDNN's own check
    says yes on any AVX-512 core, where it converts to fp32 around each op (measured 0.3-0.6x fp32
    on a Xeon whose hypervisor hides avx512_bf16 and amx), so where the kernel lists the CPU's
    flags, one of those two must be among them."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    flags = _cpu_flags()
    return flags is None or bool(flags & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags as Linux lists them; None where they cannot be read (other systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:
        return "unknown"


def machine_info() -> dict:
    """The facts a speed figure depends on, recorded beside every run and benchmark."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_capability": cpu_capability(),
        "native_bf16": native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "gpu": None,
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


RECORDED_PRECISIONS = ("fp32", "bf16", "fp16")  # what auto resolves to, or a pinned setting


@dataclass
class _MachineRecord:
    """The types of :func:`machine_info`'s fields, for reading a recorded one back."""

    cpu: str
    cores: int | None
    cpu_capability: str
    native_bf16: bool
    threads: int
    torch: str
    gpu: str | None


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
    def from_dict(cls, d: dict) -> SpeedChoice:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def read(cls, d, where: str) -> SpeedChoice:
        """A recorded choice (config.yaml's ``resolved``, a checkpoint's ``speed``) read as strictly
        as a recipe: vgglab wrote it, so a key, type or value it never writes means an edit, and
        reusing it would train or evaluate in a setting nobody chose (fp16 on a CPU, fp64)."""
        fix = "delete it and vgglab decides again on this machine"
        if isinstance(d, dict):  # a checkpoint's record also names the device kind and the settings asked for
            d = {k: v for k, v in d.items() if k not in ("device", "precision_setting", "channels_last_setting")}
        choice = strict_init(cls, d, where, error=lambda msg: ConfigError(f"{msg} ({where} is written by vgglab: {fix})"))
        if choice.precision not in RECORDED_PRECISIONS:
            raise ConfigError(
                f"{where}.precision {choice.precision!r} is not one vgglab records ({', '.join(RECORDED_PRECISIONS)}); {fix}"
            )
        typed_values(
            _MachineRecord,
            choice.machine,
            f"{where}.machine.",
            error=lambda msg: ConfigError(f"{msg} ({where} is written by vgglab: {fix})"),
        )
        if choice.precision == "fp16" and not choice.machine.get("gpu"):
            raise ConfigError(
                f"{where}.precision fp16 was recorded for a machine without a GPU (fp16 training is CUDA-only); {fix}"
            )
        return choice

    def header(self, precision_setting: str, channels_last_setting) -> str:
        cl_setting = "auto" if channels_last_setting in (None, "auto") else str(bool(channels_last_setting)).lower()
        return (
            f"precision {precision_setting} -> {self.precision} ({self.precision_reason}), "
            f"channels_last {cl_setting} -> {'on' if self.channels_last else 'off'} ({self.channels_last_reason})"
            + ("; the probe was inconclusive (noisy machine?): not cached, measured again next run" if self.provisional else "")
        )


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cpu_capability", "native_bf16", "threads", "torch", "gpu")
    return all(a.get(k) == b.get(k) for k in keys)


def _ratio_text(rates: dict, a, b) -> str:
    return f"{rates[a] / rates[b]:.2f}x"


def resolve_speed(
    precision: str,
    channels_last,
    model: nn.Module,
    batch: int,
    device: torch.device,
    *,
    cache_dir=None,
    previous: dict | None = None,
    budget_s: float = PROBE_BUDGET_S,
    timer=None,
) -> SpeedChoice:
    """Resolve ``precision`` (auto, fp32, bf16, fp16) and ``channels_last`` (auto/None, True, False)
    for ``model`` trained at ``batch`` on ``device``. ``previous``: a recorded choice (config.yaml's
    ``resolved``) that is reused as it is when it was made on this same machine."""
    cl_auto = channels_last in (None, "auto")
    info = machine_info()
    if previous and same_machine(previous.get("machine", {}), info):
        prev = SpeedChoice.from_dict(previous)
        if prev.precision == "fp16" and device.type != "cuda":  # the same machine, now training on its CPU
            pass
        elif (precision == "auto" or precision == prev.precision) and (cl_auto or bool(channels_last) == prev.channels_last):
            return prev
    if device.type == "cuda":
        return _resolve_cuda(precision, channels_last, cl_auto, info)
    if device.type == "mps":
        return _resolve_mps(precision, channels_last, cl_auto, info)
    return _resolve_cpu(
        precision, channels_last, cl_auto, model, batch, device, info, ProbeCache(cache_dir), budget_s, timer or time_arms
    )


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


def _resolve_mps(precision, channels_last, cl_auto, info) -> SpeedChoice:
    """Apple's MPS: fp32 and NCHW unless pinned. Its bf16 autocast needs macOS 14 and is not measured
    on any machine of this project, so auto keeps what is known to run; untested on real hardware."""
    choice = SpeedChoice("fp32" if precision == "auto" else precision, bool(channels_last), machine=info)
    if precision == "auto":
        choice.precision_reason = "MPS: fp32 (bf16 autocast there is unmeasured)"
    if cl_auto:
        choice.channels_last, choice.channels_last_reason = False, "MPS: NCHW"
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
        verdict, source = _decide(
            cache,
            probe_key(info, model, pb, f"arms={arms}"),
            timer,
            model,
            arms,
            pb,
            device,
            budget_s,
            cl_auto,
            precision == "auto" and native,
        )
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
        self.best = {
            p: (p, CPU_TIE_LAYOUT) if self.tied[p] else max((a for a in rates if a[0] == p), key=lambda a: rates[a])
            for p in precisions
        }
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
                choice.precision_reason = (
                    f"native bf16 ({cap}); {gain:.2f}x fp32 in the {source}, within its noise ({margin:.0%}): "
                    f"inconclusive, so bf16, {KNOWN_BF16_GAIN}"
                )
            elif gain >= BF16_MIN_GAIN:
                pick = self.best["bf16"]
                choice.precision_reason = f"native bf16 ({cap}), {gain:.2f}x fp32 in the {source}"
            else:
                choice.precision_reason = (
                    f"native bf16 ({cap}), but it measured {gain:.2f}x fp32 in the {source}, "
                    f"below the {BF16_MIN_GAIN:.2f}x worth its rounding"
                )
        choice.precision, choice.channels_last = pick
        if self.cl_auto:
            other = (pick[0], not pick[1])
            choice.channels_last_reason = (
                f"{_ratio_text(rates, pick, other)} {'NCHW' if pick[1] else 'channels_last'} in the {source}"
            )
            if self.tied[pick[0]]:
                if self.noisy:
                    choice.channels_last_reason += (
                        f", within its noise ({margin:.0%}): inconclusive, kept the layout never much slower on CPUs"
                    )
                else:
                    choice.channels_last_reason += f", a tie (within {margin:.0%}): kept the layout never much slower on CPUs"
        choice.provisional = self.inconclusive


def _decide(
    cache: ProbeCache, key: str, timer, model, arms, batch, device, budget_s, cl_auto: bool, bf16_candidate: bool
) -> tuple[Verdict, str]:
    """The verdict of a cached probe, else of one measured (once more when it is undecided), cached
    unless the probe's noise decided it."""
    rates, source = _rates(cache, key, timer, model, arms, batch, device, budget_s)
    verdict = Verdict(rates, cl_auto, bf16_candidate)
    if source == "probe" and verdict.undecided:
        rates, source = _rates(cache, key, timer, model, arms, batch, device, budget_s, more=rates)
        verdict = Verdict(rates, cl_auto, bf16_candidate)
    if source != "cached probe":
        cache.put(
            key,
            {"rates": [[p, cl, r] for (p, cl), r in rates.items()], "spread": rates.spread, "provisional": verdict.inconclusive},
        )
    return verdict, source


def _tied(rates: dict, a, b, margin: float) -> bool:
    """Whether arms ``a`` and ``b`` (both measured) differ by less than ``margin``."""
    return a in rates and b in rates and abs(rates[a] / rates[b] - 1) < margin


def _rates(
    cache: ProbeCache, key: str, timer, model, arms, batch, device, budget_s, more: dict | None = None
) -> tuple[Rates, str]:
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
    return (
        f"warning: train.precision bf16 on a CPU without native bf16 ({info['cpu_capability']}) is emulated and "
        f"measured {slowdown:.1f}x slower than fp32 here; set train.precision: auto (or fp32)"
    )


INFERENCE_BATCH = 16  # images per timed forward pass of the inference probe (predict batches 32, eval 250)


def resolve_inference_precision(
    model: nn.Module,
    device: torch.device,
    *,
    cache_dir=None,
    timer=None,
    batch: int = INFERENCE_BATCH,
    layouts: bool = False,
) -> SpeedChoice:
    """The precision to evaluate ``model`` in where no run recorded one for this machine (a pretrained
    model, a run trained elsewhere): bf16 on a GPU that supports it; on a CPU bf16 only where it is
    native and a probe of forward passes does not measure it slower (inconclusive probes keep bf16,
    as for training, and are not cached), else fp32. The layout stays NCHW unless ``layouts``: then
    the probe measures channels_last too (a frozen network's descriptors, where forward passes are
    the whole job: VGG-16 bf16 ran 2.5x faster in channels_last on a 2-core Xeon with AMX)."""
    info = machine_info()
    choice = SpeedChoice("fp32", False, machine=info)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            choice.precision, choice.precision_reason = "bf16", f"{info['gpu']} supports bf16"
        else:
            choice.precision_reason = f"no bf16 on {info['gpu']}"
        if layouts:
            choice.channels_last, choice.channels_last_reason = True, "CUDA: tensor-core convolutions want NHWC"
        return choice
    if device.type == "mps":
        choice.precision_reason = "MPS: fp32 (bf16 autocast there is unmeasured)"
        return choice
    native = native_bf16()
    if not native:
        choice.precision_reason = f"no native bf16 on this CPU: {info['cpu_capability']}"
        if not layouts:
            return choice
    cache, timer = ProbeCache(cache_dir), timer or time_forward
    arms = [(p, cl) for p in (["fp32", "bf16"] if native else ["fp32"]) for cl in ([False, True] if layouts else [False])]
    verdict, source = _decide(
        cache,
        probe_key(info, model, batch, f"inference arms={arms}"),
        timer,
        model,
        arms,
        batch,
        device,
        PROBE_BUDGET_S,
        layouts,
        native,
    )
    verdict.apply(choice, info["cpu_capability"], source.replace("probe", "inference probe"))
    return choice
