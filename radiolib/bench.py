"""``radiolib bench``: parameters, FLOPs and speed of the three GANs' training step.

Each model runs the trainer's own step (:class:`radiolib.train.TrainingLoop`: D forward and
backward, G forward and backward, both Adam updates) on random inputs of the profile's batch and
image size with 5172 genes, the gene count of the real cohort. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` over one such step (matrix products and
convolutions, forward and backward; element-wise work is not counted) and divided by the batch
size. A reference line measures the machine's fp32 matrix-product rate, so the achieved
GFLOP/s can be read against what the hardware delivers.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from radiolib.config import Profile, resolve_device

if TYPE_CHECKING:
    from radiolib.models import GAN
    from radiolib.train import TrainingLoop

N_GENES = 5172  # genes kept from the real NSCLC Radiogenomics expression table

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity).
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,  # fp16 tensor cores (V100 has no bf16)
}


def bf16_peak_tflops(device_name: str) -> float:
    """Dense bf16 peak of a GPU by (a part of) its name; NaN when the card is not listed."""
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # most specific name first
        if key.lower() in device_name.lower():
            return BF16_PEAK_TFLOPS[key]
    return float("nan")


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs (multiply and add counted apart) of the matrix products and convolutions that
    ``fn(*args, **kwargs)`` runs, backward passes inside it included."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(
    device: str = "cpu", n: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32
) -> float:
    """Best rate of an ``n x n x n`` matrix product (2 n^3 FLOP) on ``device``, in GFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def random_batch(
    batch_size: int,
    image_size: int,
    n_genes: int,
    noise_dim: int,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Tensor]:
    """A batch shaped like :class:`radiolib.data.dataset.PairedSlices` items, random content.

    Masks are disks (radius S/8 to S/4 near the centre) so models deriving holes from them
    see realistic shapes: tumour, background (B, 1, S, S) in [-1, 1]; mask, mismatch_mask
    (B, 1, S, S) {0, 1}; genes, mismatch_genes (B, G); noise (B, Z); patient (B,).
    """
    g = torch.Generator().manual_seed(seed)
    s = image_size
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    centre = s / 2 + (torch.rand(batch_size, 2, generator=g) - 0.5) * s / 4
    radius = s / 8 + torch.rand(batch_size, generator=g) * s / 8
    d2 = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
    mask = (d2 <= radius[:, None, None] ** 2).float()[:, None]
    batch = {
        "tumour": torch.rand(batch_size, 1, s, s, generator=g) * 2 - 1,
        "mask": mask,
        "genes": torch.randn(batch_size, n_genes, generator=g),
        "background": torch.rand(batch_size, 1, s, s, generator=g) * 2 - 1,
        "mismatch_mask": mask.roll(1, 0),
        "mismatch_genes": torch.randn(batch_size, n_genes, generator=g),
        "noise": torch.randn(batch_size, noise_dim, generator=g),
        "patient": torch.arange(batch_size),
    }
    return {k: v.to(device) for k, v in batch.items()}


def _training_step(
    model: str, profile: Profile, n_genes: int, device: str
) -> tuple[GAN, TrainingLoop, dict[str, Tensor]]:
    """``(gan, loop, batch)``: ``model`` (seed 0) in the trainer's loop with a random batch of
    the profile's batch and image size; ``loop.step(batch, i)`` runs one training step."""
    from radiolib.models import build_gan
    from radiolib.train import TrainingLoop

    s = profile.curation.image_size
    torch.manual_seed(0)
    gan = build_gan(model, n_genes, s, profile.model)
    loop = TrainingLoop(gan, profile, device)
    batch = random_batch(profile.train.batch_size, s, n_genes, profile.model.noise_dim)
    return gan, loop, loop.to_device(batch)


def training_step_flops(
    model: str, profile: Profile, n_genes: int = N_GENES, device: str = "cpu"
) -> int:
    """FLOPs of one training step of ``model`` on ``device`` (see the module docstring: matrix
    products and convolutions, forward and backward), for ``n_genes`` genes at the profile's
    batch and image size, counted on the eager step (``train.compile`` off: the same products).
    The global torch random state is left as it was."""
    eager = dataclasses.replace(profile, train=dataclasses.replace(profile.train, compile=False))
    with torch.random.fork_rng(devices=[]):
        _, loop, batch = _training_step(model, eager, n_genes, device)
        return count_flops(loop.step, batch, 1)


def _timed_steps(
    model: str,
    profile: Profile,
    device: str,
    steps: int,
    threads: int = 0,
    barrier: Any = None,
) -> tuple[list[float], int, int]:
    """``(step seconds, generator parameters, discriminator parameters)`` of ``model``'s
    training step: two warm-up steps (allocator, kernel choice, ``train.compile``'s compile),
    then ``steps`` timed ones. In a worker process: with ``threads`` threads, and the timed
    steps start when every worker has passed ``barrier`` (so they run at the same time)."""
    if threads:
        torch.set_num_threads(threads)
    gan, loop, batch = _training_step(model, profile, N_GENES, device)
    loop.step(batch, 1)
    loop.step(batch, 2)
    if barrier is not None:
        barrier.wait(timeout=600)  # a worker that failed before it never arrives
    times = []
    for i in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        loop.step(batch, 3 + i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    g_params = sum(p.numel() for p in gan.generator.parameters())
    d_params = sum(p.numel() for p in gan.discriminator.parameters())
    return times, g_params, d_params


def _concurrent_steps(
    model: str, profile: Profile, steps: int, runs: int
) -> tuple[list[float], int, int]:
    """:func:`_timed_steps` in ``runs`` processes at once, each with its share of this
    process's threads, as ``train_models`` trains ``train.parallel_runs`` runs; the step times
    of all of them, pooled."""
    import multiprocessing

    from radiolib.train import process_pool

    manager = multiprocessing.get_context("spawn").Manager()
    with manager, process_pool(runs) as (pool, threads):
        barrier = manager.Barrier(runs)
        futures = [
            pool.submit(_timed_steps, model, profile, "cpu", steps, threads, barrier)
            for _ in range(runs)
        ]
        results = [f.result() for f in futures]
    return [t for times, _, _ in results for t in times], results[0][1], results[0][2]


def run_bench(
    profile: Profile,
    device: str = "auto",
    steps: int = 5,
    models: Sequence[str] = ("proposed", "baseline", "inpainting"),
) -> pd.DataFrame:
    """One row per model: parameters, GFLOP per training image, step time, images/s, GFLOP/s.

    Step time is the median of ``steps`` timed steps after two warm-up steps (the first compiles
    the generator under ``train.compile``); FLOPs are those of :func:`training_step_flops`.
    On the CPU the step runs as training runs it: ``train.parallel_runs`` runs at once, each in
    a process with its share of the threads, and images/s and GFLOP/s are those of all of them
    together (``-p train.parallel_runs=1``: one run with every thread).
    On a GPU the step runs in bf16 autocast with channels_last (as in training), one run, and
    ``peak_share`` is the achieved rate over the card's dense bf16 peak (NaN on the CPU or an
    unlisted card). ``df.attrs`` holds the device, the runs at once, its fp32 2048^3
    matrix-product GFLOP/s (``matmul_gflops``, all threads) and, on a GPU, the bf16 one.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    b, s = profile.train.batch_size, profile.curation.image_size
    runs = 1 if cuda else profile.train.parallel_runs
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = bf16_peak_tflops(name) if cuda else float("nan")
    # The machine is often shared: take the better of a matmul rate before and after.
    matmul_before = matmul_gflops(device)
    rows = []
    for model in models:
        flops = training_step_flops(model, profile, N_GENES, device)
        if runs > 1:
            times, g_params, d_params = _concurrent_steps(model, profile, steps, runs)
        else:
            times, g_params, d_params = _timed_steps(model, profile, device, steps)
        step_s = statistics.median(times)
        gflops = runs * flops / step_s / 1e9
        rows.append(
            {
                "model": model,
                "g_params": g_params,
                "d_params": d_params,
                "gflop_per_image": flops / b / 1e9,
                "step_s": step_s,
                "images_per_s": runs * b / step_s,
                "gflops": gflops,
                "peak_share": gflops / 1e3 / peak if cuda else float("nan"),
            }
        )
        if cuda:
            torch.cuda.empty_cache()
    df = pd.DataFrame(rows).set_index("model")
    df.attrs.update(
        {
            "device": name,
            "batch_size": b,
            "image_size": s,
            "n_genes": N_GENES,
            "threads": torch.get_num_threads(),
            "runs": runs,
            "profile": profile.name,
            "matmul_fp32_gflops": max(matmul_before, matmul_gflops(device)),
            "matmul_bf16_gflops": matmul_gflops(device, dtype=torch.bfloat16) if cuda else np.nan,
            "bf16_peak_tflops": peak,
        }
    )
    return df


def format_bench(df: pd.DataFrame) -> str:
    """The bench table as text, with its context lines (device, sizes, matmul reference)."""
    a = df.attrs
    table = pd.DataFrame(
        {
            "G params (M)": df["g_params"] / 1e6,
            "D params (M)": df["d_params"] / 1e6,
            "GFLOP/image": df["gflop_per_image"],
            "step (s)": df["step_s"],
            "images/s": df["images_per_s"],
            "GFLOP/s": df["gflops"],
        }
    )
    if df["peak_share"].notna().any():
        table["% bf16 peak"] = 100 * df["peak_share"]
    elif a.get("device") == "cpu":
        table["% fp32 matmul"] = 100 * df["gflops"] / a.get("matmul_fp32_gflops", np.nan)
    lines = [
        f"radiolib bench: profile {a.get('profile')}, device {a.get('device')}, "
        f"{a.get('threads')} threads, batch {a.get('batch_size')}, "
        f"{a.get('image_size')} px, {a.get('n_genes')} genes"
        + (
            f"; {a['runs']} runs at once ({a['threads'] // a['runs'] or 1} threads each, as "
            "training runs them): step time per run, images/s and GFLOP/s of all runs together"
            if a.get("runs", 1) > 1
            else ""
        ),
        table.to_string(float_format=lambda v: f"{v:.3g}"),
        f"reference: fp32 matmul 2048^3 on this device: {a.get('matmul_fp32_gflops', np.nan):.0f}"
        " GFLOP/s",
    ]
    if np.isfinite(a.get("matmul_bf16_gflops", np.nan)):
        lines.append(
            f"reference: bf16 matmul 2048^3: {a['matmul_bf16_gflops'] / 1e3:.0f} TFLOP/s"
            f" (dense bf16 peak of this card: {a['bf16_peak_tflops']:.0f} TFLOP/s)"
        )
    lines.append(
        "FLOPs: matrix products and convolutions of one D + G step (forward and "
        "backward), per training image"
    )
    return "\n".join(lines)
