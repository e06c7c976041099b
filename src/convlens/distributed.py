"""More than one process: PyTorch's DistributedDataParallel under torchrun, gloo on CPU, NCCL on GPU.

    torchrun --nproc_per_node 2 -m convlens train ...                      one machine
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m convlens train ...               a cluster

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; without them convlens runs
as one process, as always. Every rank holds the same model, optimizer, data order and random
states (same seed); each optimizer step's batch is split between the ranks (rank r takes
images r, r + W, r + 2W, … of it, and each image's augmentation is what one process draws for it:
augment.py) and DDP averages the gradients, so W processes take the same steps as one process
with the same batch size (batch norm aside: it normalises each rank's share by itself). Only
rank 0 writes the run.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConvlensError

NAME_BYTES = 256      # a run name travels from rank 0 to the others as a fixed-size uint8 tensor


class ClusterError(ConvlensError):
    """A process of a distributed run failed or could not be reached."""


@dataclass(frozen=True)
class Cluster:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Cluster()


def from_env() -> Cluster:
    """The cluster torchrun describes in the environment (one process when it does not)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SINGLE
        return Cluster(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                       int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except (KeyError, ValueError) as e:
        raise ClusterError(f"WORLD_SIZE is set but the rest of torchrun's environment is not ({e}); "
                           "launch with torchrun") from None


def join(cluster: Cluster, device: torch.device) -> None:
    """Join the process group (gloo for CPU tensors, NCCL for CUDA ones)."""
    if not cluster.active or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    except (RuntimeError, ValueError) as e:
        raise ClusterError(f"rank {cluster.rank}: cannot join the other {cluster.world - 1} process(es) "
                           f"({backend}): {str(e).splitlines()[0]}") from None


def leave(cluster: Cluster) -> None:
    if cluster.active and dist.is_initialized():
        dist.destroy_process_group()


def lost(cluster: Cluster, what: str, error: Exception) -> ClusterError:
    """The one-line error of a rank whose peers went away (killed, crashed, unreachable)."""
    return ClusterError(f"rank {cluster.rank}: lost the other processes during {what} "
                        f"({str(error).splitlines()[0][:160]}); the run's last checkpoint is kept: "
                        "launch the same torchrun command with --resume RUN to continue")


def _collective(cluster: Cluster, what: str, op) -> None:
    try:
        op()
    except (RuntimeError, dist.DistBackendError) as e:
        raise lost(cluster, what, e) from None


def broadcast_name(cluster: Cluster, name: str | None) -> str:
    """Rank 0's run name, on every rank."""
    if not cluster.active:
        return name or ""
    buf = torch.zeros(NAME_BYTES, dtype=torch.uint8)
    if cluster.main:
        data = (name or "").encode()[:NAME_BYTES]
        buf[:len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    _collective(cluster, "start-up", lambda: dist.broadcast(buf, src=0))
    return bytes(buf[buf != 0].tolist()).decode()


def all_sum(cluster: Cluster, *tensors: torch.Tensor) -> None:
    """Sum tensors over the ranks, in place."""
    if cluster.active:
        for t in tensors:
            _collective(cluster, "training", lambda t=t: dist.all_reduce(t))


def any_rank(cluster: Cluster, flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (a Ctrl-C reaching one process stops them all)."""
    if not cluster.active:
        return flag
    t = torch.tensor([int(flag)], device=device)
    _collective(cluster, "training", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
    return bool(t.item())


def barrier(cluster: Cluster) -> None:
    if cluster.active:
        _collective(cluster, "the end of training", dist.barrier)
