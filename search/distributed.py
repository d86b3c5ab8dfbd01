"""Data-parallel training past one machine: the pieces `torchrun` runs need, and nothing else.

    torchrun --nproc_per_node 2 -m search.train --arch runs/a/arch.json --out runs/a/train

`torchrun` starts N copies of the program and tells each its place through the environment
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). A program run without it is
one process of a world of one, and every function here is then a no-op or the identity, so one
code path serves both.

    dist = setup("cpu")                    # process group from torchrun's env: gloo on CPU,
                                           # nccl on GPUs (cuda:LOCAL_RANK); world of 1 otherwise
    model = wrap(model, dist)              # DistributedDataParallel when world_size > 1
    for xb, yb, n in shard_batches(x, y, 64, dist, generator=g):   # this rank's part of a batch
        loss = F.cross_entropy(model(xb), yb) * loss_weight(len(yb), n, dist)
    sums = all_reduce_sum([loss_sum, correct, total], dist)        # metrics over all ranks
    sync_buffers(model, dist)              # rank 0's BatchNorm statistics on every rank
    if dist.is_main: write_outputs(...)    # only rank 0 writes files or prints results
    teardown(dist)

Batching: every rank draws the same permutation from a generator seeded alike, cuts it into the
same global batches of `batch_size` and keeps every `world_size`-th sample of each, so all ranks
take the same number of steps (a rank that runs out early would leave the others waiting in an
all-reduce forever). `loss_weight` scales each rank's mean loss so that DDP's gradient average
equals the gradient of the mean loss over the whole global batch, however unevenly it splits.
With one process `shard_batches` yields exactly what `search.data.batches` yields.

Weights stay identical on every rank because they start identical (same seed; DDP also
broadcasts rank 0's parameters when it wraps the model) and every step applies the same
all-reduced gradient. BatchNorm's running statistics are per rank during an epoch (DDP
broadcasts rank 0's before each forward); `sync_buffers` makes them rank 0's before anything is
evaluated or saved. `digest` hashes a module's state and `ranks_agree` all-gathers the digests:
the training CLI records the answer, so a divergence is a visible fact, not a silent one.

How a search keeps its architecture parameters θ identical on every rank (the contract the
strategies follow when they run under torchrun):

1. θ starts identical: created from the same seed on every rank (`broadcast_(θ, dist)` makes
   sure of it).
2. Shared noise: the Gumbel noise (and any architecture sampling) is drawn from a generator
   seeded with the same seed on every rank, never from a rank-dependent one, so every rank
   samples the same masks / paths at every step. Data shuffles use such a generator too.
3. All-reduced gradients: θ's gradient is averaged over ranks (`average_gradients(θ, dist)`
   before the θ optimizer step; or θ lives inside the DDP-wrapped module), so every rank applies
   the same update to the same θ. Weights follow DDP as above.
4. `ranks_agree(θ, dist)` after the search checks it; arch.json records `info.world_size`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as tdist
from torch import nn

from search.data import ImageSet, augment_seed

__all__ = [
    "Dist",
    "DistributedError",
    "setup",
    "teardown",
    "wrap",
    "unwrap",
    "shard_batches",
    "num_batches",
    "loss_weight",
    "shard",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_",
    "broadcast_object",
    "sync_buffers",
    "barrier",
    "digest",
    "ranks_agree",
]

log = logging.getLogger(__name__)

MIN_PER_RANK = 2  # a rank never steps on fewer samples: BatchNorm cannot normalise one 1×1 map


class DistributedError(RuntimeError):
    """The torchrun environment is inconsistent, or the ranks disagree; the message says how."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the world. `Dist()` is a single process on the CPU."""

    rank: int = 0  # global rank (torchrun's RANK)
    world_size: int = 1  # number of processes (WORLD_SIZE)
    local_rank: int = 0  # rank on this machine (LOCAL_RANK): picks the GPU
    device: torch.device = torch.device("cpu")  # where this rank trains
    backend: str | None = None  # "gloo" | "nccl"; None: no process group (world of one)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints results."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str = "cpu", *, timeout_s: float = 1800.0) -> Dist:
    """Join the process group torchrun described in the environment (gloo for `cpu`, nccl for
    `cuda`, each rank on `cuda:LOCAL_RANK`); without torchrun, or with one process, return a
    world of one without a process group."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--torch-device cuda: no CUDA device is visible to torch; use cpu")
    dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(device=dev)
    if not 0 <= rank < world:
        raise DistributedError(f"RANK {rank} is outside WORLD_SIZE {world}")
    backend = "nccl" if device == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, rank=rank, world_size=world,
                                 timeout=_dt.timedelta(seconds=timeout_s))  # fmt: skip
    log.debug("rank %d of %d joined the %s process group on %s", rank, world, backend, dev)
    return Dist(rank, world, local_rank, dev, backend)


def teardown(dist: Dist) -> None:
    """Leave the process group (a no-op for a world of one)."""
    if dist.is_distributed and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap(model: nn.Module, dist: Dist) -> nn.Module:
    """`model` in DistributedDataParallel when there are several ranks, else `model` itself."""
    if not dist.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (whose state_dict keys carry no `module.` prefix)."""
    return getattr(model, "module", model)


# --- batching --------------------------------------------------------------------------------------
def _global_stops(n: int, batch_size: int, dist: Dist) -> list[int]:
    """Start offsets of the global batches kept: a last batch too small to give every rank
    MIN_PER_RANK samples is dropped."""
    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
    starts = list(range(0, n, batch_size))
    if starts and n - starts[-1] < MIN_PER_RANK * dist.world_size and len(starts) > 1:
        starts.pop()
    return starts


def num_batches(n: int, batch_size: int, dist: Dist = Dist()) -> int:
    """Steps per epoch that `shard_batches` takes (the same on every rank)."""
    return len(_global_stops(n, batch_size, dist))


def shard_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    dist: Dist = Dist(),
    *,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """This rank's part of each global batch: (x, y, size of the global batch).

    Every rank draws the same permutation (the generator must be seeded alike on all ranks), cuts
    it into global batches of `batch_size` and keeps samples `rank, rank + world_size, ...` of
    each. With one process this is `search.data.batches` (same permutation, same batches)."""
    n = len(y)
    if batch_size < MIN_PER_RANK * dist.world_size and dist.world_size > 1:
        raise ValueError(
            f"batch size {batch_size} is too small for {dist.world_size} processes: each needs at "
            f"least {MIN_PER_RANK} samples per step; use --batch-size ≥ {MIN_PER_RANK * dist.world_size}"
        )
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(y.device)
    cuts = [order[start : start + batch_size] for start in _global_stops(n, batch_size, dist)]
    mine = [idx[dist.rank :: dist.world_size] for idx in cuts]
    if isinstance(x, ImageSet):  # decoded a batch at a time, augmented when shuffled
        images = x.stream([m.tolist() for m in mine], augment_seed(generator))
        yield from ((xb, y[m], len(idx)) for xb, m, idx in zip(images, mine, cuts))
        return
    for idx, m in zip(cuts, mine):
        yield x[m], y[m], len(idx)


def loss_weight(shard_size: int, global_size: int, dist: Dist = Dist()) -> float:
    """Factor on a rank's mean loss so that DDP's average of the ranks' gradients is the gradient
    of the mean loss over the global batch: shard_size · world_size / global_size (1.0 for one
    process and a whole batch)."""
    return shard_size * dist.world_size / global_size


def shard(x: torch.Tensor, dist: Dist = Dist()) -> torch.Tensor:
    """This rank's every-`world_size`-th slice of `x` (for evaluation; sizes may differ by one)."""
    return x[dist.rank :: dist.world_size]


# --- collectives -----------------------------------------------------------------------------------
def all_reduce_sum(values: Sequence[float], dist: Dist = Dist()) -> list[float]:
    """Element-wise sum over ranks (float64), identical on every rank; `values` for one process."""
    if not dist.is_distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.tolist()


BUCKET_BYTES = 25 << 20  # gradients all-reduced together, at most this much per call (DDP's default)


def average_gradients(params: Iterable[torch.Tensor], dist: Dist = Dist()) -> None:
    """Replace each parameter's gradient by its mean over ranks (for parameters outside DDP,
    e.g. a search's θ). Parameters without a gradient are skipped on every rank alike.

    Gradients are flattened into buckets of up to `BUCKET_BYTES` (one dtype and device each) and
    each bucket is all-reduced in one call, as DDP does: a supernet has thousands of small
    parameter tensors, and one collective per tensor costs more than the step itself. Each
    element is the same sum over ranks either way."""
    if not dist.is_distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        last = buckets[-1] if buckets else None
        if last is None or last[0].dtype != g.dtype or last[0].device != g.device or size + nbytes > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += nbytes
    for bucket in buckets:
        flat = torch.cat([g.reshape(-1) for g in bucket])
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat.div_(dist.world_size)
        for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            g.copy_(part.view_as(g))


def average_gradients_before_step(opt: torch.optim.Optimizer, dist: Dist) -> None:
    """Under torchrun, make every `opt.step()` first replace each gradient by its mean over the
    ranks, so that parameters which start identical stay identical: the supernet's weights and θ
    alike (θ lives outside any DDP module). A parameter with a gradient on some ranks only (a path
    one rank skipped) gets a zero gradient on the others first. A no-op for one process."""
    if not dist.is_distributed:
        return
    params = [p for group in opt.param_groups for p in group["params"]]

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=dist.device)
        tdist.all_reduce(has, op=tdist.ReduceOp.SUM)
        for p, n in zip(params, has.tolist()):
            if n and p.grad is None:
                p.grad = torch.zeros_like(p)
        average_gradients(params, dist)

    opt.register_step_pre_hook(hook)


def broadcast_(tensors: Iterable[torch.Tensor], dist: Dist = Dist(), src: int = 0) -> None:
    """Overwrite each tensor in place with rank `src`'s value."""
    if not dist.is_distributed:
        return
    with torch.no_grad():
        for t in tensors:
            tdist.broadcast(t, src=src)


def broadcast_object(obj: Any, dist: Dist = Dist(), src: int = 0) -> Any:
    """Rank `src`'s `obj` (any picklable value) on every rank."""
    if not dist.is_distributed:
        return obj
    box = [obj if dist.rank == src else None]
    tdist.broadcast_object_list(box, src=src, device=dist.device if dist.backend == "nccl" else None)
    return box[0]


def sync_buffers(model: nn.Module, dist: Dist = Dist()) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics and counters)."""
    broadcast_(list(unwrap(model).buffers()), dist)


def barrier(dist: Dist = Dist()) -> None:
    if dist.is_distributed:
        tdist.barrier()


def digest(module_or_tensors: nn.Module | Iterable[torch.Tensor]) -> str:
    """sha256 (16 hex) over the exact bytes of a module's state (or of tensors), in order."""
    if isinstance(module_or_tensors, nn.Module):
        items = list(unwrap(module_or_tensors).state_dict().items())
    else:
        items = [(str(i), t) for i, t in enumerate(module_or_tensors)]
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def ranks_agree(module_or_tensors: nn.Module | Iterable[torch.Tensor], dist: Dist = Dist()) -> bool:
    """True when every rank holds bit-identical state (always True for one process)."""
    mine = digest(module_or_tensors)
    if not dist.is_distributed:
        return True
    everyone: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(everyone, mine)
    if len(set(everyone)) != 1:
        log.warning("ranks disagree: state digests %s", everyone)
    return len(set(everyone)) == 1
