"""Training in several processes: the process group, the global batch and its statistics.

``torchrun --nproc_per_node N -m radiolib train ...`` starts N processes that split every global
batch of ``train.batch_size`` between them (:class:`GlobalBatchSampler`). Batch-norm statistics
are taken over the global batch (:class:`GroupedBatchNorm`), gradients are averaged over the
processes (:func:`average_gradients`) and every process starts from rank 0's weights
(:func:`broadcast_module`), so N processes compute what one process computes. In one process
(:class:`World` of size 1) every function here is a no-op or the plain single-process
computation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from radiolib.errors import TrainingError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: the defaults)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # whether this process initialised the process group

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the process that writes the run folder."""
        return self.rank == 0


def _join(device: str) -> World:
    """Join the process group that ``torchrun`` describes in WORLD_SIZE/RANK/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        owns = True
    if dist.get_world_size() != world:
        raise TrainingError(
            f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} processes"
        )
    return World(world_size=world, rank=rank, local_rank=local, owns_group=owns)


@contextmanager
def process_group(device: str) -> Iterator[World]:
    """This process's :class:`World` inside the block: the process group ``torchrun`` set up
    is joined (initialised here when nobody did, and then destroyed on leaving)."""
    world = _join(device)
    try:
        yield world
    finally:
        if world.owns_group:
            dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait until every process gets here."""
    if world.world_size > 1:
        dist.barrier()


def mean_over_processes(values: Tensor, world: World) -> Tensor:
    """The mean of ``values`` over the processes (``values`` itself in one process)."""
    if world.world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world.world_size


def average_gradients(params: list[nn.Parameter], world: World) -> None:
    """Mean of the gradients over processes, one flat all-reduce (what DDP's reducer does)."""
    if world.world_size == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.world_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_module(module: nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers, copied into ``module`` on every process."""
    if world.world_size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GroupedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes, ``groups`` equal chunks apart.

    ``forward(x, groups)`` normalises each of ``groups`` equal chunks of the batch with its own
    statistics: the discriminator scores real, mismatched and fake tuples in one pass over their
    concatenation (one large convolution instead of several small ones), and normalising each
    chunk apart makes that pass equal to separate passes, so batch statistics never mix real
    and fake samples. Input ``(B, C, ...)``; state-dict keys are those of ``BatchNorm2d``.

    Under several processes the statistics are those of the global batch (each chunk's are
    those of the same chunk of the single-process batch). ``nn.SyncBatchNorm`` refuses CPU
    tensors and has no groups, so they are gathered here with two differentiable all-reduces
    (sum, then centred sum of squares: the two-pass variance that ``F.batch_norm`` computes);
    gradients flow back through the all-reduces, as in ``SyncBatchNorm``. Works on the CPU
    (gloo) too.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:  # type: ignore[override]
        distributed = self.training and dist.is_initialized() and dist.get_world_size() > 1
        if groups == 1 or not self.training:
            return self._global(x) if distributed else super().forward(x)
        if x.shape[0] % groups:
            raise ValueError(f"batch of {x.shape[0]} does not split into {groups} equal tuples")
        norm = self._global if distributed else super().forward
        return torch.cat([norm(c) for c in x.chunk(groups)], 0)

    def _global(self, x: Tensor) -> Tensor:
        all_reduce = _AllReduceSum.apply
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        xf = x.float()  # statistics in float32 under autocast
        mean = all_reduce(xf.sum(dims)) / count
        centred = xf - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / max(count - 1, 1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(x.dtype)


def use_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every other batch-norm layer of ``module`` by :class:`GroupedBatchNorm`, with its
    state and mode, in place, so its statistics are those of the global batch."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GroupedBatchNorm
        ):
            new = GroupedBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            new.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, new)
        else:
            use_global_batchnorm(child)
    return module


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This process's share of each global batch of one epoch.

    Epoch ``e`` visits a permutation drawn from ``(seed, e)``; global batch ``k`` is items
    ``[k*B, (k+1)*B)`` of it (the tail that does not fill a batch is dropped; a split smaller
    than one batch is tiled with further permutations), and rank ``r`` of ``W`` takes
    positions ``[r*B/W, (r+1)*B/W)`` of every global batch. Batches before ``start`` are
    skipped, which is how a resumed run lands mid-epoch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1:
            raise TrainingError("the training split holds no tumour slices")
        if batch_size % world_size:
            raise TrainingError(
                f"train.batch_size {batch_size} is not divisible by the {world_size} processes"
            )
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start, self.rank, self.world_size = start, rank, world_size

    @staticmethod
    def batches_per_epoch(n: int, batch_size: int) -> int:
        return (math.ceil(batch_size / n) * n) // batch_size

    def order(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        reps = math.ceil(self.batch_size / self.n)
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        local = self.batch_size // self.world_size
        for k in range(self.start, len(self) + self.start):
            lo = k * self.batch_size + self.rank * local
            yield order[lo : lo + local].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch(self.n, self.batch_size) - self.start
