"""One process or many: the process group, the device, and the few collectives training needs.

A run started by ``torchrun`` (or ``python -m torch.distributed.run``) has ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in its environment; anything else is a single process that
needs no process group at all. The backend follows the device: NCCL on CUDA, Gloo on CPU.

Every collective here is a no-op in a single process, so callers never branch on it.
"""
from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank 0 may spend a long time alone (writing files) while the others wait at a barrier.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA when torch sees a GPU, else CPU; "cuda" without a GPU is an error."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(preference: str = "auto") -> DistEnv:
    """Join the process group if launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if device.type == "cuda":
        # TF32 matmuls: several times faster on Ampere and later, far below the training noise
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)
    return DistEnv(rank, world_size, local_rank, device)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        # DistributedDataParallel's reducer sits in reference cycles and holds the process
        # group; left to the interpreter's exit, Gloo's threads were destroyed while still
        # joinable ("terminate called without an active exception", SIGABRT on one rank
        # of a finished run in CI). Free them now, while the group is still whole.
        gc.collect()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def sum_values(env: DistEnv, values: dict[str, float]) -> dict[str, float]:
    """Each key summed over all ranks (every rank must pass the same keys in the same order)."""
    if not env.distributed or not values:
        return dict(values)
    keys = list(values)
    # float64: sums of per-window metrics over many windows keep their digits
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True on every rank if it is True on any (e.g. one rank caught Ctrl-C)."""
    if not env.distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_objects(env: DistEnv, value) -> list:
    """``value`` of every rank, in rank order, on every rank (small picklable values only)."""
    if not env.distributed:
        return [value]
    out = [None] * env.world_size
    dist.all_gather_object(out, value)
    return out


def broadcast_object(env: DistEnv, value):
    """Rank 0's ``value`` on every rank."""
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parameter_checksum(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of every parameter's bytes, in name order: equal replicas
    give equal checksums, and one differing bit anywhere changes it."""
    digest = hashlib.sha256()
    for name, parameter in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
