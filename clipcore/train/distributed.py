"""Several processes, one batch: who am I, moving features between ranks, and summing gradients.

The contrastive losses need the features of every rank's share of the batch (the negatives). Three ways to
move them are here, each differentiable so a rank's features receive the gradient that other ranks' losses
send back: `gather_features` (all-gather, OpenCLIP's ClipLoss), point-to-point neighbour exchange around a
ring (`exchange`, OpenCLIP's SigLipLoss 'bidir'/'shift'), and the all-gather / all-reduce forms of SigLIP.

No DistributedDataParallel: the training loop calls `encode_image`/`encode_text` rather than `forward`,
which DDP cannot see, and one explicit all-reduce of the gradients after backward (`reduce_gradients`) is
easier to read and to reason about.

`launch` runs a function on N local CPU processes with the 'gloo' backend, for tests and small runs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from clipcore.errors import ConfigError

__all__ = [
    "World",
    "all_gather_with_grad",
    "all_mean",
    "all_reduce_with_grad",
    "exchange",
    "gather_features",
    "init_process",
    "launch",
    "reduce_gradients",
]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.size):
            raise ConfigError(
                f"rank {self.rank} is not in a world of {self.size} processes",
                fix="use 0 <= rank < world size",
            )

    @classmethod
    def current(cls) -> World:
        """The default process group's rank and size, or a single process when none is initialised."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def left(self) -> int:
        return (self.rank - 1) % self.size

    @property
    def right(self) -> int:
        return (self.rank + 1) % self.size


# --- moving features between ranks --------------------------------------------------------------------------


class _AllGather(torch.autograd.Function):
    """All-gather whose backward returns to each rank the sum over ranks of the gradient of its slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> Any:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        # Sum every slot's gradient over ranks, keep ours. (NCCL's reduce-scatter would move less data, but
        # gloo has none; an all-reduce is correct everywhere.)
        total = torch.stack(grads).contiguous()
        dist.all_reduce(total)
        return total[dist.get_rank()]


def all_gather_with_grad(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `tensor`, in rank order; gradients flow back to the rank each came from."""
    return list(_AllGather.apply(tensor))


class _AllReduce(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum that every rank holds is the sum of their gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `tensor`, differentiably."""
    return _AllReduce.apply(tensor)


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    world: World,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's features, concatenated in rank order: (all_image_features, all_text_features).

    With `gather_with_grad` the gather is differentiable: the gradient of each copy flows back to the rank
    that produced it (summed over ranks). Without it the gathered copies are constants, except that (unless
    `local_loss`) this rank's own slot is its live tensor, so its features still get the gradient of the
    whole-batch loss. These are OpenCLIP's `gather_features` semantics.
    """
    if gather_with_grad:
        return torch.cat(all_gather_with_grad(image_features)), torch.cat(all_gather_with_grad(text_features))
    gathered = []
    for features in (image_features, text_features):
        parts = [torch.empty_like(features) for _ in range(world.size)]
        dist.all_gather(parts, features.detach().contiguous())
        if not local_loss:
            parts[world.rank] = features
        gathered.append(torch.cat(parts, dim=0))
    return gathered[0], gathered[1]


def _send_and_receive(
    tensors: Sequence[torch.Tensor], destinations: Sequence[int], sources: Sequence[int]
) -> list[torch.Tensor]:
    """Send tensors[i] to destinations[i]; receive one tensor (shaped like tensors[i]) from sources[i]."""
    received = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), d) for t, d in zip(tensors, destinations, strict=True)]
    ops += [dist.P2POp(dist.irecv, r, s) for r, s in zip(received, sources, strict=True)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _Exchange(torch.autograd.Function):
    """Point-to-point exchange whose backward sends each received tensor's gradient back to its sender."""

    @staticmethod
    def forward(
        ctx: Any, destinations: tuple[int, ...], sources: tuple[int, ...], *tensors: torch.Tensor
    ) -> Any:
        ctx.destinations, ctx.sources = destinations, sources
        return tuple(_send_and_receive(tensors, destinations, sources))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        # What arrived from sources[i] was sent by them: its gradient goes back there, and the gradient of
        # what we sent to destinations[i] comes back from there.
        back = _send_and_receive(grads, ctx.sources, ctx.destinations)
        return (None, None, *back)


def exchange(
    tensors: Sequence[torch.Tensor], destinations: Sequence[int], sources: Sequence[int]
) -> tuple[torch.Tensor, ...]:
    """Differentiably send tensors[i] to rank destinations[i]; receive a same-shaped one from sources[i]."""
    return _Exchange.apply(tuple(destinations), tuple(sources), *tensors)


# --- reductions ---------------------------------------------------------------------------------------------


def all_mean(value: torch.Tensor | float, world: World) -> float:
    """The mean over ranks of a scalar (for logging a loss that each rank computed on its share)."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(1)
    if world.size > 1:
        dist.all_reduce(t)
        t /= world.size
    return float(t.item())


# Gradients are all-reduced in flat buckets of this many elements: few collectives, bounded extra memory.
BUCKET_ELEMENTS = 1 << 24


def _buckets(params: list[tuple[torch.nn.Parameter, int]]) -> Iterator[list[tuple[torch.nn.Parameter, int]]]:
    bucket, size = [], 0
    for item in params:
        bucket.append(item)
        size += item[0].numel()
        if size >= BUCKET_ELEMENTS:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def reduce_gradients(
    tower_params: Iterable[torch.nn.Parameter],
    shared_params: Iterable[torch.nn.Parameter],
    world: World,
    tower_grad_copies: int,
) -> None:
    """Sum gradients over ranks and rescale them to the gradient of the whole-batch loss.

    `shared_params` enter the loss after the features are gathered (logit scale and bias): every rank's
    gradient for them is the gradient of its own loss, and the whole-batch loss is the mean over ranks, so
    they are averaged. `tower_params` produce the features: after the sum their gradient is
    `tower_grad_copies` times the whole-batch gradient (the loss says how many: see `ClipLoss`/`SigLipLoss`).
    Every rank must pass the same parameters in the same order; a missing gradient counts as zero.
    """
    if world.size == 1:
        return
    params = [(p, tower_grad_copies) for p in tower_params] + [(p, world.size) for p in shared_params]
    for p, _ in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets(params):
        flat = torch.cat([p.grad.reshape(-1).float() for p, _ in bucket])
        dist.all_reduce(flat)
        offset = 0
        for p, divisor in bucket:
            n = p.grad.numel()
            p.grad.copy_((flat[offset : offset + n] / divisor).view_as(p.grad))
            offset += n


# --- starting processes -------------------------------------------------------------------------------------


def init_process(rank: int, world_size: int, host: str, port: int, timeout_s: float = 60.0) -> World:
    """Join a 'gloo' process group whose rendezvous store listens on host:port."""
    store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timedelta(seconds=timeout_s))
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
    )
    return World(rank, world_size)


def _run_rank(
    fn: Callable[..., Any], rank: int, world_size: int, port: int, threads: int, args: tuple
) -> Any:
    torch.set_num_threads(threads)
    world = init_process(rank, world_size, "127.0.0.1", port)
    try:
        return fn(world, *args)
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout_s: float = 120.0,
    threads_per_process: int | None = None,
) -> list[Any]:
    """Run `fn(world, *args)` on `world_size` local CPU processes joined by 'gloo'; their results by rank.

    `fn` and `args` must be picklable (a module-level function). The rendezvous store is held by this
    process on a free port of 127.0.0.1 chosen by the OS, so there is no port race. Processes come from a
    fork server that has torch imported already: starting them costs a fork, not an import. A rank that
    raises, or a run past `timeout_s`, raises here.
    """
    if world_size < 1:
        raise ConfigError(f"world_size = {world_size} must be at least 1", fix="start one or more processes")
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // world_size)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "clipcore.train.distributed"])
    with ctx.Pool(world_size) as pool:  # one rank per process (chunksize 1): ranks wait for each other
        jobs = [(fn, rank, world_size, store.port, threads, args) for rank in range(world_size)]
        try:
            return pool.starmap_async(_run_rank, jobs, chunksize=1).get(timeout=timeout_s)
        except multiprocessing.TimeoutError:
            raise TimeoutError(
                f"{world_size} processes running {fn.__name__} did not finish in {timeout_s}s"
            ) from None
