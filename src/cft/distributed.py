"""This process's place in a torchrun job and the few collectives cft uses (fine-tuning, masks, evaluation).

No DistributedDataParallel: relevance maps take torch.autograd.grad inside a training step, which DDP's reducer
does not expect, so the trainer all-reduces gradients itself (`average_gradients`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cft.errors import CftError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun) and the few collectives used."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Distributed:
        """From torchrun's environment; initialises the process group (NCCL on GPUs, else gloo) if needed."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise CftError("WORLD_SIZE must be an integer (as torchrun sets it)") from None
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank)  # NCCL collectives run on this rank's GPU
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            atexit.register(_destroy_process_group)  # ours to tear down, before the interpreter's own teardown
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Every rank starts from rank 0's weights and buffers."""
        if self.world_size > 1:
            import torch.distributed as dist

            for t in [*model.parameters(), *model.buffers()]:
                dist.broadcast(t.data, src=0)

    def average_gradients(self, model: nn.Module) -> None:
        """Sum the (pre-weighted) gradients over ranks and divide by the world size, in one flat all-reduce."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        params = [p for p in model.parameters() if p.requires_grad]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)  # a parameter no rank used keeps grad None, as in one process
        params = [p for p, h in zip(params, has.tolist(), strict=True) if h]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def gather(self, obj: Any) -> list[Any]:
        """`obj` from every rank, in rank order."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Per-key sums over ranks (keys must be the same on every rank after sorting)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        names: list[list[str] | None] = [None] * self.world_size
        dist.all_gather_object(names, keys)
        union = sorted({k for ks in names for k in ks})
        t = torch.tensor([float(values.get(k, 0.0)) for k in union], dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(union, t.tolist(), strict=True))

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def device_for(name: str, dist: Distributed | None = None, what: str = "device") -> torch.device:
    """`name` as a device; "auto" is this rank's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    dist = dist or Distributed.current()
    if name == "auto":
        return torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CftError(f"{what}: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CftError(f"{what} {name}: CUDA is not available here (no GPU or no driver); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CftError(f"{what} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _destroy_process_group() -> None:
    """Destroy the process group cft initialised (gloo's threads may abort the process if left to exit)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
