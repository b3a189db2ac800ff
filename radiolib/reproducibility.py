"""What makes a training run repeatable: seeding, the random state a checkpoint carries, and
deterministic kernels on the CPU.

A run seeds Python, NumPy and torch from its seed (:func:`seed_everything`); its checkpoint
holds all three random states (:func:`rng_state`, as tensors and plain values, so that
``torch.load(weights_only=True)`` reads them) and a resumed run restores them
(:func:`set_rng_state`), so it draws what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NotRequired, TypedDict

import numpy as np
import torch


class RngState(TypedDict):
    """The random states of a checkpoint, as tensors and plain values."""

    python_version: int
    python: torch.Tensor
    python_gauss: float  # NaN for none
    numpy_keys: torch.Tensor
    numpy_pos: int
    numpy_has_gauss: int
    numpy_gauss: float
    torch: torch.Tensor
    cuda: NotRequired[list[torch.Tensor]]  # once CUDA was used


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of a DataLoader: seed NumPy and Python in each loader worker.

    Items are pure functions of (seed, epoch, index); seeding keeps any other draw repeatable.
    """
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def rng_state() -> RngState:
    """Python's, NumPy's, torch's (and CUDA's, once used) random states."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: RngState = {
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


def set_rng_state(state: RngState) -> None:
    """Restore the random states :func:`rng_state` returned."""
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


@contextmanager
def deterministic_on_cpu(device: str) -> Iterator[None]:
    """Deterministic torch algorithms inside the block when ``device`` is the CPU (warning only
    where an operation has none), and the flags as they were afterwards. On a GPU the flags are
    left as they are."""
    if device.startswith("cuda"):
        yield
        return
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
