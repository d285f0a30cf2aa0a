"""Speed settings decided on the machine a run is on: ``train.precision: auto`` and
``train.channels_last: auto`` for training, and the precision a model is evaluated in.

No fixed choice is right everywhere: bf16 autocast is 1.3-1.9x faster than fp32 on the CPUs with
native bf16 measured (AVX-512 BF16 / AMX) and 15-25x *slower* where it is emulated (AVX2 only), and
channels_last measured 0.95x on one 2-core Xeon and 1.22x on a 2-core EPYC. So on a CPU a short
probe (:mod:`.probe`: a few SGD steps of the run's own model on random data, the arms interleaved
round by round) times the candidates and keeps the fastest; its verdict is cached per (CPU model,
torch version, threads, model, batch) in the cache directory (``vgglab speed --forget`` clears it).

A probe that shares its cores with other jobs measures noise: where its spread is larger than the gap
it would decide, the verdict is inconclusive (:class:`.choice.Verdict`), the choice is the one known to
be faster on that hardware (bf16 where native, channels_last), the run's header says so, and nothing
is cached: the next run measures again. On CUDA: bf16 where the GPU supports it, else fp16 with the
grad scaler, and channels_last on (:mod:`vgglab.machine` holds those rules).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import machine
from . import probe
from .choice import SpeedChoice, decide, measured_rates
from .probe import PROBE_BUDGET_S, probe_key

PROBE_BATCH = 128  # images per probe step at most: larger batches give the same images/s on a CPU


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
    info = machine.machine_info()
    if previous and machine.same_machine(previous.get("machine", {}), info):
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
        precision,
        channels_last,
        cl_auto,
        model,
        batch,
        device,
        info,
        probe.ProbeCache(cache_dir),
        budget_s,
        timer or probe.time_arms,
    )


def _resolve_cuda(precision, channels_last, cl_auto, info) -> SpeedChoice:
    choice = SpeedChoice(precision, bool(channels_last), machine=info)
    if precision == "auto":
        choice.precision, choice.precision_reason = machine.gpu_precision(info)
        if choice.precision == "fp16":
            choice.precision_reason += ": fp16 with the grad scaler"
    if cl_auto:
        choice.channels_last, choice.channels_last_reason = True, "CUDA: tensor-core convolutions want NHWC"
    return choice


def _resolve_mps(precision, channels_last, cl_auto, info) -> SpeedChoice:
    """Apple's MPS: fp32 and NCHW unless pinned. Its bf16 autocast needs macOS 14 and is not measured
    on any machine of this project, so auto keeps what is known to run; untested on real hardware."""
    choice = SpeedChoice("fp32" if precision == "auto" else precision, bool(channels_last), machine=info)
    if precision == "auto":
        choice.precision_reason = machine.MPS_PRECISION_REASON
    if cl_auto:
        choice.channels_last, choice.channels_last_reason = False, "MPS: NCHW"
    return choice


def _resolve_cpu(precision, channels_last, cl_auto, model, batch, device, info, cache, budget_s, timer) -> SpeedChoice:
    native = machine.native_bf16()
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
        verdict, source = decide(cache, key, timer, model, arms, pb, device, budget_s, cl_auto, precision == "auto" and native)
        verdict.apply(choice, cap, source)
    if precision == "bf16" and not native:
        choice.warning = _emulated_bf16_warning(model, choice.channels_last, device, info, cache, timer)
    return choice


def _emulated_bf16_warning(model, channels_last, device, info, cache, timer) -> str:
    """Measured at a small batch: emulated bf16 steps are so slow that a full-size one takes minutes."""
    arms = [("fp32", channels_last), ("bf16", channels_last)]
    key = probe_key(info, model, 8, f"arms={arms}")
    rates, source = measured_rates(cache, key, timer, model, arms, 8, device, 0.0)
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
    info = machine.machine_info()
    choice = SpeedChoice("fp32", False, machine=info)
    if device.type == "cuda":
        precision, choice.precision_reason = machine.gpu_precision(info)
        choice.precision = "bf16" if precision == "bf16" else "fp32"  # fp16 inference is asked for, never chosen
        if layouts:
            choice.channels_last, choice.channels_last_reason = True, "CUDA: tensor-core convolutions want NHWC"
        return choice
    if device.type == "mps":
        choice.precision_reason = machine.MPS_PRECISION_REASON
        return choice
    native = machine.native_bf16()
    if not native:
        choice.precision_reason = f"no native bf16 on this CPU: {info['cpu_capability']}"
        if not layouts:
            return choice
    cache, timer = probe.ProbeCache(cache_dir), timer or probe.time_forward
    arms = [(p, cl) for p in (["fp32", "bf16"] if native else ["fp32"]) for cl in ([False, True] if layouts else [False])]
    key = probe_key(info, model, batch, f"inference arms={arms}")
    verdict, source = decide(cache, key, timer, model, arms, batch, device, PROBE_BUDGET_S, layouts, native)
    verdict.apply(choice, info["cpu_capability"], source.replace("probe", "inference probe"))
    return choice
