"""What a training run writes as it trains, each at its cadence (:class:`Recorder`).

The progress bar (:func:`radiolib.progress.progress_bar`: model, seed, step, time left and the
total losses) at every step; ``log.jsonl`` and TensorBoard scalars every ``train.log_every``
steps; the synthesis of a fixed sample batch (``samples/step_XXXXXX.npz`` and a TensorBoard
image grid) every ``train.sample_every`` steps; ``checkpoint.pt`` every
``train.checkpoint_every`` steps (:func:`radiolib.runs.save_checkpoint`); all three at the last
step. :mod:`radiolib.runs` reads them back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from radiolib.config import Profile
from radiolib.io import atomic_write
from radiolib.models import eval_mode
from radiolib.progress import progress_bar, shows_progress
from radiolib.reproducibility import rng_state
from radiolib.runs import LOG, TENSORBOARD, save_checkpoint

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from radiolib.data.curated import CuratedCohort
    from radiolib.train import TrainingLoop

SAMPLE_COUNT = 8  # images in each sample grid


def _sample_batch(cohort: CuratedCohort, cfg: Profile, seed: int) -> dict[str, Tensor]:
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
    out: Path,
    loop: TrainingLoop,
    batch: dict[str, Tensor],
    step: int,
    board: SummaryWriter | None = None,
) -> None:
    """Save the sample batch's synthesis at ``step`` (npz) and, with a ``board``, add it as one
    image grid: a column per sample, rows background, synthetic image, synthetic mask, real
    slice, real mask. The EMA generator paints when there is one."""
    from radiolib.data.dataset import from_net

    gan = loop.gan
    with eval_mode(gan):
        live = gan.generator
        try:
            if loop.ema is not None:
                gan.generator = loop.ema.module
            with loop.autocast():
                fake = gan.generate(batch)
        finally:
            gan.generator = live

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


def _board_scalars(board: SummaryWriter, record: dict[str, float]) -> None:
    """One log record as TensorBoard scalars: ``loss/<term>`` for every d_* and g_* term,
    ``speed/images_per_s`` and ``epoch``."""
    step = record["step"]
    for k, v in record.items():
        if k.startswith(("d_", "g_")):
            board.add_scalar(f"loss/{k}", v, step)
    board.add_scalar("speed/images_per_s", record["images_per_s"], step)
    board.add_scalar("epoch", record["epoch"], step)
    board.flush()


class Recorder:
    """The bar, log, TensorBoard, samples and checkpoints of one run, written by rank 0 only
    (the module docstring gives their cadence); :meth:`after_step` also checks the state
    (:meth:`~radiolib.train.TrainingLoop.check_state`) before a log or a checkpoint, on every
    rank, so that all of them stop. Use it as a context manager: leaving closes the files."""

    def __init__(
        self,
        out: Path,
        loop: TrainingLoop,
        cohort: CuratedCohort,
        seed: int,
        meta: dict[str, Any],
        per_epoch: int,
        step: int,
        progress: bool | None,
    ) -> None:
        """``meta``: what every checkpoint records besides the state; ``per_epoch``: batches
        per epoch; ``step``: the step the run starts from (0, or its checkpoint's);
        ``progress``: whether to show a bar (None: when ``radiolib study`` relays it, see
        :mod:`radiolib.progress`)."""
        self.out, self.loop, self.meta, self.per_epoch = out, loop, meta, per_epoch
        self.t = loop.cfg.train
        main = loop.world.main
        self.samples = loop.to_device(_sample_batch(cohort, loop.cfg, seed)) if main else None
        self.window_seconds, self.window_steps = 0.0, 0
        self.bar = None
        if main and shows_progress(progress):
            desc = f"{loop.gan.name} seed {seed}"
            self.bar = progress_bar(self.t.steps, desc, initial=step, unit="step")
        self.log_fh = open(out / LOG, "a") if main else None
        self.board = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run tells TensorBoard to drop what an earlier session logged past the
            # checkpoint, as trim_log does for log.jsonl
            self.board = SummaryWriter(out / TENSORBOARD, purge_step=step + 1 if step else None)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in (self.bar, self.log_fh, self.board):
            if handle is not None:
                handle.close()

    def after_step(
        self, step: int, epoch: int, seconds: float, took: float, losses: dict[str, float]
    ) -> None:
        """Record step ``step`` of ``epoch``, which took ``took`` of the run's ``seconds``."""
        t, loop = self.t, self.loop
        self.window_seconds += took
        self.window_steps += 1
        if self.bar is not None:
            shown = {k: f"{v:.3g}" for k, v in losses.items() if k in ("d_total", "g_total")}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        checkpoint_now = step % t.checkpoint_every == 0 or step == t.steps
        if step % t.log_every == 0 or checkpoint_now:
            loop.check_state(step)
        if self.log_fh is not None and (step % t.log_every == 0 or step == t.steps):
            ips = t.batch_size * self.window_steps / max(self.window_seconds, 1e-9)
            record = {
                "step": step,
                "epoch": epoch,
                "seconds": round(seconds, 4),
                "time": time.time(),
                "images_per_s": ips,
                **losses,
            }
            self.log_fh.write(json.dumps(record) + "\n")
            self.log_fh.flush()
            _board_scalars(self.board, record)
            self.window_seconds, self.window_steps = 0.0, 0
        if self.samples is not None and (step % t.sample_every == 0 or step == t.steps):
            _write_samples(self.out, loop, self.samples, step, self.board)
        if loop.world.main and checkpoint_now:
            state = {"step": step, "epoch": step // self.per_epoch, "seconds": seconds}
            save_checkpoint(self.out, {**self.meta, **state, **loop.state(), "rng": rng_state()})
