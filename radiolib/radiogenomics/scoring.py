"""The radiogenomic map's numbers for a study run: every representation, every seed, every signal.

:func:`score_representations` gives every number of the map (clusters, trait probes, gene
attribution against the phantom's truth) for the raw genes and each trained model's code on one
curated cohort; :func:`map_scores` repeats it for every training seed as one tidy frame.
:func:`signal_sweep` scores the GANs trained on phantoms whose genes drive the image more or less
strongly (:func:`sweep_plan` says where each cohort and run lives). It reads the runs notebook 02
trained (:func:`radiolib.sweeps.train_sweep`) and never trains: a missing cohort or run raises
:class:`radiolib.errors.MissingRunError` naming the notebook to run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from radiolib.data.curated import load_curated
from radiolib.data.phantom import TRAITS, load_truth
from radiolib.errors import MissingRunError
from radiolib.radiogenomics.codes import (
    RAW,
    cluster,
    cluster_agreement,
    gene_attribution,
    probe_table,
    representations,
    silhouette,
    trait_attribution,
)
from radiolib.radiogenomics.ground_truth import attribution_scores, linked_genes, truth_table
from radiolib.runs import finished_runs, load_generator

if TYPE_CHECKING:
    from torch import nn

    from radiolib.config import Profile
    from radiolib.data.curated import CuratedCohort
    from radiolib.data.phantom import PhantomTruth
    from radiolib.study import Workspace

SWEEP_MODELS = ("baseline", "proposed")
SWEEP_TRAINED_BY = "notebooks/02_training.ipynb (its signal sweep)"
ATTRIBUTION_MEASURES = (
    "attribution_auroc",
    "attribution_precision_at_k",
    "trait_attribution_auroc",
)


# --------------------------------------------------------------------------- one cohort


def _auroc_or_nan(attribution: np.ndarray, mask: np.ndarray) -> dict[str, float | int]:
    if 0 < mask.sum() < len(mask):
        return attribution_scores(attribution, mask)
    return {"precision_at_k": float("nan"), "auroc": float("nan"), "k": int(mask.sum())}


def _attribution_row(
    gan: nn.Module, cohort: CuratedCohort, truth: PhantomTruth, traits: pd.DataFrame
) -> dict[str, float]:
    """The attribution measures of one gene code (see :func:`score_representations`)."""
    any_link = linked_genes(truth, cohort.gene_names)
    overall = _auroc_or_nan(gene_attribution(gan, cohort.genes, target="variance"), any_link)
    per_trait = trait_attribution(gan, cohort.genes, traits)
    aucs = [
        _auroc_or_nan(per_trait[t].to_numpy(), linked_genes(truth, cohort.gene_names, (t,)))[
            "auroc"
        ]
        for t in TRAITS
    ]
    return {
        "attribution_auroc": overall["auroc"],
        "attribution_precision_at_k": overall["precision_at_k"],
        "trait_attribution_auroc": (
            float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        ),
    }


def score_representations(
    cohort: CuratedCohort,
    gans: Mapping[str, nn.Module],
    truth: PhantomTruth | None,
    cfg: Profile,
    seed: int = 0,
) -> pd.DataFrame:
    """The radiogenomic map's numbers, one row per representation (raw genes, then each model's
    phi(g); index ``representation``).

    Always: ``silhouette`` of the representation's own clusters (``cfg.evaluation.clusters``,
    Ward). With the phantom's ``truth`` (None for real data) also: ``ari`` and ``nmi`` of those
    clusters against the hidden subtypes, ``silhouette_subtypes`` (how far apart the true
    subtypes lie), cross-validated linear probe R^2 of every trait (``r2_<trait>``) and their
    mean ``mean_r2``, and for the gene codes the attribution scores: ``attribution_auroc`` and
    ``attribution_precision_at_k`` of :func:`radiolib.radiogenomics.codes.gene_attribution`
    (target ``"variance"``) against the genes linked to the subtype or a trait, and
    ``trait_attribution_auroc``, the mean over traits of the AUROC of
    :func:`radiolib.radiogenomics.codes.trait_attribution` against that trait's own genes (NaN
    for the raw genes, which have no attribution).
    """
    reps = representations(cohort, gans)
    k = cfg.evaluation.clusters
    labels = {name: cluster(x, k, seed) for name, x in reps.items()}
    rows: dict[str, dict[str, float]] = {}
    for name, x in reps.items():
        rows[name] = {"silhouette": silhouette(x, labels[name])}
    if truth is None:
        return _score_frame(rows)
    table = truth_table(truth, cohort.patients)
    subtypes = table["subtype"].to_numpy()
    traits = table[list(TRAITS)].astype(float)
    probes = probe_table(reps, traits, seed=seed)
    for name, x in reps.items():
        row = rows[name]
        row.update(cluster_agreement(labels[name], subtypes))
        row["silhouette_subtypes"] = silhouette(x, subtypes)
        row.update({f"r2_{t}": float(probes.loc[name, t]) for t in TRAITS})
        row["mean_r2"] = float(np.nanmean(probes.loc[name].to_numpy(float)))
        row.update(dict.fromkeys(ATTRIBUTION_MEASURES, float("nan")))
        if name != RAW:
            row.update(_attribution_row(gans[name], cohort, truth, traits))
    return _score_frame(rows)


def map_scores(
    cohort: CuratedCohort,
    gans_by_seed: Mapping[int, Mapping[str, nn.Module]],
    truth: PhantomTruth | None,
    cfg: Profile,
) -> pd.DataFrame:
    """:func:`score_representations` for every training seed, as one tidy frame.

    ``gans_by_seed`` maps a training seed to ``{model: trained GAN}``; the clustering uses the
    same seed. Columns ``representation``, ``seed``, ``measure``, ``value``; the raw genes'
    rows repeat per seed (only their clustering seed changes), so the spread over seeds of
    every representation reads off one frame.
    """
    if not gans_by_seed:
        raise ValueError("map_scores needs the models of at least one training seed")
    frames = []
    for seed, gans in gans_by_seed.items():
        scores = score_representations(cohort, gans, truth, cfg, int(seed))
        long = scores.reset_index().melt(
            id_vars="representation", var_name="measure", value_name="value"
        )
        frames.append(long.assign(seed=int(seed)))
    return pd.concat(frames, ignore_index=True)[["representation", "seed", "measure", "value"]]


def _score_frame(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "representation"
    return frame


# --------------------------------------------------------------------------- the signal sweep


def sweep_plan(workspace: Workspace, signals: Sequence[float], steps: int) -> pd.DataFrame:
    """Where each cohort of the signal sweep comes from; one row per signal.

    Columns: ``signal``; ``main_cohort`` (the signal is the profile's: the study's own phantom
    and curated cohort are used); ``phantom`` (folder of the phantom at that signal);
    ``curated`` (folder of the curated cohort); ``tag`` (the :meth:`Workspace.model_dir` tag of
    its models: ``""``, the study's own models, when the cohort is the main one and ``steps``
    equals ``train.steps``, else ``signal<s>-steps<n>``, so that runs with other step counts
    never share a folder).
    """
    cfg = workspace.profile
    if not workspace.uses_phantom:
        raise ValueError("the signal sweep needs the synthetic cohort (data='phantom')")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    values = [float(s) for s in signals]
    if not values or any(not np.isfinite(s) or s < 0 for s in values):
        raise ValueError(f"signals must be finite numbers >= 0 (got {list(signals)})")
    if len(set(values)) != len(values):
        raise ValueError(f"signals must differ (got {values})")
    rows = []
    for s in values:
        main = s == float(cfg.phantom.signal)
        own_models = main and int(steps) == cfg.train.steps
        curated = workspace.curated if main else workspace.run_dir / f"curated-signal{s:g}"
        rows.append(
            {
                "signal": s,
                "main_cohort": main,
                "phantom": workspace.phantom_dir(None if main else s),
                "curated": curated,
                "tag": "" if own_models else f"signal{s:g}-steps{int(steps)}",
            }
        )
    return pd.DataFrame(rows)


def with_steps(cfg: Profile, steps: int) -> Profile:
    """``cfg`` with ``train.steps`` set to ``steps`` (how the sweeps' runs are trained)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=int(steps)))


def _sweep_cohort(
    phantom: Path, curated: Path, signal: float
) -> tuple[CuratedCohort, PhantomTruth]:
    """The curated cohort and the phantom's truth of one signal; MissingRunError if absent."""
    if not (Path(curated) / "manifest.json").is_file() or not Path(phantom).is_dir():
        raise MissingRunError(
            f"the signal sweep's cohort at signal {signal:g} is not written and curated "
            f"({phantom}, {curated}). Run {SWEEP_TRAINED_BY} first (it writes, curates and "
            "trains the sweep's cohorts with the same profile and overrides)"
        )
    return load_curated(curated), load_truth(phantom)


def signal_sweep(
    workspace: Workspace,
    signals: Sequence[float],
    steps: int,
    models: Sequence[str] = SWEEP_MODELS,
    seed: int | None = None,
) -> pd.DataFrame:
    """Score the map at several phantom signal strengths (how strongly genes drive the image).

    For each signal (see :func:`sweep_plan`): the phantom at that signal, its cohort curated
    with the profile's curation and ``models`` trained for ``steps`` steps with seed ``seed``
    (default: the first of ``train.seeds``), all made by :func:`radiolib.sweeps.train_sweep`
    (notebook 02), are read and scored with :func:`score_representations` against the
    phantom's truth. Never trains: a missing cohort or run raises
    :class:`radiolib.errors.MissingRunError` naming notebook 02. Returns a tidy frame: columns
    ``signal``, ``representation``, ``metric``, ``value``, ``steps``.
    """
    cfg = workspace.profile
    seed = cfg.train.seeds[0] if seed is None else int(seed)
    plan = sweep_plan(workspace, signals, steps)
    cfg_s = with_steps(cfg, steps)
    frames = []
    for run in plan.itertuples(index=False):
        cohort, truth = _sweep_cohort(run.phantom, run.curated, run.signal)

        def model_dir(model: str, s: int, tag: str = run.tag) -> Path:
            return workspace.model_dir(model, s, tag=tag)

        trained = finished_runs(
            cohort, cfg_s, model_dir, models, seeds=[seed], trained_by=SWEEP_TRAINED_BY
        )
        gans = {r.model: load_generator(r.out) for r in trained.itertuples()}
        scores = score_representations(cohort, gans, truth, cfg, seed)
        long = scores.reset_index().melt(
            id_vars="representation", var_name="metric", value_name="value"
        )
        long.insert(0, "signal", run.signal)
        long["steps"] = int(steps)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)
