"""Thin helpers over torch.distributed for runs launched by `torchrun`.

`torchrun --nproc_per_node N` sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`init_distributed` reads them (nccl on CUDA, gloo on CPU). With WORLD_SIZE unset or 1 every
helper is a no-op, so single-process code needs no branches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank/world from torchrun's environment variables (defaults: a single process)."""
    try:
        return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise RuntimeError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from e


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device_type: str = "cpu") -> tuple[DistInfo, bool]:
    """Join the process group when WORLD_SIZE > 1. Returns (info, whether this call created it)."""
    info = env_info()
    if not info.distributed:
        return info, False
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank), False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    kwargs = {"device_id": torch.device("cuda", info.local_rank)} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, **kwargs)
    return info, True


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def to_float(v: Any) -> float:
    return float(v.detach().float().mean().item()) if isinstance(v, torch.Tensor) else float(v)


def all_reduce_mean(metrics: dict[str, Any], weight: float = 1.0) -> dict[str, float]:
    """Mean of a metric dict over ranks, each rank weighted by `weight` (e.g. its sample count).

    Values may be floats or tensors (a tensor counts as its mean). Ranks may report different
    keys (a rank with no validation samples reports none); each key is averaged over the ranks
    that have it. Collective: every rank must call it.
    """
    local = {k: to_float(v) for k, v in metrics.items()}
    gathered = all_gather_object((local, float(weight)))
    out: dict[str, float] = {}
    for key in sorted({k for m, _ in gathered for k in m}):
        pairs = [(m[key], w) for m, w in gathered if key in m and w > 0]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total > 0 else float("nan")
    return out


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
