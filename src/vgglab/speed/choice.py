"""What the speed settings resolved to (:class:`SpeedChoice`, recorded in config.yaml and checkpoints), and
what a probe's rates decide (:class:`Verdict`): which arm is fastest, and which decisions only the probe's
noise made. Resolving them for a run or a model is :mod:`.resolve`; timing the arms is :mod:`.probe`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..declare import checked
from ..machine import RECORDED_PRECISIONS
from ..strict import ConfigError
from .probe import ProbeCache, Rates

BF16_MIN_GAIN = 1.05  # bf16 costs a little accuracy: keep it only where it is clearly faster
# Two arms closer than this, or than the probe's own spread, are a tie: measured once more, and if
# still tied the layout never much slower on CPUs is kept (channels_last: 0.95x NCHW at worst on the
# Xeon, 1.17-1.22x on the EPYC; benchmarks/results/cpu_settings-*). A 2-core shared machine's steps
# vary by a few percent, enough to flip a verdict between two equal arms.
NOISE_FLOOR = 0.03
CPU_TIE_LAYOUT = True


@dataclass
class _MachineRecord:
    """The types of :func:`vgglab.machine.machine_info`'s fields, for reading a recorded one back."""

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

        def error(msg: str) -> ConfigError:
            return ConfigError(f"{msg} ({where} is written by vgglab: {fix})")

        choice = d if isinstance(d, cls) else cls(**checked(cls, d, error, section=where))
        if choice.precision not in RECORDED_PRECISIONS:
            raise ConfigError(
                f"{where}.precision {choice.precision!r} is not one vgglab records ({', '.join(RECORDED_PRECISIONS)}); {fix}"
            )
        checked(_MachineRecord, choice.machine, error, section=f"{where}.machine", partial=True)
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


def _ratio_text(rates: dict, a, b) -> str:
    return f"{rates[a] / rates[b]:.2f}x"


# bf16 on every native-bf16 CPU measured (Xeon, EPYC Zen 4: benchmarks/results/cpu_settings-*)
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


def decide(
    cache: ProbeCache, key: str, timer, model, arms, batch, device, budget_s, cl_auto: bool, bf16_candidate: bool
) -> tuple[Verdict, str]:
    """The verdict of a cached probe, else of one measured (once more when it is undecided), cached
    unless the probe's noise decided it."""
    rates, source = measured_rates(cache, key, timer, model, arms, batch, device, budget_s)
    verdict = Verdict(rates, cl_auto, bf16_candidate)
    if source == "probe" and verdict.undecided:
        rates, source = measured_rates(cache, key, timer, model, arms, batch, device, budget_s, more=rates)
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


def measured_rates(
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
