"""The convergence study: how the comparison between methods moves with training length.

Run on demand (``radiolib convergence``), not by ``make book``: for every model and training
seed, one run is trained to the first step count of the grid, evaluated, continued to the next
step count (the trainer resumes from its checkpoint), evaluated again, and so on. Each
evaluation is the study's own (:func:`radiolib.evaluation.evaluate_synthesis` on the same held-out
pairs, and the gene code's agreement with the hidden subtypes), so the curves show the numbers
the book reports, against steps. The profile's ``train.steps`` is chosen where they flatten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from radiolib.config import Profile

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.data.phantom import PhantomTruth
    from radiolib.evaluation import SynthesisEvaluation

# the numbers followed against steps: (section, measure) of the synthesis evaluation
TRACKED = (
    ("table1", "mse"),
    ("table1", "ssim"),
    ("table1", "psnr"),
    ("background_kept", "mse"),
    ("background_kept", "ssim"),
    ("realism", "kid"),
    ("gene_control", "diameter_mm"),
    ("gene_control", "attenuation_hu"),
    ("gene_control_train", "diameter_mm"),
    ("gene_control_train", "attenuation_hu"),
    ("joint_head", "auc_train"),
    ("joint_head", "auc_test"),
    ("mask", "area_px"),
)


def _check_grid(steps: Sequence[int]) -> list[int]:
    grid = [int(s) for s in steps]
    if not grid or any(s < 1 for s in grid) or grid != sorted(set(grid)):
        raise ValueError(f"steps must be increasing positive integers, got {list(steps)}")
    return grid


def _tracked(ev: SynthesisEvaluation, model: str, seed: int) -> dict[tuple[str, str], float]:
    """One run's numbers of an evaluation, keyed (section, measure): its own seed's, not the
    pooled ones; the joint head's AUC as ``auc_train`` / ``auc_test``; the finest weight map."""
    from radiolib.metrics import PSNR_CAP_DB

    res = ev.results
    mine = res[(res.method == model) & (res.seed == str(seed))]
    pooled = ev.per_pair[(ev.per_pair.method == model) & (ev.per_pair.seed == seed)]
    values = {("table1", m): pooled[m].mean() for m in ("mse", "ssim")} | {
        ("table1", "psnr"): np.minimum(pooled["psnr"], PSNR_CAP_DB).mean(),
        ("background_kept", "mse"): pooled["bg_mse"].mean(),
        ("background_kept", "ssim"): pooled["bg_ssim"].mean(),
        ("mask", "area_px"): pooled["mask_px"].mean(),
    }
    for _, r in mine[
        mine.section.isin(["realism", "gene_control", "gene_control_train"])
    ].iterrows():
        values[(r.section, r.measure)] = r.value
    for _, r in mine[mine.section == "joint_head"].iterrows():
        values[(r.section, f"{r.measure}_{r.level}")] = r.value
    finest = [c for c in pooled.columns if c.startswith("w") and c.endswith("_inside")]
    if finest:
        level = max(finest, key=lambda c: int(c[1:].split("_")[0])).split("_")[0]
        values[("weight_map", "inside_mean")] = pooled[f"{level}_inside"].mean()
        values[("weight_map", "outside_mean")] = pooled[f"{level}_outside"].mean()
    return values


def convergence_study(
    cohort: CuratedCohort,
    cfg: Profile,
    run_dir: Callable[[str, int], Path | str],
    steps: Sequence[int],
    seeds: Sequence[int],
    models: Sequence[str] = ("proposed", "baseline"),
    truth: PhantomTruth | None = None,
    device: str = "cpu",
    progress: bool = True,
    on_step: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Train ``models`` x ``seeds`` to each step count of ``steps`` and evaluate at each.

    ``run_dir(model, seed)`` gives each run's folder (reused and continued across the grid);
    ``cfg`` is the Profile (its ``train.steps`` is replaced by each grid value). Returns a tidy
    frame: ``model``, ``seed``, ``step``, ``section``, ``measure``, ``value``, with the
    :data:`TRACKED` synthesis measures per seed, the weight map's finest-level inside and
    outside means, and ``map`` / ``ari`` (phi(g) clusters against the hidden subtypes) when the
    phantom's ``truth`` is given. ``on_step`` receives the frame so far after each grid point
    (to save it: a study stopped part way keeps the step counts it finished).
    """
    from radiolib.config import resolve_device
    from radiolib.evaluation import evaluate_synthesis
    from radiolib.radiogenomics import codes, ground_truth
    from radiolib.runs import load_generator
    from radiolib.train import build_for_cohort, train

    device = resolve_device(device)
    grid = _check_grid(steps)
    if not seeds:
        raise ValueError("the convergence study needs at least one seed")
    rows = []
    for step in grid:
        at = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=step))
        gans = {}
        for model in models:
            for seed in seeds:
                gan = build_for_cohort(model, cohort, at, seed)
                out = Path(run_dir(model, seed))
                train(gan, cohort, at, out, seed, device, progress=progress)
                gans[(model, seed)] = load_generator(out, device)  # as the study reads it: EMA
        ev = evaluate_synthesis(cohort, at, gans, truth=truth, device=device)
        for model, seed in gans:
            values = _tracked(ev, model, seed)
            if truth is not None:
                subtypes = ground_truth.truth_table(truth, cohort.patients)["subtype"]
                code = codes.gene_codes(gans[(model, seed)], cohort.genes)
                labels = codes.cluster(code, cfg.evaluation.clusters, seed)
                agreement = codes.cluster_agreement(labels, subtypes.to_numpy())
                values[("map", "ari")] = agreement["ari"]
            rows += [
                {
                    "model": model,
                    "seed": seed,
                    "step": step,
                    "section": section,
                    "measure": measure,
                    "value": float(value),
                }
                for (section, measure), value in values.items()
                if (section, measure) in TRACKED or section in ("weight_map", "map")
            ]
        if on_step is not None:
            on_step(pd.DataFrame(rows))
    return pd.DataFrame(rows)
