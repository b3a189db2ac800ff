"""Training on phantom variants: the signal sweep's runs and the map comparison's.

Besides the study's main runs, notebook 02 trains the signal sweep's (:func:`train_sweep`): for
each signal of ``evaluation.sweep_signals`` the phantom is written at that signal, curated with
the profile's curation, and the baseline and proposed GANs are trained for
``evaluation.map_steps`` steps, where :func:`radiolib.radiogenomics.scoring.sweep_plan` says.
Notebook 04 reads and scores them (:func:`radiolib.radiogenomics.scoring.signal_sweep`) and never
trains. :func:`compare_maps` (``radiolib compare-maps``, run on demand) writes, curates and
trains over the phantom settings of :func:`radiolib.maps.map_settings` and scores every map
with :func:`radiolib.maps.compare_cohort`. Finished phantoms, cohorts and runs are reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from radiolib.contrastive import fit_or_reuse
from radiolib.data.curate import curate_cohort
from radiolib.data.phantom import load_truth
from radiolib.maps import (
    CONTRASTIVE,
    MAP_COMPARISON,
    SETTING_COLUMNS,
    GanLearner,
    compare_cohort,
    comparison_plan,
    finished_gans,
    map_settings,
    write_tidy,
)
from radiolib.radiogenomics import scoring
from radiolib.train import train_models

if TYPE_CHECKING:
    from torch import nn

    from radiolib.config import Profile
    from radiolib.data.curated import CuratedCohort
    from radiolib.study import Workspace


def train_sweep(
    workspace: Workspace,
    signals: Sequence[float],
    steps: int,
    models: Sequence[str] = scoring.SWEEP_MODELS,
    seed: int | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Write, curate and train what the signal sweep scores, one signal at a time.

    For each signal (:func:`radiolib.radiogenomics.scoring.sweep_plan`): write (or reuse) the
    phantom at that signal, curate it with the profile's curation, and train ``models`` for
    ``steps`` steps with seed ``seed`` (default: the first of ``train.seeds``); the profile's
    own signal at ``train.steps`` steps reuses the study's main runs. Prints what it trains.
    Returns one row per run as :func:`radiolib.train.train_models` gives it, ``signal`` first.
    """
    cfg = workspace.profile
    seed = cfg.train.seeds[0] if seed is None else int(seed)
    plan = scoring.sweep_plan(workspace, signals, steps)
    cfg_s = scoring.with_steps(cfg, steps)
    frames = []
    for run in plan.itertuples(index=False):

        def model_dir(model: str, s: int, tag: str = run.tag) -> Path:
            return workspace.model_dir(model, s, tag=tag)

        print(
            f"signal sweep, signal {run.signal:g}: {', '.join(models)} (seed {seed}, "
            f"{int(steps)} steps) in {model_dir(models[0], seed).parent}"
        )
        raw = workspace.phantom(None if run.main_cohort else run.signal, progress=bool(progress))
        cohort = curate_cohort(raw, run.curated, cfg.curation, progress=bool(progress))
        trained = train_models(
            cohort,
            cfg_s,
            model_dir,
            models,
            seeds=[seed],
            device=workspace.device,
            progress=progress,
        )
        trained.insert(0, "signal", run.signal)
        frames.append(trained)
    return pd.concat(frames, ignore_index=True)


def _gan_trainer(
    workspace: Workspace, tag: str, models: Sequence[str], steps: int, progress: bool
) -> GanLearner:
    """A ``gans`` argument of :func:`radiolib.maps.compare_cohort` that trains (or reuses)
    ``models`` for ``steps`` steps into ``workspace.model_dir(model, seed, tag)``, then reads
    them with :func:`radiolib.maps.finished_gans`; ``cpu_seconds`` is the process's CPU time
    when trained in this call, NaN when reused."""
    read = finished_gans(workspace, tag, models, steps)

    def learn(cohort: CuratedCohort, cfg: Profile, seed: int) -> tuple[dict[str, nn.Module], dict]:
        cfg_s = scoring.with_steps(cfg, steps)
        cpu = {}
        for model in models:
            cpu0 = time.process_time()
            row = train_models(
                cohort,
                cfg_s,
                lambda m, s: workspace.model_dir(m, s, tag=tag),
                [model],
                seeds=[seed],
                device=workspace.device,
                progress=progress,
            ).iloc[0]
            cpu[model] = np.nan if bool(row["skipped"]) else time.process_time() - cpu0
        gans, costs = read(cohort, cfg, seed)
        for model, seconds in cpu.items():
            costs[model]["cpu_seconds"] = seconds
        return gans, costs

    return learn


def compare_maps(
    workspace: Workspace,
    settings: pd.DataFrame | None = None,
    seeds: Sequence[int] | None = None,
    gan_models: Sequence[str] = (),
    steps: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The maps compared on several phantoms (default :func:`radiolib.maps.map_settings`) with
    several training seeds (default ``evaluation.map_seeds``), written as one tidy CSV.

    For each setting (:func:`radiolib.maps.comparison_plan`) the phantom is written and curated
    with the profile's curation (both reused when unchanged), and
    :func:`radiolib.maps.compare_cohort` scores the contrastive and conventional maps and, with
    ``gan_models``, those GANs trained for ``steps`` (default ``evaluation.map_steps``; finished
    runs reused). Returns and writes (atomically, to ``out``, default
    ``<results>/map_comparison.csv``) the frame with columns
    :data:`radiolib.maps.SETTING_COLUMNS` then :data:`radiolib.maps.TIDY_COLUMNS`.
    """
    cfg = workspace.profile
    settings = map_settings(cfg) if settings is None else settings
    seeds = list(cfg.evaluation.map_seeds if seeds is None else seeds)
    steps = cfg.evaluation.map_steps if steps is None else int(steps)
    plan = comparison_plan(workspace, settings, steps)
    path = Path(out) if out is not None else workspace.results / MAP_COMPARISON
    frames = []
    for run in plan.itertuples(index=False):
        raw = workspace.phantom(progress=progress, **run.changed)
        cohort = curate_cohort(raw, run.curated, cfg.curation, progress=progress)
        learner = (
            _gan_trainer(workspace, run.tag, gan_models, steps, progress) if gan_models else None
        )
        part = compare_cohort(cohort, load_truth(raw), cfg, seeds, learner)
        for k, column in enumerate(SETTING_COLUMNS):
            part.insert(k, column, getattr(run, column))
        frames.append(part)
    frame = pd.concat(frames, ignore_index=True)
    write_tidy(frame, path)
    return frame


def fit_contrastive_maps(
    workspace: Workspace, cohort: CuratedCohort, seeds: Sequence[int], tag: str = ""
) -> pd.DataFrame:
    """Fit (or reuse) the contrastive map of each seed into ``workspace.model_dir("contrastive",
    seed, tag)``, where :func:`radiolib.maps.saved_contrastive` reads it. One row per seed:
    seed, cpu_seconds, wall_seconds (of the first fitting) and the final loss."""
    rows = []
    for seed in seeds:
        out = workspace.model_dir(CONTRASTIVE, int(seed), tag=tag)
        fit = fit_or_reuse(cohort, workspace.profile, out, int(seed))
        rows.append(
            {
                "seed": int(seed),
                "cpu_seconds": round(fit.cpu_seconds, 1),
                "wall_seconds": round(fit.wall_seconds, 1),
                "final_loss": float(fit.losses[-1]),
            }
        )
    return pd.DataFrame(rows)
