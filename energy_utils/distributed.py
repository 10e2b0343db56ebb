"""Multi-process data-parallel training with ``torchrun`` for :func:`energy_utils.training.fit`.

Under ``torchrun --nproc_per_node N`` every process runs the same script. :func:`setup` joins them into one
process group (gloo on the CPU, nccl on CUDA, each process on ``cuda:LOCAL_RANK``); ``fit`` then wraps the model
in ``DistributedDataParallel``, gives each process its share of every global batch (:func:`shard`: rows
``rank, rank + N, rank + 2N, ...``), and lets only rank 0 write checkpoints and show progress. Without
torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op and ``fit`` runs as a single process.

    torchrun --nproc_per_node 8 -m energy_utils.recipes train 03_bf_unet_mnist
"""
from __future__ import annotations

import atexit
import dataclasses
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process' rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the process that writes files and prints (always True in a single process)."""
    return rank() == 0


def local_device() -> torch.device:
    """The device this process should train on: ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def setup(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), once; return whether training is distributed.

    ``backend`` defaults to nccl when CUDA is present and gloo otherwise. With CUDA the process is pinned to
    ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), so call this *before* building the model: a model moved
    with ``.to("cuda")`` or ``.to(pick_device("auto"))`` then lands on this process' own GPU. Does nothing and
    returns False when ``WORLD_SIZE`` is unset or 1; when a process group already exists, it is used as is.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    atexit.register(_teardown)
    return dist.get_world_size() > 1


def _teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def comm_device() -> torch.device:
    """Where small tensors for collectives must live: the current GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(batch, rank: int, world: int):
    """This process' share of a global batch: rows ``rank::world`` of every tensor in it.

    ``batch`` may be a tensor (batch first), a tuple / list / dict / dataclass of such (nested; a
    :class:`~energy_utils.covariances.DiagCov` or :class:`~energy_utils.tasks.Problem` is split field by field),
    or an object with its own ``shard(rank, world)`` method; 0-dim tensors and non-tensors are kept whole.
    Every tensor's first dimension must be divisible by ``world``, so that each process' mean loss has the same
    weight and the averaged gradient equals the single-process gradient of the global batch."""
    if world == 1:
        return batch
    if torch.is_tensor(batch):
        if batch.ndim == 0:
            return batch
        if batch.shape[0] % world:
            raise ValueError(f"a global batch of {batch.shape[0]} rows does not split evenly over {world} "
                             f"processes; use a batch size divisible by the number of processes")
        return batch[rank::world]
    if hasattr(batch, "shard") and callable(batch.shard):
        return batch.shard(rank, world)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):          # namedtuple
        return type(batch)(*(shard(b, rank, world) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return type(batch)(**{f.name: shard(getattr(batch, f.name), rank, world)
                              for f in dataclasses.fields(batch) if f.init})
    return batch


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` (any shape, float) over all processes, on every process (a copy)."""
    if not is_distributed():
        return values.detach().clone()
    t = values.detach().to(device=comm_device(), dtype=torch.float64).clone()
    dist.all_reduce(t)
    return (t / world_size()).to(values.device)


def from_main(obj):
    """Rank 0's ``obj`` (any picklable object), on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj) -> list | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None elsewhere (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier():
    if is_distributed():
        dist.barrier()
