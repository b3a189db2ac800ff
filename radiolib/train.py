"""One trainer for the three GANs: checkpoints, resume, AMP, DDP, progress.

Per step (paper section 2.3, least-squares GAN):

1. ``fake = gan.generate(batch)``;
2. discriminator step on ``gan.discriminator_losses(batch, fake.detach())``;
3. generator step on ``gan.generator_losses(batch, fake)``, reusing ``fake`` and scoring it with
   the discriminator just updated; the discriminator's parameters are frozen during this
   backward so it collects no gradient and is stepped only once per step.

Everything a run needs to continue bit for bit (weights, EMA, optimisers, scaler, RNG states,
step, epoch) goes into ``out/checkpoint.pt``, written atomically and loadable with
``torch.load(weights_only=True)``; the checkpoint it replaces is kept as
``out/checkpoint.prev.pt``, which a resumed run falls back to when the newest cannot be read.
Losses are checked at every step; weights and buffers (batch-norm running statistics too) at
every log and checkpoint step, so a diverging run stops with a named error and never writes a
non-finite checkpoint. The data order is a pure function of ``(seed, epoch)`` and
each item a pure function of ``(seed, epoch, index)``, so a resumed run reads exactly the
batches an uninterrupted run would have read.

Several processes (``torchrun --nproc_per_node N -m radiolib train ...``) split every global
batch of ``train.batch_size`` between them; batch-norm statistics are taken over the global
batch (:class:`GlobalBatchNorm`) and gradients are averaged over processes, so N processes
compute what one process computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from radiolib.config import ModelConfig, Profile, resolve_device
from radiolib.errors import StaleRunError, TrainingError
from radiolib.io import atomic_write, check_folder_path, read_json, write_json

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.models import GAN

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the checkpoint before the newest, kept to fall back
CHECKPOINT_FORMAT = 1
SAMPLE_COUNT = 8  # images in each sample grid
TENSORBOARD = "tensorboard"  # event files for `tensorboard --logdir`, beside log.jsonl

# Train settings that change neither the weights nor the data order: a run may resume with
# different values of these (more steps, other logging), but not of anything else.
_RESUMABLE_FIELDS = (
    "steps",
    "checkpoint_every",
    "log_every",
    "sample_every",
    "seeds",
    "num_workers",
)


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float  # training time summed over every (resumed) session
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)  # last step's terms, d_* and g_*
    skipped: bool = False  # True when done.json showed the run already finished


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # whether this call initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> _Dist:
    """Join the process group that ``torchrun`` describes in WORLD_SIZE/RANK/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
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
    return _Dist(world_size=world, rank=rank, local_rank=local, owns_group=owns)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes; works on the CPU (gloo) too.

    ``nn.SyncBatchNorm`` refuses CPU tensors, so the statistics are gathered here with two
    differentiable all-reduces (sum, then centred sum of squares: the two-pass variance that
    ``F.batch_norm`` computes). Gradients flow back through the all-reduces, as in
    ``SyncBatchNorm``. ``forward(x, groups)`` normalises ``groups`` equal chunks of the batch
    apart, like the discriminator's tuple batch norm (each chunk's global statistics are those
    of the same chunk of the single-process batch). State-dict keys are those of
    ``BatchNorm2d``. Input ``(B, C, ...)``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:  # type: ignore[override]
        distributed = self.training and dist.is_initialized() and dist.get_world_size() > 1
        if groups == 1 or not self.training:
            return self._global(x) if distributed else super().forward(x)
        if x.shape[0] % groups:
            raise ValueError(f"batch of {x.shape[0]} does not split into {groups} equal groups")
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


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by :class:`GlobalBatchNorm` (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GlobalBatchNorm
        ):
            new = GlobalBatchNorm(
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
            convert_global_batchnorm(child)
    return module


def _average_gradients(params: list[nn.Parameter], world: _Dist) -> None:
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


def _broadcast_module(module: nn.Module, world: _Dist) -> None:
    if world.world_size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------- data order


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


def _seed_worker(worker_id: int) -> None:
    # Items are pure functions of (seed, epoch, index); seeding keeps any other draw repeatable.
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# --------------------------------------------------------------------------- RNG state


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": int(version),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": float("nan") if gauss is None else float(gauss),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    gauss = state["python_gauss"]
    random.setstate(
        (
            state["python_version"],
            tuple(int(v) for v in state["python"].tolist()),
            None if math.isnan(gauss) else gauss,
        )
    )
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- the loop


def cohort_identity(cohort: Any) -> dict[str, Any]:
    """What a checkpoint records of the cohort it was trained on: a digest of its content
    (:func:`_cohort_data`), its folder and sizes, so a run can tell its cohort from another."""
    data = _cohort_data(cohort)
    return {
        "sha256": hashlib.sha256(
            json.dumps(data, sort_keys=True, default=str).encode()
        ).hexdigest(),
        "path": str(getattr(cohort, "path", "")),
        "patients": len(cohort.patients),
        "n_genes": int(np.shape(cohort.genes)[1]),
        "image_size": int(np.shape(cohort.tumour_images)[-1]),
    }


def _cohort_data(cohort: Any) -> dict[str, Any]:
    manifest = getattr(cohort, "manifest", None) or {}
    data = {
        "patients": list(cohort.patients),
        "split": [str(s) for s in np.asarray(cohort.split)],
        "manifest": manifest,
        "shapes": [
            list(np.shape(cohort.genes)),
            list(np.shape(cohort.tumour_images)),
            list(np.shape(cohort.background_images)),
        ],
    }
    if not manifest:  # an in-memory cohort: hash its arrays instead
        h = hashlib.sha256()
        for a in (
            cohort.genes,
            cohort.tumour_images,
            cohort.tumour_masks,
            cohort.background_images,
        ):
            h.update(np.ascontiguousarray(a).tobytes())
        data["arrays"] = h.hexdigest()
    return data


def _fingerprint(
    gan_name: str, n_genes: int, image_size: int, cohort: Any, cfg: Profile, seed: int
) -> str:
    """Hash of everything that decides the weights (not the step count or logging)."""
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in _RESUMABLE_FIELDS}
    data = _cohort_data(cohort)
    blob = {
        "gan": gan_name,
        "n_genes": n_genes,
        "image_size": image_size,
        "seed": seed,
        "model": dataclasses.asdict(cfg.model),
        "train": train,
        "data": data,
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _prefixed(terms: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if "total" not in terms:
        raise TrainingError(f"the model's {prefix}loss dict has no 'total' term: {list(terms)}")
    return {(k if k.startswith(prefix) else prefix + k): v for k, v in terms.items()}


class _Loop:
    """The optimisers, EMA and precision settings around one GAN (shared with bench)."""

    def __init__(self, gan: nn.Module, cfg: Profile, device: str, world: _Dist) -> None:
        self.gan, self.cfg, self.device, self.world = gan, cfg, device, world
        self.cuda = device.startswith("cuda")
        t = cfg.train
        self.g_params = [p for p in gan.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in gan.discriminator.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(self.g_params, lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.d_params, lr=t.lr, betas=(t.beta1, t.beta2))
        # bf16 needs no loss scaling; the scaler slot exists for fp16 and stays disabled.
        self.scaler: torch.amp.GradScaler | None = None
        # The EMA generator starts from the initial weights (the first update copies them) and
        # keeps the live generator's buffers (batch-norm statistics) as they are.
        self.ema: AveragedModel | None = None
        if t.ema > 0:
            self.ema = AveragedModel(
                gan.generator, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=False
            )
            self.ema.requires_grad_(False).eval()
            self.ema.update_parameters(gan.generator)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            if self.cuda and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _check(self, terms: dict[str, Tensor], who: str, step: int) -> dict[str, float]:
        """Mean of each term over processes; raise on a non-finite one (all ranks agree)."""
        names = list(terms)
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
        if self.world.world_size > 1:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world.world_size
        floats = values.cpu().tolist()
        for k, v in zip(names, floats, strict=True):
            if not math.isfinite(v):
                raise TrainingError(f"step {step}: {who} term {k} is {v}")
        return dict(zip(names, floats, strict=True))

    def check_state(self, step: int) -> None:
        """Raise :class:`TrainingError` when a weight or buffer (batch-norm running statistics
        included) of either network or of the EMA is not finite.

        A diverging run can keep finite losses while its statistics overflow; one flag per
        tensor and a single device sync keep the check cheap enough to run at every log and
        before every checkpoint (so a checkpoint never holds non-finite values).
        """
        nets = {"generator": self.gan.generator, "discriminator": self.gan.discriminator}
        if self.ema is not None:
            nets["generator EMA"] = self.ema.module  # the generator's own names
        named = [
            (who, kind, name, t)
            for who, net in nets.items()
            for kind, items in (("weight", net.named_parameters()), ("buffer", net.named_buffers()))
            for name, t in items
            if t.is_floating_point()
        ]
        if not named:
            return
        finite = torch.stack([torch.isfinite(t).all() for *_, t in named]).cpu()
        if bool(finite.all()):
            return
        who, kind, name, t = named[int((~finite).nonzero()[0])]
        bad = t.detach()[~torch.isfinite(t.detach())].flatten()[0].item()
        raise TrainingError(
            f"step {step}: {who} {kind} {name} holds non-finite values ({bad}); training "
            f"diverged (is train.lr={self.cfg.train.lr:g} too high?). The last checkpoint "
            "written before this step is kept"
        )

    def step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        """One D step and one G step on a device batch; returns every loss term."""
        gan = self.gan
        gan.train()
        with self.autocast():
            fake = gan.generate(batch)
            d_terms = _prefixed(gan.discriminator_losses(batch, fake.detach()), "d_")
        d_log = self._check(d_terms, "discriminator", step)
        self.opt_d.zero_grad(set_to_none=True)
        d_terms["d_total"].backward()
        _average_gradients(self.d_params, self.world)
        self.opt_d.step()

        # Freeze D so G's backward leaves its gradients alone (they were used and are stale).
        self.opt_d.zero_grad(set_to_none=True)
        for p in self.d_params:
            p.requires_grad_(False)
        try:
            with self.autocast():
                g_terms = _prefixed(gan.generator_losses(batch, fake), "g_")
            g_log = self._check(g_terms, "generator", step)
            self.opt_g.zero_grad(set_to_none=True)
            g_terms["g_total"].backward()
        finally:
            for p in self.d_params:
                p.requires_grad_(True)
        _average_gradients(self.g_params, self.world)
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(gan.generator)
        return {**d_log, **g_log}

    def state(self) -> dict[str, Any]:
        return {
            "generator": self.gan.generator.state_dict(),
            "discriminator": self.gan.discriminator.state_dict(),
            # the generator's own keys, so load_generator reads it like the live weights
            "generator_ema": None if self.ema is None else self.ema.module.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load(self, ckpt: dict[str, Any]) -> None:
        self.gan.generator.load_state_dict(ckpt["generator"])
        self.gan.discriminator.load_state_dict(ckpt["discriminator"])
        if self.ema is not None:
            if ckpt.get("generator_ema") is None:
                raise TrainingError("train.ema > 0 but the checkpoint holds no EMA weights")
            self.ema.module.load_state_dict(ckpt["generator_ema"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        if ckpt.get("scaler") is not None:
            if self.scaler is None:
                self.scaler = torch.amp.GradScaler(self.device.split(":")[0])
            self.scaler.load_state_dict(ckpt["scaler"])


def load_checkpoint(out: Path | str, device: str = "cpu", name: str = CHECKPOINT) -> dict[str, Any]:
    """The checkpoint ``name`` of a run folder (``weights_only``: no pickled objects)."""
    path = Path(out) / name
    if not path.is_file():
        raise TrainingError(f"no checkpoint in {Path(out)} (expected {path.name})")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        text = str(exc).strip()
        why = (
            "it holds more than tensors and plain values, which are never unpickled"
            if text.startswith("Weights only load failed")
            else (text.splitlines() or [type(exc).__name__])[0]
        )
        raise TrainingError(f"{path}: unreadable checkpoint ({why})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a radiolib checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def _resume_checkpoint(out: Path, announce: bool) -> tuple[dict[str, Any] | None, bool]:
    """The newest readable checkpoint of ``out`` and whether it is the previous one.

    ``checkpoint.pt``, else (missing or unreadable) ``checkpoint.prev.pt``, said on stderr when
    ``announce``; ``(None, False)`` when there is neither. Raises :class:`TrainingError` when
    both exist but neither can be read.
    """
    newest, previous = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    if not newest.is_file() and not previous.is_file():
        return None, False
    problem = f"{newest} is missing"
    if newest.is_file():
        try:
            return load_checkpoint(out), False
        except TrainingError as exc:
            problem = str(exc)
    try:
        ckpt = load_checkpoint(out, name=PREVIOUS_CHECKPOINT)
    except TrainingError as exc:
        raise TrainingError(
            f"cannot resume the run in {out}: {problem}; the previous checkpoint too: {exc}. "
            "Start it over with --no-resume (resume=False)"
        ) from None
    if announce:
        print(
            f"{problem}: resuming from the previous checkpoint {previous.name} (step "
            f"{ckpt.get('step')}); pass --no-resume (resume=False) to start over instead",
            file=sys.stderr,
            flush=True,
        )
    return ckpt, True


def _save_checkpoint(out: Path, loop: _Loop, meta: dict[str, Any]) -> None:
    """Write ``checkpoint.pt``; the one it replaces becomes ``checkpoint.prev.pt``. The loop
    checks the state (:meth:`_Loop.check_state`) first, on every rank."""
    state = {"format": CHECKPOINT_FORMAT, **meta, **loop.state(), "rng": _rng_state()}
    with atomic_write(out / CHECKPOINT, "wb", previous=out / PREVIOUS_CHECKPOINT) as fh:
        torch.save(state, fh)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    with atomic_write(path, "w") as fh:
        fh.write("".join(line + "\n" for line in keep))


def _sample_batch(cohort: Any, cfg: Profile, seed: int) -> dict[str, Tensor]:
    """A fixed evaluation batch: train items at epoch 0 spread evenly over the split (slices of
    one patient are consecutive, so the first items would all carry the same genes)."""
    from radiolib.data.dataset import PairedSlices

    ds = PairedSlices(cohort, "train", noise_dim=cfg.model.noise_dim, seed=seed)
    ds.set_epoch(0)
    picks = np.unique(np.linspace(0, len(ds) - 1, min(SAMPLE_COUNT, len(ds))).astype(int))
    items = [ds[int(i)] for i in picks]
    return torch.utils.data.default_collate(items)


@torch.no_grad()
def _write_samples(
    out: Path, loop: _Loop, batch: dict[str, Tensor], step: int, board: Any = None
) -> None:
    """Save the sample batch's synthesis at ``step`` (npz) and, with a ``board``
    (``SummaryWriter``), add it as one image grid: a column per sample, rows background,
    synthetic image, synthetic mask, real slice, real mask."""
    from radiolib.data.dataset import from_net

    gan = loop.gan
    live = gan.generator
    try:
        if loop.ema is not None:
            gan.generator = loop.ema.module
        gan.eval()
        with loop.autocast():
            fake = gan.generate(batch)
    finally:
        gan.generator = live
        gan.train()

    def arr(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()[:, 0]

    with atomic_write(out / "samples" / f"step_{step:06d}.npz", "wb") as fh:
        np.savez_compressed(
            fh,
            step=np.int64(step),
            background=arr(from_net(batch["background"])),
            image=arr(from_net(fake.image)),
            mask=arr(fake.mask),
            real=arr(from_net(batch["tumour"])),
            real_mask=arr(batch["mask"]),
            patient=batch["patient"].cpu().numpy(),
        )
    if board is not None:
        from torchvision.utils import make_grid

        rows = [
            from_net(batch["background"]),
            from_net(fake.image),
            fake.mask,
            from_net(batch["tumour"]),
            batch["mask"],
        ]
        tiles = torch.cat([r.detach().float().cpu().clamp(0, 1) for r in rows])
        board.add_image("samples", make_grid(tiles, nrow=len(rows[0]), pad_value=1.0), step)
        board.flush()


def train(
    gan: GAN,
    cohort: CuratedCohort,
    cfg: Profile,
    out: Path | str,
    seed: int,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``gan`` on the cohort's train split for ``cfg.train.steps`` steps.

    ``out`` receives ``checkpoint.pt``, ``log.jsonl``, ``samples/step_XXXXXX.npz``, TensorBoard
    event files in ``tensorboard/`` (the logged scalars and the sample grids) and, at the
    end, ``done.json``. With ``resume`` a run continues from the checkpoint in ``out`` (or
    returns at once when ``done.json`` records the same finished run); without it ``out`` is
    trained from scratch. Under ``torchrun`` each process trains its share of every global
    batch and only rank 0 writes. Raises :class:`TrainingError` on a non-finite loss, naming
    the step and the term, and on a non-finite weight or buffer (checked at every log and
    checkpoint step, :meth:`_Loop.check_state`). An unreadable newest checkpoint is replaced by
    the previous one (``checkpoint.prev.pt``) when resuming.
    """
    out = check_folder_path(out, "run folder")
    device = resolve_device(device)
    world = _setup_distributed(device)
    if world.world_size > 1 and device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"
    try:
        return _train(gan, cohort, cfg, out, seed, device, resume, progress, world)
    finally:
        if world.owns_group:
            dist.destroy_process_group()


def _barrier(world: _Dist) -> None:
    if world.world_size > 1:
        dist.barrier()


def _train(
    gan: GAN,
    cohort: CuratedCohort,
    cfg: Profile,
    out: Path,
    seed: int,
    device: str,
    resume: bool,
    progress: bool,
    world: _Dist,
) -> TrainResult:
    from radiolib.data.dataset import PairedSlices

    t = cfg.train
    n_genes = int(np.shape(cohort.genes)[1])
    image_size = int(np.shape(cohort.tumour_images)[-1])
    fp = _fingerprint(gan.name, n_genes, image_size, cohort, cfg, seed)
    done_path = out / "done.json"
    if resume and done_path.is_file():
        done = read_json(done_path)
        if done.get("fingerprint") == fp and done.get("steps") == t.steps:
            if (out / CHECKPOINT).is_file():  # hand the caller the trained weights
                finished = load_checkpoint(out)
                gan.generator.load_state_dict(finished["generator"])
                gan.discriminator.load_state_dict(finished["discriminator"])
            return TrainResult(
                out=out,
                steps=done["steps"],
                seconds=done["seconds"],
                images_per_s=done["images_per_s"],
                losses=done["losses"],
                skipped=True,
            )
    ckpt, from_previous = _resume_checkpoint(out, world.main) if resume else (None, False)
    if ckpt is not None:
        if ckpt["fingerprint"] != fp:
            raise StaleRunError(
                f"{out / CHECKPOINT} belongs to a run with other settings (model, data, seed "
                f"or parameters); train into another folder or pass resume=False"
            )
        if ckpt["step"] > t.steps:
            raise TrainingError(
                f"{out / CHECKPOINT} is at step {ckpt['step']}, past train.steps={t.steps}"
            )
    _barrier(world)  # every rank has read the checkpoint before rank 0 may replace it
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f".{CHECKPOINT}.*.tmp"):  # left by a kill mid-write
            stale.unlink(missing_ok=True)
        if ckpt is None:  # a fresh run: nothing of an earlier one may be mistaken for its own
            done_path.unlink(missing_ok=True)
            (out / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
            (out / "log.jsonl").unlink(missing_ok=True)
            shutil.rmtree(out / TENSORBOARD, ignore_errors=True)
            for old in (out / "samples").glob("step_*.npz"):
                old.unlink()
        else:
            done_path.unlink(missing_ok=True)
            _trim_log(out / "log.jsonl", ckpt["step"])
            if from_previous and (out / CHECKPOINT).is_file():
                # moved aside, so that the next save does not push the good previous one out
                os.replace(out / CHECKPOINT, out / f"{CHECKPOINT}.unreadable")

    cpu_deterministic = not device.startswith("cuda")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if cpu_deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        _seed_everything(seed)
        gan.to(device)
        if device.startswith("cuda"):
            gan.to(memory_format=torch.channels_last)
        if world.world_size > 1:
            # Not nn.SyncBatchNorm: it refuses CPU tensors and has no per-tuple groups.
            for net in (gan.generator, gan.discriminator):
                convert_global_batchnorm(net)
            _broadcast_module(gan, world)
        loop = _Loop(gan, cfg, device, world)
        step, seconds = 0, 0.0
        if ckpt is not None:
            loop.load(ckpt)
            step, seconds = int(ckpt["step"]), float(ckpt["seconds"])
            _set_rng_state(ckpt["rng"])

        dataset = PairedSlices(cohort, "train", noise_dim=cfg.model.noise_dim, seed=seed)
        per_epoch = GlobalBatchSampler.batches_per_epoch(len(dataset), t.batch_size)
        samples = loop.to_device(_sample_batch(cohort, cfg, seed)) if world.main else None
        meta_static = {
            "fingerprint": fp,
            "seed": seed,
            "cohort": cohort_identity(cohort),
            "config": cfg.to_dict(),
            "gan": {
                "name": gan.name,
                "n_genes": n_genes,
                "image_size": image_size,
                "model": dataclasses.asdict(cfg.model),
            },
            # where the genes and backgrounds came from, for radiolib.synthesize
            "data": {
                "cohort": str(Path(getattr(cohort, "path", "")).resolve()),
                "gene_names": [str(g) for g in getattr(cohort, "gene_names", [])],
            },
        }

        bar = None
        if progress and world.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=step, desc=f"train {gan.name}", unit="step")
        losses: dict[str, float] = {}
        window_seconds, window_steps = 0.0, 0
        log_fh = open(out / "log.jsonl", "a") if world.main else None
        board = None
        if world.main:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run tells TensorBoard to drop what an earlier session logged past the
            # checkpoint, as _trim_log does for log.jsonl
            board = SummaryWriter(out / TENSORBOARD, purge_step=step + 1 if step else None)
        try:
            while step < t.steps:
                epoch, start = divmod(step, per_epoch)
                dataset.set_epoch(epoch)
                sampler = GlobalBatchSampler(
                    len(dataset), t.batch_size, seed, epoch, start, world.rank, world.world_size
                )
                loader = torch.utils.data.DataLoader(
                    dataset,
                    batch_sampler=sampler,
                    num_workers=t.num_workers,
                    worker_init_fn=_seed_worker,
                    pin_memory=device.startswith("cuda"),
                    generator=torch.Generator().manual_seed(seed + epoch),
                )
                tick = time.perf_counter()
                for batch in loader:  # data loading counts as training time, writing does not
                    if step >= t.steps:
                        break
                    losses = loop.step(loop.to_device(batch), step + 1)
                    step += 1
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    now = time.perf_counter()
                    seconds += now - tick
                    window_seconds += now - tick
                    window_steps += 1
                    ips = t.batch_size * window_steps / max(window_seconds, 1e-9)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            {
                                k: f"{v:.3g}"
                                for k, v in losses.items()
                                if k in ("d_total", "g_total")
                            },
                            refresh=False,
                        )
                    checkpoint_now = step % t.checkpoint_every == 0 or step == t.steps
                    if step % t.log_every == 0 or checkpoint_now:
                        loop.check_state(step)  # on every rank, so that all of them stop
                    if log_fh is not None and (step % t.log_every == 0 or step == t.steps):
                        record = {
                            "step": step,
                            "epoch": epoch,
                            "seconds": round(seconds, 4),
                            "time": time.time(),
                            "images_per_s": ips,
                            **losses,
                        }
                        log_fh.write(json.dumps(record) + "\n")
                        log_fh.flush()
                        _board_scalars(board, record)
                        window_seconds, window_steps = 0.0, 0
                    if world.main and (step % t.sample_every == 0 or step == t.steps):
                        _write_samples(out, loop, samples, step, board)
                    if world.main and checkpoint_now:
                        _save_checkpoint(
                            out,
                            loop,
                            {
                                **meta_static,
                                "step": step,
                                "epoch": step // per_epoch,
                                "seconds": seconds,
                            },
                        )
                    tick = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            if log_fh is not None:
                log_fh.close()
            if board is not None:
                board.close()

        images_per_s = t.steps * t.batch_size / seconds if seconds > 0 else float("nan")
        if ckpt is not None and not losses:  # resumed at the last step: nothing left to run
            losses = _last_logged(out)
        if world.main:
            write_json(
                done_path,
                {
                    "fingerprint": fp,
                    "steps": t.steps,
                    "seconds": seconds,
                    "images_per_s": images_per_s,
                    "losses": losses,
                    "model": gan.name,
                    "seed": seed,
                    "world_size": world.world_size,
                },
            )
        _barrier(world)
        return TrainResult(
            out=out, steps=t.steps, seconds=seconds, images_per_s=images_per_s, losses=losses
        )
    finally:
        if cpu_deterministic:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _board_scalars(board: Any, record: dict[str, Any]) -> None:
    """One log record as TensorBoard scalars: ``loss/<term>`` for every d_* and g_* term,
    ``speed/images_per_s`` and ``epoch``."""
    step = record["step"]
    for k, v in record.items():
        if k.startswith(("d_", "g_")):
            board.add_scalar(f"loss/{k}", v, step)
    board.add_scalar("speed/images_per_s", record["images_per_s"], step)
    board.add_scalar("epoch", record["epoch"], step)
    board.flush()


def _last_logged(out: Path) -> dict[str, float]:
    path = out / "log.jsonl"
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return {}
    last = json.loads(lines[-1])
    return {k: v for k, v in last.items() if k.startswith(("d_", "g_"))}


def load_generator(out: Path | str, device: str = "cpu") -> GAN:
    """The trained GAN of a run folder, in eval mode, carrying the EMA generator if kept.

    Rebuilt with ``radiolib.models.build_gan`` from the name, gene count, image size and model
    configuration stored in the checkpoint.
    """
    from radiolib.models import build_gan

    device = resolve_device(device)
    ckpt = load_checkpoint(out, device)
    info = ckpt["gan"]
    model_cfg = ModelConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in info["model"].items()}
    )
    gan = build_gan(info["name"], int(info["n_genes"]), int(info["image_size"]), model_cfg)
    generator = (
        ckpt["generator_ema"] if ckpt.get("generator_ema") is not None else (ckpt["generator"])
    )
    gan.generator.load_state_dict(generator)
    gan.discriminator.load_state_dict(ckpt["discriminator"])
    return gan.to(device).eval()


def build_for_cohort(model: str, cohort: Any, cfg: Profile, seed: int) -> GAN:
    """``model`` sized for ``cohort``'s genes and image grid, initialised from ``seed`` (the same
    initial weights on every rank and every run)."""
    from radiolib.models import build_gan

    torch.manual_seed(seed)
    return build_gan(
        model,
        int(np.shape(cohort.genes)[1]),
        int(np.shape(cohort.tumour_images)[-1]),
        cfg.model,
    )


def train_from_args(
    model: str,
    data: Path,
    profile: Profile,
    out: Path,
    seed: int,
    device: str = "auto",
    resume: bool = True,
) -> TrainResult:
    """``radiolib train``: load the curated cohort in ``data``, build ``model``, train it."""
    from radiolib.data.curated import load_curated

    cohort = load_curated(Path(data))
    gan = build_for_cohort(model, cohort, profile, seed)
    return train(gan, cohort, profile, Path(out), seed, device=device, resume=resume)


def train_models(
    cohort: Any,
    cfg: Profile,
    run_dir: Callable[[str, int], Path],
    models: Sequence[str] = ("proposed", "baseline", "inpainting"),
    seeds: Sequence[int] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> pd.DataFrame:
    """Train every model for every seed (``cfg.train.seeds`` by default) into
    ``run_dir(model, seed)``; finished runs are reused, unfinished ones resumed, and a run made
    with other settings or data (the cohort was curated again, a parameter changed) is trained
    again from the start. One row per run: model, seed, steps, seconds, images_per_s, skipped,
    out and the last logged loss terms."""
    rows = []
    for model in models:
        for seed in seeds if seeds is not None else cfg.train.seeds:
            out = run_dir(model, seed)
            gan = build_for_cohort(model, cohort, cfg, seed)
            try:
                result = train(gan, cohort, cfg, out, seed, device=device, progress=progress)
            except StaleRunError as stale:
                print(f"{stale}: the inputs changed, training {model} (seed {seed}) again")
                gan = build_for_cohort(model, cohort, cfg, seed)
                result = train(
                    gan, cohort, cfg, out, seed, device=device, resume=False, progress=progress
                )
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "steps": result.steps,
                    "seconds": round(result.seconds, 1),
                    "images_per_s": round(result.images_per_s, 1),
                    "skipped": result.skipped,
                    "out": str(result.out),
                    **result.losses,
                }
            )
    return pd.DataFrame(rows)


def _describe_cohort(identity: dict[str, Any]) -> str:
    keys = ("path", "patients", "n_genes", "image_size")
    return ", ".join(f"{k} {identity[k]}" for k in keys if k in identity)


def inspect_runs(runs: Sequence[Path | str], cohort: Any) -> pd.DataFrame:
    """What the run folders ``runs`` hold, checked against the cohort they are evaluated on.

    One row per run: run (folder), model, seed, step (of its checkpoint), steps (it was
    configured for) and finished (``step >= steps``). Raises :class:`StaleRunError` for a run
    trained on another cohort, and :class:`TrainingError` for two runs of the same model and
    seed (their results would overwrite each other).
    """
    here = cohort_identity(cohort)
    rows: list[dict[str, Any]] = []
    for run in map(Path, runs):
        ckpt = load_checkpoint(run)
        model, seed, step = str(ckpt["gan"]["name"]), int(ckpt["seed"]), int(ckpt["step"])
        # checkpoints written before the cohort was recorded: compare the sizes only
        trained = ckpt.get("cohort") or {
            "n_genes": int(ckpt["gan"]["n_genes"]),
            "image_size": int(ckpt["gan"]["image_size"]),
        }
        if any(trained[k] != here[k] for k in ("sha256", "n_genes", "image_size") if k in trained):
            raise StaleRunError(
                f"run {run} ({model}, seed {seed}) was trained on another cohort "
                f"({_describe_cohort(trained)}), not on the cohort it is evaluated on "
                f"({_describe_cohort(here)}); evaluate it with the cohort it was trained on"
            )
        twin = next((r["run"] for r in rows if (r["model"], r["seed"]) == (model, seed)), None)
        if twin is not None:
            raise TrainingError(
                f"runs {twin} and {run} are both {model} with seed {seed}: their results would "
                "overwrite each other; evaluate them in separate calls (other --out folders)"
            )
        steps = int(ckpt["config"]["train"]["steps"])
        rows.append(
            {
                "run": str(run),
                "model": model,
                "seed": seed,
                "step": step,
                "steps": steps,
                "finished": step >= steps,
            }
        )
    return pd.DataFrame(rows, columns=["run", "model", "seed", "step", "steps", "finished"])


def read_log(out: Path | str) -> pd.DataFrame:
    """The per-step log of a run (``log.jsonl``) as a frame, one row per logged step."""
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        raise TrainingError(f"no training log at {path}")
    return pd.read_json(path, lines=True)


def read_samples(out: Path | str) -> list[dict[str, np.ndarray]]:
    """The sample grids a run saved as it trained, in step order (arrays in [0, 1])."""
    found = sorted((Path(out) / "samples").glob("step_*.npz"))
    return [dict(np.load(p)) for p in found]
