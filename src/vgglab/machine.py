"""The machine vgglab runs on, in one neutral place: its CPU, cores, native bf16, GPU and torch, as every
speed figure and recorded choice names them, and the precision rules that follow from them (what
``precision: auto`` resolves to on a GPU, on Apple's MPS, and which CPUs may use bf16 at all), read by
training (:mod:`vgglab.speed`), evaluation and ``vgglab --version`` alike."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

RECORDED_PRECISIONS = ("fp32", "bf16", "fp16")  # what auto resolves to, or a pinned setting
MPS_PRECISION_REASON = "MPS: fp32 (bf16 autocast there is unmeasured)"


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


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cpu_capability", "native_bf16", "threads", "torch", "gpu")
    return all(a.get(k) == b.get(k) for k in keys)


def gpu_precision(info: dict) -> tuple[str, str]:
    """``precision: auto`` on CUDA, and why: bf16 where the GPU supports it, else fp16 (training adds the grad scaler)."""
    if torch.cuda.is_bf16_supported():
        return "bf16", f"{info['gpu']} supports bf16"
    return "fp16", f"no bf16 on {info['gpu']}"


def auto_precision(device: torch.device, info: dict) -> tuple[str, str]:
    """What ``precision: auto`` resolves to on ``device`` in words, and why (``vgglab --version``)."""
    if device.type == "cuda":
        return gpu_precision(info)[0], f"CUDA ({info['gpu']})"
    if device.type == "mps":
        return "fp32", MPS_PRECISION_REASON
    why = f"{info['cpu']}, {info['cpu_capability']}, {'native' if info['native_bf16'] else 'no native'} bf16"
    return ("bf16 where a probe measures it faster, else fp32" if info["native_bf16"] else "fp32"), why
