"""Multi-process training under ``torchrun``: PyTorch's own DistributedDataParallel, nothing home-made.

``torchrun --nproc_per_node N -m vgglab train --config ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; this module turns them into a process group (NCCL on CUDA, gloo on CPU) and offers
the few collective operations the loop needs. Without those variables everything is a no-op.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ..errors import VgglabError
from ..run.context import DistInfo


def main_process() -> bool:
    """Rank 0 of a torchrun job (RANK in its environment), or a lone process; known before setup."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_setting: str) -> tuple[DistInfo, str]:
    """Join the torchrun job if there is one; returns the info and the device to use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device_setting
    cuda = torch.cuda.is_available() and device_setting in ("auto", "cuda") or device_setting.startswith("cuda")
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if cuda and per_node > torch.cuda.device_count():  # every rank says so before any waits for the others
        raise VgglabError(
            f"torchrun started {per_node} processes per node but this node has {torch.cuda.device_count()} CUDA device(s): "
            f"use --nproc_per_node {torch.cuda.device_count()} (one process per GPU), or train.device: cpu"
        )
    owns = not dist.is_initialized()
    if owns:
        # A peer that died leaves the others blocked in a collective: time out instead of hanging.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=60))
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), owns)
    if cuda:
        torch.cuda.set_device(info.local_rank)
        return info, f"cuda:{info.local_rank}"
    return info, "cpu"


def teardown(info: DistInfo) -> None:
    """End the process group that setup() created, every rank together: a rank that exits while
    its peers still hold gloo connections to it can abort them ("terminate called without an
    active exception")."""
    if info.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, info: DistInfo) -> int:
    if global_batch % info.world_size:
        raise VgglabError(
            f"data.batch_size {global_batch} (the global batch) is not divisible by the {info.world_size} processes; "
            f"use a multiple of {info.world_size}"
        )
    return global_batch // info.world_size


def all_sum(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over all processes (identity when not distributed)."""
    if not dist.is_initialized():
        return list(values)
    out = []
    for v in values:
        v = v.clone()
        dist.all_reduce(v)
        out.append(v)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's value of ``obj`` on every rank (e.g. the run directory it created)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
