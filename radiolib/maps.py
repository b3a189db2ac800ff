"""Does the radiogenomic map need synthesis? Every map scored by the same code.

Five representations of each curated patient's expression are compared on the same patients:

1. ``raw genes``: the expression vector itself (nothing learnt);
2. the GANs' gene codes phi(g) (``baseline``, ``proposed``): learnt through synthesis;
3. ``contrastive``: the gene encoder of a CLIP-style image-gene map, learnt without a
   generator (:mod:`radiolib.contrastive`);
4. ``conventional``: the metagenes the three-step map links to image features on the training
   split, standardised
   (:func:`radiolib.radiogenomics.conventional.conventional_representation`).

:func:`score_maps` scores any set of them with :func:`radiolib.radiogenomics.scoring.map_scores`
(Ward clusters against the hidden subtypes: ``ari``, ``nmi``; linear probes of the six traits:
``r2_<trait>``, ``mean_r2``; gene attribution against the truly linked genes:
``attribution_auroc`` and friends, for every representation differentiable in the genes, i.e.
all but the raw genes) and adds the representation's width (``dimensions``) and what learning
it cost (``cpu_seconds``, ``wall_seconds``, ``flops``), in a tidy frame. Every map is learnt
from the training split only (the GANs, the contrastive map, the conventional map's modules and
choice of metagenes) and every representation is scored on all curated patients.
:func:`compare_cohort` repeats this over training seeds on one cohort, with GANs read from
finished runs (:func:`finished_gans`: never trains). The comparison over phantom settings
(:func:`map_settings`, :func:`comparison_plan`) trains GANs per setting and runs on demand:
:func:`radiolib.sweeps.compare_maps` (``radiolib compare-maps``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from torch import nn

from radiolib.bench import training_step_flops
from radiolib.config import Profile
from radiolib.contrastive import ContrastiveFit, fit_contrastive, load_fit
from radiolib.io import atomic_write
from radiolib.radiogenomics import codes, conventional, ground_truth, scoring
from radiolib.runs import finished_runs, load_generator

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.data.phantom import PhantomTruth
    from radiolib.study import Workspace

TIDY_COLUMNS = ("representation", "seed", "measure", "value")
SETTING_COLUMNS = ("signal", "phantom_seed", "subtypes")
COST_MEASURES = ("cpu_seconds", "wall_seconds", "flops")
CONTRASTIVE = "contrastive"
CONVENTIONAL = "conventional"
MAP_COMPARISON = "map_comparison.csv"  # the comparison's default file in the results folder
FALLBACK = "no_link_fallback"  # conventional only: 1 when no link survived (all metagenes used)

# the table a reader wants first: subtypes, traits, genes, cost
SUMMARY_MEASURES = ("ari", "nmi", "mean_r2", "attribution_auroc", "cpu_seconds", "flops")

Costs = Mapping[str, Mapping[str, float]]


def score_maps(
    cohort: CuratedCohort,
    maps: Mapping[str, nn.Module],
    truth: PhantomTruth,
    cfg: Profile,
    seed: int = 0,
    costs: Costs | None = None,
) -> pd.DataFrame:
    """Every number of the map for the raw genes and each of ``maps`` (name -> an object with
    ``gene_code(genes (B, G)) -> (B, D)``: a GAN, a contrastive map, a metagene code).

    Returns a tidy frame, columns :data:`TIDY_COLUMNS` (:func:`radiolib.radiogenomics.scoring.
    map_scores` of one seed, ``seed`` the scoring seed): the measures of
    :func:`radiolib.radiogenomics.scoring.score_representations` (clusters:
    ``cfg.evaluation.clusters``;
    NaN attribution for the raw genes), then ``dimensions`` and the :data:`COST_MEASURES` plus
    any other measure named in ``costs`` (``{representation: {measure: value}}``); a cost not
    given is NaN, except the raw genes', which cost nothing to learn (0). Rows are grouped by
    representation, raw genes first, then ``maps`` in order.
    """
    if truth is None:
        raise ValueError("scoring the maps needs the phantom's truth (hidden subtypes, traits)")
    costs = dict(costs or {})
    unknown = [n for n in costs if n != codes.RAW and n not in maps]
    if unknown:
        raise ValueError(f"costs name representations {unknown} that are not among the maps")
    scored = scoring.map_scores(cohort, {int(seed): maps}, truth, cfg)
    dims = {name: x.shape[1] for name, x in codes.representations(cohort, maps).items()}
    measures = list(COST_MEASURES)
    for given in costs.values():
        measures += [m for m in given if m not in measures]
    rows = []
    for name, width in dims.items():
        given = dict.fromkeys(COST_MEASURES, 0.0 if name == codes.RAW else np.nan)
        given.update(costs.get(name, {}))
        rows.append((name, int(seed), "dimensions", float(width)))
        rows += [(name, int(seed), m, float(given.get(m, np.nan))) for m in measures]
    frame = pd.concat([scored, pd.DataFrame(rows, columns=list(TIDY_COLUMNS))], ignore_index=True)
    order = {name: k for k, name in enumerate(dims)}
    frame = frame.sort_values("representation", key=lambda c: c.map(order), kind="stable")
    return frame.reset_index(drop=True)


def n_subtypes(truth: PhantomTruth, patients: Sequence[str]) -> int:
    """Number of hidden subtypes among ``patients`` (the clusters the maps are asked for)."""
    return int(ground_truth.truth_table(truth, patients)["subtype"].nunique())


GanLearner = Callable[["CuratedCohort", Profile, int], tuple[Mapping[str, nn.Module], Costs]]
ContrastiveSource = Callable[["CuratedCohort", Profile, int], ContrastiveFit]


def saved_contrastive(workspace: Workspace, tag: str = "") -> ContrastiveSource:
    """A ``contrastive`` argument of :func:`compare_cohort`: the fit of each seed saved in
    ``workspace.model_dir("contrastive", seed, tag)`` (:func:`radiolib.sweeps.fit_contrastive_maps`,
    notebook 02). Never fits: a missing fit raises :class:`radiolib.errors.MissingRunError`."""

    def read(cohort: CuratedCohort, cfg: Profile, seed: int) -> ContrastiveFit:
        return load_fit(workspace.model_dir(CONTRASTIVE, seed, tag=tag), cohort, cfg, seed)

    return read


def compare_cohort(
    cohort: CuratedCohort,
    truth: PhantomTruth,
    cfg: Profile,
    seeds: Iterable[int],
    gans: GanLearner | None = None,
    contrastive: ContrastiveSource = fit_contrastive,
) -> pd.DataFrame:
    """The contrastive and conventional maps (and ``gans``) scored on one curated cohort.

    The conventional map is deterministic: it is found once, and only its scoring changes with
    the seed. For each seed ``contrastive(cohort, cfg, seed)`` gives the contrastive map of that
    seed (by default fitted here; :func:`saved_contrastive` reads the fits notebook 02 saved),
    ``gans(cohort, cfg, seed)`` (optional) returns trained GANs and their costs, and all are
    scored by
    :func:`score_maps` with as many clusters as hidden subtypes. Returns the tidy frame of every
    seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    k = n_subtypes(truth, cohort.patients)
    if k < 2:
        raise ValueError(f"the cohort's patients hold {k} hidden subtype; clusters need >= 2")
    cfg_k = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, clusters=k))
    conv = conventional.conventional_representation(cohort, cfg)
    conv_costs = {
        "cpu_seconds": conv.cpu_seconds,
        "wall_seconds": conv.wall_seconds,
        "flops": float(conv.flops),
        FALLBACK: float(conv.fallback),
    }
    frames = []
    for seed in seeds:
        fit = contrastive(cohort, cfg, seed)
        maps: dict[str, nn.Module] = {}
        costs: dict[str, Mapping[str, float]] = {}
        if gans is not None:
            learnt, gan_costs = gans(cohort, cfg, seed)
            maps.update(learnt)
            costs.update(gan_costs)
        maps[CONTRASTIVE] = fit.model
        maps[CONVENTIONAL] = conv.code
        costs[CONTRASTIVE] = {
            "cpu_seconds": fit.cpu_seconds,
            "wall_seconds": fit.wall_seconds,
            "flops": float(fit.flops),
        }
        costs[CONVENTIONAL] = conv_costs
        frames.append(score_maps(cohort, maps, truth, cfg_k, seed, costs))
    return pd.concat(frames, ignore_index=True)


def summary_table(tidy: pd.DataFrame, measures: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``measures`` per representation (and setting,
    when the frame has the :data:`SETTING_COLUMNS`): columns ``(measure, "mean" | "std")``."""
    missing = [c for c in TIDY_COLUMNS if c not in tidy.columns]
    if missing:
        raise ValueError(f"tidy frame lacks columns {missing}")
    absent = [m for m in measures if m not in set(tidy["measure"])]
    if absent:
        raise ValueError(f"measures {absent} are not in the frame")
    keys = [c for c in SETTING_COLUMNS if c in tidy.columns] + ["representation"]
    sub = tidy[tidy["measure"].isin(list(measures))]
    table = sub.pivot_table(
        index=keys,
        columns="measure",
        values="value",
        aggfunc=["mean", "std"],
        sort=False,
        dropna=False,
    )
    if len(keys) > 1:  # dropna=False spans every combination of the keys: keep those observed
        table = table.reindex(pd.MultiIndex.from_frame(sub[keys].drop_duplicates()))
    table = table.swaplevel(0, 1, axis=1)
    return table[[(m, s) for m in measures for s in ("mean", "std")]]


# --------------------------------------------------------------------------- phantom settings


def map_settings(cfg: Profile) -> pd.DataFrame:
    """The phantoms the maps are compared on, one parameter changed at a time around the
    profile's (``phantom.signal``, ``phantom.seed``, ``phantom.subtypes``): every signal of
    ``evaluation.map_signals``, every seed of ``evaluation.map_phantom_seeds`` and every subtype
    count of ``evaluation.map_subtypes``. Columns :data:`SETTING_COLUMNS`; the profile's own
    phantom first, no row twice."""
    p, e = cfg.phantom, cfg.evaluation
    rows = [(float(p.signal), int(p.seed), int(p.subtypes))]
    rows += [(float(s), int(p.seed), int(p.subtypes)) for s in e.map_signals]
    rows += [(float(p.signal), int(s), int(p.subtypes)) for s in e.map_phantom_seeds]
    rows += [(float(p.signal), int(p.seed), int(k)) for k in e.map_subtypes]
    return pd.DataFrame(list(dict.fromkeys(rows)), columns=list(SETTING_COLUMNS))


def comparison_plan(workspace: Workspace, settings: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Where each setting's cohort and GAN runs live; one row per setting.

    Columns: the :data:`SETTING_COLUMNS`; ``changed`` (``{"signal": s, ...}``: the parameters
    that differ from the profile's, as given to :meth:`radiolib.study.Workspace.phantom`; empty
    for the study's own phantom); ``phantom`` (its folder, :meth:`radiolib.study.Workspace.
    phantom_dir`); ``curated`` (the study's own curated folder, else
    ``curated-<name>`` with the phantom's variant name, e.g. ``curated-signal0.25``, which the
    signal sweep uses too); ``tag`` (model folder tag: ``""`` for the study's own models when
    ``steps`` equals ``train.steps``, else ``<name>-steps<n>``, the profile's signal naming
    the main cohort).
    """
    cfg = workspace.profile
    if not workspace.uses_phantom:
        raise ValueError("comparing maps needs the synthetic cohort (data='phantom')")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    missing = [c for c in SETTING_COLUMNS if c not in settings.columns]
    if missing or settings.empty:
        raise ValueError(f"settings need rows and the columns {list(SETTING_COLUMNS)}")
    base = {
        "signal": cfg.phantom.signal,
        "seed": cfg.phantom.seed,
        "subtypes": cfg.phantom.subtypes,
    }
    rows = []
    for r in settings.itertuples(index=False):
        value = {
            "signal": float(r.signal),
            "seed": int(r.phantom_seed),
            "subtypes": int(r.subtypes),
        }
        if not np.isfinite(value["signal"]) or value["signal"] < 0 or value["subtypes"] < 2:
            raise ValueError(f"setting {value}: signal must be >= 0 and subtypes >= 2")
        changed = {k: v for k, v in value.items() if v != base[k]}
        name = "-".join(f"{k}{v:g}" for k, v in changed.items())
        own = int(steps) == cfg.train.steps and not changed
        main = f"signal{base['signal']:g}"  # the main cohort's models at other step counts
        rows.append(
            {
                "signal": value["signal"],
                "phantom_seed": value["seed"],
                "subtypes": value["subtypes"],
                "changed": changed,
                "phantom": workspace.phantom_dir(**changed),
                "curated": workspace.run_dir / f"curated-{name}" if name else workspace.curated,
                "tag": "" if own else f"{name or main}-steps{int(steps)}",
            }
        )
    plan = pd.DataFrame(rows)
    if plan.duplicated(list(SETTING_COLUMNS)).any():
        raise ValueError("settings must differ")
    return plan


def finished_gans(workspace: Workspace, tag: str, models: Sequence[str], steps: int) -> GanLearner:
    """A ``gans`` argument of :func:`compare_cohort`: the finished runs of ``models`` trained
    for ``steps`` steps in ``workspace.model_dir(model, seed, tag)``, loaded. Never trains
    (:func:`radiolib.runs.finished_runs`): a missing run raises
    :class:`radiolib.errors.MissingRunError` naming notebook 02.

    Costs: ``wall_seconds`` the training time the run records (summed over sessions);
    ``cpu_seconds`` NaN (a run trained elsewhere records no CPU time); ``flops`` one training
    step counted (:func:`radiolib.bench.training_step_flops`) times ``steps``.
    """

    def read(cohort: CuratedCohort, cfg: Profile, seed: int) -> tuple[dict[str, nn.Module], dict]:
        cfg_s = scoring.with_steps(cfg, steps)
        trained = finished_runs(
            cohort, cfg_s, lambda m, s: workspace.model_dir(m, s, tag=tag), models, seeds=[seed]
        )
        gans, costs = {}, {}
        for run in trained.itertuples():
            gans[run.model] = load_generator(run.out)
            step_flops = training_step_flops(run.model, cfg_s, len(cohort.gene_names))
            costs[run.model] = {
                "cpu_seconds": np.nan,
                "wall_seconds": float(run.seconds),
                "flops": float(step_flops * steps),
            }
        return gans, costs

    return read


def write_tidy(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a comparison frame (:data:`TIDY_COLUMNS`, with or without the
    :data:`SETTING_COLUMNS` first) as CSV, atomically; ValueError naming missing columns."""
    missing = [c for c in TIDY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"comparison frame lacks columns {missing}")
    path = Path(path)
    with atomic_write(path, "w") as fh:
        frame.to_csv(fh, index=False)
    return path


def setting_label(signal: float, phantom_seed: int, subtypes: int, cfg: Profile) -> str:
    """A setting named by what differs from the profile's phantom: ``"signal 0.25"``,
    ``"phantom seed 1"``, ``"5 subtypes"`` (joined by ``", "``), or ``"the profile's phantom"``."""
    p = cfg.phantom
    parts = []
    if float(signal) != float(p.signal):
        parts.append(f"signal {float(signal):g}")
    if int(phantom_seed) != int(p.seed):
        parts.append(f"phantom seed {int(phantom_seed)}")
    if int(subtypes) != int(p.subtypes):
        parts.append(f"{int(subtypes)} subtypes")
    return ", ".join(parts) or "the profile's phantom"


def settings_summary(tidy: pd.DataFrame, measures: Sequence[str], cfg: Profile) -> pd.DataFrame:
    """A comparison over phantom settings (:func:`radiolib.sweeps.compare_maps`) summarised per
    setting, representation and measure over the training seeds.

    Columns ``setting`` (:func:`setting_label`, in the frame's order of settings),
    ``representation``, ``measure``, ``value`` (mean over seeds), ``low``, ``high`` (lowest and
    highest seed), ``seeds`` (how many). ValueError naming missing columns or measures."""
    missing = [c for c in (*SETTING_COLUMNS, *TIDY_COLUMNS) if c not in tidy.columns]
    if missing:
        raise ValueError(f"comparison frame lacks columns {missing}")
    absent = [m for m in measures if m not in set(tidy["measure"])]
    if absent:
        raise ValueError(f"measures {absent} are not in the frame")
    labels = [
        setting_label(s, p, k, cfg)
        for s, p, k in tidy[list(SETTING_COLUMNS)].itertuples(index=False, name=None)
    ]
    sub = tidy.assign(setting=labels)
    sub = sub[sub["measure"].isin(list(measures))]
    out = (
        sub.groupby(["setting", "representation", "measure"], sort=False)["value"]
        .agg(value="mean", low="min", high="max", seeds="count")
        .reset_index()
    )
    return out


def leaders_paragraph(summary: pd.DataFrame, measure: str) -> str:
    """The answer of a :func:`settings_summary` in words: for each representation, the settings
    on which it leads on ``measure`` (highest mean over seeds), counted only where the lead is
    resolved (the leader's lowest seed above the runner-up's highest); the others are named as
    not resolved. ValueError when ``measure`` is not in the summary."""
    part = summary[summary["measure"] == measure]
    if part.empty:
        raise ValueError(f"measure {measure!r} is not in the summary")
    led: dict[str, list[str]] = {r: [] for r in dict.fromkeys(part["representation"])}
    unresolved = []
    for setting, rows in part.groupby("setting", sort=False):
        ranked = rows.sort_values("value", ascending=False)
        top = ranked.iloc[0]
        if len(ranked) > 1 and not top["low"] > ranked.iloc[1]["high"]:
            unresolved.append(
                f"{setting} ({top['representation']} ahead of {ranked.iloc[1]['representation']})"
            )
        else:
            led[top["representation"]].append(str(setting))
    settings = part["setting"].nunique()
    parts = [
        f"{rep} leads on {len(where)} ({', '.join(where)})" if where else f"{rep} on none"
        for rep, where in led.items()
    ]
    text = (
        f"On {settings} phantom{'s' if settings > 1 else ''}, by {measure} (mean over seeds; a "
        "lead counts where the leader's lowest seed is above the runner-up's highest): "
        + "; ".join(parts)
        + "."
    )
    if unresolved:
        text += f" Not resolved on {len(unresolved)}: {'; '.join(unresolved)}."
    return text


def leaders(summary: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per setting of :func:`settings_summary`: each representation's mean ``measure`` as a
    column (settings as rows, in order) and ``leader``, the representation with the highest."""
    part = summary[summary["measure"] == measure]
    if part.empty:
        raise ValueError(f"measure {measure!r} is not in the summary")
    wide = part.pivot_table(index="setting", columns="representation", values="value", sort=False)
    wide = wide[list(dict.fromkeys(part["representation"]))]
    wide["leader"] = wide.idxmax(axis=1)
    return wide
