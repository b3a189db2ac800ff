"""One trainer for the three GANs: the training step, the loop, resume, progress.

Per step (paper section 2.3, least-squares GAN):

1. ``fake = gan.generate(batch)``;
2. discriminator step on ``gan.discriminator_losses(batch, fake.detach())``;
3. generator step on ``gan.generator_losses(batch, fake)``, reusing ``fake`` and scoring it with
   the discriminator just updated; ``generator_losses`` freezes the discriminator
   (:func:`radiolib.models.frozen`), so it collects no gradient and is stepped only once per
   step.

Everything a run needs to continue bit for bit (weights, EMA, optimisers, RNG states, step,
epoch) goes into ``out/checkpoint.pt`` (:func:`radiolib.runs.save_checkpoint`: written
atomically, loadable with ``torch.load(weights_only=True)``, the checkpoint it replaces kept as
``out/checkpoint.prev.pt``, which a resumed run falls back to when the newest cannot be read).
Losses are checked at every step; weights and buffers (batch-norm running statistics too) at
every log and checkpoint step, so a diverging run stops with a named error and never writes a
non-finite checkpoint. The data order is a pure function of ``(seed, epoch)`` and each item a
pure function of ``(seed, epoch, index)``, so a resumed run reads exactly the batches an
uninterrupted run would have read.

Several processes (``torchrun --nproc_per_node N -m radiolib train ...``) split every global
batch between them (:mod:`radiolib.distributed`), so N processes compute what one process
computes, gene dropout aside (``model.gene_dropout``: each process draws the masks of its share
of the batch, other masks than one process draws).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from radiolib.config import Profile, resolve_device
from radiolib.distributed import (
    GlobalBatchSampler,
    World,
    average_gradients,
    barrier,
    broadcast_module,
    mean_over_processes,
    process_group,
    use_global_batchnorm,
)
from radiolib.errors import StaleRunError, TrainingError
from radiolib.io import check_folder_path, read_json, write_json
from radiolib.recorder import Recorder
from radiolib.reproducibility import (
    deterministic_on_cpu,
    seed_everything,
    seed_worker,
    set_rng_state,
)
from radiolib.runs import (
    CHECKPOINT,
    DONE,
    LOG,
    PREVIOUS_CHECKPOINT,
    TENSORBOARD,
    cohort_identity,
    fingerprint,
    last_logged,
    load_checkpoint,
    resume_checkpoint,
    trim_log,
)

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.data.dataset import PairedSlices
    from radiolib.models import GAN


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float  # training time summed over every (resumed) session
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)  # last step's terms, d_* and g_*
    skipped: bool = False  # True when done.json showed the run already finished


# --------------------------------------------------------------------------- the step


def _prefixed(terms: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if "total" not in terms:
        raise TrainingError(f"the model's {prefix}loss dict has no 'total' term: {list(terms)}")
    return {(k if k.startswith(prefix) else prefix + k): v for k, v in terms.items()}


class TrainingLoop:
    """One GAN as training runs it: on its device and in its memory layout, with global batch
    norm under several processes, its optimisers, EMA and precision; :meth:`step` is one
    training step (shared with :mod:`radiolib.bench`)."""

    def __init__(self, gan: GAN, cfg: Profile, device: str, world: World | None = None) -> None:
        self.gan, self.cfg, self.device = gan, cfg, device
        self.world = world if world is not None else World()
        self.cuda = device.startswith("cuda")
        gan.to(device)
        if self.cuda:
            gan.to(memory_format=torch.channels_last)
        if self.world.world_size > 1:
            # Not nn.SyncBatchNorm: it refuses CPU tensors and has no per-tuple groups.
            for net in (gan.generator, gan.discriminator):
                use_global_batchnorm(net)
            broadcast_module(gan, self.world)
        t = cfg.train
        self.g_params = [p for p in gan.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in gan.discriminator.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(self.g_params, lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.d_params, lr=t.lr, betas=(t.beta1, t.beta2))
        # The EMA generator starts from the initial weights (the first update copies them) and
        # keeps the live generator's buffers (batch-norm statistics) as they are.
        self.ema: AveragedModel | None = None
        if t.ema > 0:
            self.ema = AveragedModel(
                gan.generator, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=False
            )
            self.ema.requires_grad_(False).eval()
            self.ema.update_parameters(gan.generator)
        # the compiled generator shares the live one's parameters and buffers; it paints only in
        # the training step (samples and later synthesis run the eager module). One process
        # only: under torchrun the global batch norm's collectives run eager
        self.compiled_generator: nn.Module | None = None
        if t.compile and self.world.world_size == 1:
            self.compiled_generator = torch.compile(gan.generator)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on a GPU (which needs no loss scaling); fp32 on the CPU."""
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def training_generator(self) -> Iterator[None]:
        """The compiled generator in ``gan.generator`` inside the block (when ``train.compile``),
        the eager one afterwards."""
        if self.compiled_generator is None:
            yield
            return
        live = self.gan.generator
        self.gan.generator = self.compiled_generator
        try:
            yield
        finally:
            self.gan.generator = live

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
        floats = mean_over_processes(values, self.world).cpu().tolist()
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
            with self.training_generator():
                fake = gan.generate(batch)
            d_terms = _prefixed(gan.discriminator_losses(batch, fake.detach()), "d_")
        d_log = self._check(d_terms, "discriminator", step)
        # G's gradients are cleared before D's backward: where the discriminator trains the
        # generator's gene code (model.d_gene_code="shared") that backward leaves its share on
        # the code, which the generator's step then applies with its own
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        d_terms["d_total"].backward()
        average_gradients(self.d_params, self.world)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)  # used: G's step leaves D's gradients alone

        with self.autocast():
            g_terms = _prefixed(gan.generator_losses(batch, fake), "g_")
        g_log = self._check(g_terms, "generator", step)
        g_terms["g_total"].backward()
        average_gradients(self.g_params, self.world)
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


def _sizes(cohort: CuratedCohort) -> tuple[int, int]:
    """(genes, image size) of a cohort."""
    return int(np.shape(cohort.genes)[1]), int(np.shape(cohort.tumour_images)[-1])


def _finished_run(out: Path, fp: str, steps: int, gan: GAN) -> TrainResult | None:
    """The result ``done.json`` records when it is this run's (same fingerprint and steps),
    with the trained weights loaded into ``gan``; None otherwise."""
    done_path = out / DONE
    if not done_path.is_file():
        return None
    done = read_json(done_path)
    if done.get("fingerprint") != fp or done.get("steps") != steps:
        return None
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


def _checkpoint_to_resume(
    out: Path, fp: str, steps: int, announce: bool
) -> tuple[dict[str, Any] | None, bool]:
    """:func:`radiolib.runs.resume_checkpoint`, refused (:class:`StaleRunError`) when it belongs
    to a run with another fingerprint, and when it is past ``steps``."""
    ckpt, from_previous = resume_checkpoint(out, announce)
    if ckpt is not None:
        if ckpt["fingerprint"] != fp:
            raise StaleRunError(
                f"{out / CHECKPOINT} belongs to a run with other settings (model, data, seed "
                f"or parameters); train into another folder or pass resume=False"
            )
        if ckpt["step"] > steps:
            raise TrainingError(
                f"{out / CHECKPOINT} is at step {ckpt['step']}, past train.steps={steps}"
            )
    return ckpt, from_previous


def _prepare_folder(out: Path, ckpt: dict[str, Any] | None, from_previous: bool) -> None:
    """Make ``out`` ready for a fresh run (``ckpt`` None) or for resuming from ``ckpt``."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{CHECKPOINT}.*.tmp"):  # left by a kill mid-write
        stale.unlink(missing_ok=True)
    (out / DONE).unlink(missing_ok=True)
    if ckpt is None:  # a fresh run: nothing of an earlier one may be mistaken for its own
        (out / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
        (out / LOG).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD, ignore_errors=True)
        for old in (out / "samples").glob("step_*.npz"):
            old.unlink()
    else:
        trim_log(out, ckpt["step"])
        if from_previous and (out / CHECKPOINT).is_file():
            # moved aside, so that the next save does not push the good previous one out
            os.replace(out / CHECKPOINT, out / f"{CHECKPOINT}.unreadable")


def _run_meta(gan: GAN, cohort: CuratedCohort, cfg: Profile, seed: int, fp: str) -> dict[str, Any]:
    """What every checkpoint of the run records besides the state: what was trained on what."""
    n_genes, image_size = _sizes(cohort)
    return {
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


def _run_steps(
    loop: TrainingLoop,
    dataset: PairedSlices,
    seed: int,
    per_epoch: int,
    step: int,
    seconds: float,
    recorder: Recorder,
) -> tuple[float, dict[str, float]]:
    """Train from ``step`` to ``train.steps``: the training time (data loading included,
    writing not) added to ``seconds``, and the last step's loss terms ({} when none ran)."""
    t, world = loop.cfg.train, loop.world
    losses: dict[str, float] = {}
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
            worker_init_fn=seed_worker,
            pin_memory=loop.cuda,
            generator=torch.Generator().manual_seed(seed + epoch),
        )
        tick = time.perf_counter()
        for batch in loader:
            if step >= t.steps:
                break
            losses = loop.step(loop.to_device(batch), step + 1)
            step += 1
            if loop.cuda:
                torch.cuda.synchronize()
            took = time.perf_counter() - tick
            seconds += took
            recorder.after_step(step, epoch, seconds, took, losses)
            tick = time.perf_counter()
    return seconds, losses


def train(
    gan: GAN,
    cohort: CuratedCohort,
    cfg: Profile,
    out: Path | str,
    seed: int,
    device: str = "auto",
    resume: bool = True,
    progress: bool | None = True,
) -> TrainResult:
    """Train ``gan`` on the cohort's train split for ``cfg.train.steps`` steps.

    ``out`` receives ``checkpoint.pt``, ``log.jsonl``, ``samples/step_XXXXXX.npz``, TensorBoard
    event files in ``tensorboard/`` (the logged scalars and the sample grids) and, at the
    end, ``done.json``. With ``resume`` a run continues from the checkpoint in ``out`` (or
    returns at once when ``done.json`` records the same finished run); without it ``out`` is
    trained from scratch. Under ``torchrun`` each process trains its share of every global
    batch and only rank 0 writes. Raises :class:`TrainingError` on a non-finite loss, naming
    the step and the term, and on a non-finite weight or buffer (checked at every log and
    checkpoint step, :meth:`TrainingLoop.check_state`). An unreadable newest checkpoint is
    replaced by the previous one (``checkpoint.prev.pt``) when resuming. ``progress``: a bar
    with the model, seed, step, time left and losses (None: only when ``radiolib study`` runs
    this, which prints it in its terminal, :mod:`radiolib.progress`).
    """
    out = check_folder_path(out, "run folder")
    device = resolve_device(device)
    with process_group(device) as world:
        if world.world_size > 1 and device.startswith("cuda"):
            device = f"cuda:{world.local_rank}"
        return _train(gan, cohort, cfg, out, seed, device, resume, progress, world)


def _train(
    gan: GAN,
    cohort: CuratedCohort,
    cfg: Profile,
    out: Path,
    seed: int,
    device: str,
    resume: bool,
    progress: bool | None,
    world: World,
) -> TrainResult:
    from radiolib.data.dataset import PairedSlices

    t = cfg.train
    fp = fingerprint(gan.name, *_sizes(cohort), cohort, cfg, seed)
    finished = _finished_run(out, fp, t.steps, gan) if resume else None
    if finished is not None:
        return finished
    ckpt, from_previous = (
        _checkpoint_to_resume(out, fp, t.steps, world.main) if resume else (None, False)
    )
    barrier(world)  # every rank has read the checkpoint before rank 0 may replace it
    if world.main:
        _prepare_folder(out, ckpt, from_previous)

    with deterministic_on_cpu(device):
        seed_everything(seed)
        loop = TrainingLoop(gan, cfg, device, world)
        step, seconds = 0, 0.0
        if ckpt is not None:
            loop.load(ckpt)
            step, seconds = int(ckpt["step"]), float(ckpt["seconds"])
            set_rng_state(ckpt["rng"])
        dataset = PairedSlices(cohort, "train", noise_dim=cfg.model.noise_dim, seed=seed)
        per_epoch = GlobalBatchSampler.batches_per_epoch(len(dataset), t.batch_size)
        meta = _run_meta(gan, cohort, cfg, seed, fp)
        with Recorder(out, loop, cohort, seed, meta, per_epoch, step, progress) as recorder:
            seconds, losses = _run_steps(loop, dataset, seed, per_epoch, step, seconds, recorder)

        images_per_s = t.steps * t.batch_size / seconds if seconds > 0 else float("nan")
        if ckpt is not None and not losses:  # resumed at the last step: nothing left to run
            losses = last_logged(out)
        if world.main:
            done = {
                "fingerprint": fp,
                "steps": t.steps,
                "seconds": seconds,
                "images_per_s": images_per_s,
                "losses": losses,
                "model": gan.name,
                "seed": seed,
                "world_size": world.world_size,
            }
            write_json(out / DONE, done)
        barrier(world)
        return TrainResult(
            out=out, steps=t.steps, seconds=seconds, images_per_s=images_per_s, losses=losses
        )


# --------------------------------------------------------------------------- drivers


def build_for_cohort(model: str, cohort: CuratedCohort, cfg: Profile, seed: int) -> GAN:
    """``model`` sized for ``cohort``'s genes and image grid, initialised from ``seed`` (the same
    initial weights on every rank and every run)."""
    from radiolib.models import build_gan

    torch.manual_seed(seed)
    return build_gan(model, *_sizes(cohort), cfg.model)


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


def _train_run(
    model: str,
    seed: int,
    out: Path,
    cohort: CuratedCohort,
    cfg: Profile,
    device: str,
    progress: bool | None,
    threads: int = 0,
) -> dict[str, Any]:
    """One run of :func:`train_models` (in this process, or in a worker with ``threads``
    threads); a run made with other settings or data is trained again from the start."""
    if threads:
        torch.set_num_threads(threads)
    gan = build_for_cohort(model, cohort, cfg, seed)
    try:
        result = train(gan, cohort, cfg, out, seed, device=device, progress=progress)
    except StaleRunError as stale:
        print(f"{stale}: the inputs changed, training {model} (seed {seed}) again")
        gan = build_for_cohort(model, cohort, cfg, seed)
        result = train(gan, cohort, cfg, out, seed, device=device, resume=False, progress=progress)
    return {
        "model": model,
        "seed": seed,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "images_per_s": round(result.images_per_s, 1),
        "skipped": result.skipped,
        "out": str(result.out),
        **result.losses,
    }


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[tuple[Any, int]]:
    """``(pool, threads)``: ``workers`` spawned processes (no fork of a process with threads)
    and the threads each should take, its share of this process's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        yield pool, max(1, torch.get_num_threads() // workers)


def train_models(
    cohort: CuratedCohort,
    cfg: Profile,
    run_dir: Callable[[str, int], Path],
    models: Sequence[str] = ("proposed", "baseline", "inpainting"),
    seeds: Sequence[int] | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Train every model for every seed (``cfg.train.seeds`` by default) into
    ``run_dir(model, seed)``; finished runs are reused, unfinished ones resumed, and a run made
    with other settings or data (the cohort was curated again, a parameter changed) is trained
    again from the start. ``cfg.train.parallel_runs`` runs train at once, each in a process of
    its own with its share of this process's threads (small networks use two cores better as
    two runs than as one). One row per run, in the order of ``models`` then seeds: model, seed,
    steps, seconds, images_per_s, skipped, out and the last logged loss terms. ``progress`` as
    for :func:`train`: by default a bar only when ``radiolib study`` runs the notebook, in its
    terminal (not in the notebook)."""
    seeds = cfg.train.seeds if seeds is None else seeds
    runs = [(model, int(seed), Path(run_dir(model, seed))) for model in models for seed in seeds]
    workers = min(cfg.train.parallel_runs, len(runs))
    if workers <= 1:
        return pd.DataFrame([_train_run(*r, cohort, cfg, device, progress) for r in runs])
    with process_pool(workers) as (pool, threads):
        futures = [
            pool.submit(_train_run, *r, cohort, cfg, device, progress, threads) for r in runs
        ]
        return pd.DataFrame([f.result() for f in futures])
