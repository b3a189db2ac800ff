"""Synthesis quality of trained GANs: the paper's Table 1 protocol and the measures it lacked.

:func:`evaluate_synthesis` synthesises held-out pairs with every trained GAN
(:mod:`radiolib.pairs`), measures them (:mod:`radiolib.metrics`) and assembles one tidy results
table, section by section; :func:`evaluate_runs` does the same for run folders
(:mod:`radiolib.runs`) and writes the tables. It never trains a GAN.

The paper's Table 1 compares each synthetic image with the background it was painted into:

* inpainting: MSE / SSIM / PSNR inside a disk of ``inpaint_region_scale`` (1.5) x the inpainted
  radius, centred like the hole (the paper: "otherwise any numbers can be achieved just by
  adjusting the sphere");
* baseline and proposed: over the whole image.

The two regions differ, so the rows are not comparable with each other (the paper's own caveat).
The study therefore adds measures that answer one question each, on one footing:

* background kept: the three metrics for every method over ONE common region, outside the union
  of all methods' dilated tumours (:func:`radiolib.pairs.background_keep_region`);
* realism: KID and a Gaussian-kernel MMD permutation test between real and synthetic tumour slices
  on handcrafted features (:func:`radiolib.metrics.realism`);
* gene control: traits measured on the synthetic tumour against the donor's hidden ones
  (:func:`radiolib.metrics.measure_traits`), and a subtype classifier trained on real slices
  applied to synthetic ones (:mod:`radiolib.subtype_classifier`);
* counterfactuals: one background, several genes (:func:`radiolib.metrics.counterfactual_effect`);
* mode collapse: :func:`radiolib.metrics.diversity` of synthetic tumours relative to real ones.

:func:`table1` pools per-pair rows into means with bootstrap intervals over donors and training
seeds, :func:`compare_with_paper` sets them beside the paper's numbers and
:func:`radiolib.claims.verdicts` says where two methods differ beyond those intervals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from radiolib.config import resolve_device
from radiolib.data.curated import load_curated
from radiolib.data.dataset import evaluation_pairs, patients_with_slices
from radiolib.io import atomic_write, check_folder_path
from radiolib.metrics import (
    PSNR_CAP_DB,
    bootstrap,
    bootstrap_ci,
    counterfactual_effect,
    diversity,
    realism,
    spearman,
)
from radiolib.pairs import (
    ANCHORS,
    Syntheses,
    anchor_syntheses,
    background_keep_region,
    evaluate_pairs,
    joint_head_auc,
    synthesize_pairs,
)
from radiolib.runs import inspect_runs, load_generator
from radiolib.subtype_classifier import classifier_accuracy, train_subtype_classifier

if TYPE_CHECKING:
    from radiolib.config import Profile
    from radiolib.data.curated import CuratedCohort
    from radiolib.data.phantom import PhantomTruth
    from radiolib.models import GAN

# Table 1 of the paper (MSE, SSIM, PSNR in dB), regions as described in the module docstring.
PAPER_TABLE1 = pd.DataFrame(
    {
        "mse": [0.0121, 0.0065, 0.0044],
        "ssim": [0.76, 0.74, 0.88],
        "psnr": [20.94, 22.05, 24.52],
    },
    index=pd.Index(["inpainting", "baseline", "proposed"], name="method"),
)

UNITS = ("donor_patient", "seed")  # what is independent in an evaluation: donors, training seeds
NO_GENES = ("inpainting", *ANCHORS)  # methods whose tumour does not come from the genes
# measured trait on a slice -> the phantom's hidden trait it should follow
TRAIT_TRUTH = {
    "diameter_mm": "diameter_mm",
    "attenuation_hu": "solidity",
    "margin_sharpness": "margin_sharpness",
}


@dataclass
class SynthesisEvaluation:
    """Everything notebook 03 shows, for one curated cohort and a set of trained runs."""

    pairs: dict[str, np.ndarray]  # evaluation pairs (radiolib.data.dataset.evaluation_pairs)
    synths: dict[tuple[str, int], Syntheses]  # (method, seed) -> synthesize_pairs on ``pairs``
    per_pair: pd.DataFrame  # evaluate_pairs rows of every (method, seed), with a ``seed`` column
    results: pd.DataFrame  # tidy: section, method, seed, measure, value, low, high, n
    panel: dict  # one background, several donors' genes: method -> syntheses (counterfactuals)
    runs: pd.DataFrame | None = None  # evaluate_runs: radiolib.runs.inspect_runs of the runs


# --------------------------------------------------------------------------- tables


def table1(
    per_pair: pd.DataFrame,
    metrics: Sequence[str] = ("mse", "ssim", "psnr"),
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    units: Sequence[str] = UNITS,
) -> pd.DataFrame:
    """Method x metric means with bootstrap CIs over the independent units, from per-pair rows.

    ``per_pair`` has a ``method`` column and one column per metric (one row per pair); the CI
    resamples the ``units`` columns that it has (by default donors and training seeds; pairs
    when it has none). The result has index ``method`` and columns ``<metric>``,
    ``<metric>_low``, ``<metric>_high`` for each metric, ``<metric>_capped`` for PSNR-like
    metrics (pairs whose ``inf`` was capped at :data:`PSNR_CAP_DB`), ``n`` (pairs used; NaN
    rows of a metric are left out of it) and ``units`` (e.g. ``"11 donor_patient x 3 seed"``).
    """
    missing = [c for c in ("method", *metrics) if c not in per_pair.columns]
    if missing:
        raise ValueError(f"per_pair lacks columns {missing}; has {list(per_pair.columns)}")
    present = [u for u in units if u in per_pair.columns]
    rows = {}
    for method, group in per_pair.groupby("method", sort=False):
        row: dict[str, float | int | str] = {"n": len(group)}
        row["units"] = " x ".join(f"{group[u].nunique()} {u}" for u in present) or "pairs"
        for metric in metrics:
            vals = group[metric].to_numpy(dtype=np.float64)
            keep = ~np.isnan(vals)
            vals = vals[keep]
            if "psnr" in metric:
                row[f"{metric}_capped"] = int(np.isinf(vals).sum())
                vals = np.minimum(vals, PSNR_CAP_DB)
            if vals.size == 0:
                row[metric] = row[f"{metric}_low"] = row[f"{metric}_high"] = np.nan
                continue
            groups = [group[u].to_numpy()[keep] for u in present]
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = bootstrap_ci(
                vals, groups, n=n, level=level, seed=seed
            )
        rows[method] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "method"
    return out


def compare_with_paper(table: pd.DataFrame, paper: pd.DataFrame = PAPER_TABLE1) -> pd.DataFrame:
    """Long table (method, metric) -> ``paper``, ``ours``, ``low``, ``high`` side by side.

    ``table`` is the output of :func:`table1`; methods and metrics missing on either side are
    kept with NaN so the gap shows.
    """
    rows = []
    methods = list(dict.fromkeys([*paper.index, *table.index]))
    for method in methods:
        for metric in paper.columns:
            ours = table.loc[method] if method in table.index else None
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "paper": paper.loc[method, metric] if method in paper.index else np.nan,
                    "ours": ours[metric] if ours is not None and metric in ours else np.nan,
                    "low": ours[f"{metric}_low"] if ours is not None and metric in ours else np.nan,
                    "high": ours[f"{metric}_high"]
                    if ours is not None and metric in ours
                    else np.nan,
                }
            )
    return pd.DataFrame(rows).set_index(["method", "metric"])


def _row(
    section: str,
    method: str,
    seed: int | str,
    measure: str,
    value: float,
    low: float = np.nan,
    high: float = np.nan,
    n: int | None = None,
    level: int | str = "",
) -> dict:
    return {
        "section": section,
        "method": method,
        "seed": str(seed),
        "measure": measure,
        "level": str(level),
        "value": float(value),
        "low": float(low),
        "high": float(high),
        "n": np.nan if n is None else int(n),
    }


def _ci_rows(section: str, table: pd.DataFrame, columns: Mapping[str, tuple[str, str]]) -> list:
    """Rows of a :func:`table1` frame; ``columns`` maps each column to its (measure, level)."""
    return [
        _row(
            section,
            method,
            "all",
            measure,
            r[col],
            r[f"{col}_low"],
            r[f"{col}_high"],
            r["n"],
            level=level,
        )
        for method, r in table.iterrows()
        for col, (measure, level) in columns.items()
        if np.isfinite(r[col])
    ]


# --------------------------------------------------------------------------- the whole evaluation


def evaluate_synthesis(
    cohort: CuratedCohort,
    cfg: Profile,
    gans: Mapping[tuple[str, int], GAN],
    truth: PhantomTruth | None = None,
    device: str = "cpu",
) -> SynthesisEvaluation:
    """The paper's Table 1 protocol and the study's own measures for trained GANs.

    ``gans`` maps ``(method, seed)`` to a trained GAN (``radiolib.runs.load_generator``);
    ``cfg`` is the :class:`~radiolib.config.Profile`; ``truth`` the phantom's
    :class:`~radiolib.data.phantom.PhantomTruth` (None on real data: the truth-based measures
    are left out). Pairs are held-out donors' genes with held-out backgrounds
    (``cfg.evaluation.pairs`` of them, drawn with ``cfg.curation.seed``). Sections of
    ``results``:

    * ``table1``: MSE / SSIM / PSNR against the background, pooled over seeds, with a bootstrap
      CI over donors and seeds (:func:`table1`), and the
      :func:`~radiolib.pairs.anchor_syntheses` rows ``oracle`` and ``unchanged`` that bound it;
    * ``background_kept``: the same over the region every GAN should keep;
    * ``mask``: the predicted mask's ``area_px`` and ``empty_rate`` (the oracle's: the donors'
      real masks);
    * ``weight_map``: ``inside_mean`` and ``outside_mean`` of every fusion level's map (column
      ``level``: its size), see :func:`~radiolib.pairs.mechanism_per_pair`;
    * ``realism``: KID, MMD^2 and its permutation p-value, synthetic vs held-out real tumours;
    * ``diversity``: mean pairwise L1 of syntheses for different donors on one background
      relative to the same for those donors' real tumour slices (1 = as varied as real);
    * ``counterfactual``: on that background, change inside vs outside the tumours;
    * ``joint_head``: the AUC of D_ISG for a slice's own genes against another patient's, on
      training and held-out slices (:func:`~radiolib.pairs.joint_head_auc`);
    * with ``truth``: ``gene_control`` (Spearman rho of each measured trait with the donor's
      hidden trait, per seed and pooled (seed ``all``) with a CI over donors and seeds; ``real``
      rows measure the real slices, the ceiling; methods without genes are left out),
      ``gene_control_train`` (the same on training donors: did the GAN learn to follow genes
      at all) and ``subtype``
      (accuracy of a classifier trained on real training slices, applied to syntheses against
      the donor's subtype; ``chance`` is the majority share).
    """
    if not gans:
        raise ValueError("evaluate_synthesis needs at least one trained GAN")
    pairs = evaluation_pairs(cohort, cfg.evaluation.pairs, seed=cfg.curation.seed, split="test")
    synths = {
        key: synthesize_pairs(gan, pairs, device=device, inpaint_margin=cfg.model.inpaint_margin)
        for key, gan in gans.items()
    }
    per_pair = _measure_pairs(pairs, synths, cfg)
    rows = _pooled_rows(per_pair, cfg.evaluation.bootstrap)
    rows += _realism_rows(cohort, synths)
    panel = _counterfactual_panel(cohort, gans, pairs, cfg, device)
    rows += _counterfactual_rows(panel)
    if truth is not None:
        rows += _gene_control_rows(cohort, cfg, per_pair, pairs, truth)
        rows += _training_donor_rows(cohort, cfg, gans, truth, device)
        rows += _subtype_rows(cohort, cfg, pairs, synths, truth)
    rows += _joint_head_rows(cohort, cfg, gans)
    return SynthesisEvaluation(
        pairs=pairs, synths=synths, per_pair=per_pair, results=pd.DataFrame(rows), panel=panel
    )


def _measure_pairs(
    pairs: Mapping[str, np.ndarray],
    synths: Mapping[tuple[str, int], Syntheses],
    cfg: Profile,
) -> pd.DataFrame:
    """:func:`~radiolib.pairs.evaluate_pairs` rows of every (method, seed) and of the anchors
    (repeated per seed), each seed's GANs measured over their common kept background."""
    anchors = anchor_syntheses(pairs)
    seeds = sorted({seed for _, seed in synths})
    frames = []
    for seed in seeds:
        same_seed = {m: synths[(m, s)] for (m, s) in synths if s == seed}
        keep = background_keep_region(same_seed, cfg.model.erosion_px)
        for method, synth in {**same_seed, **anchors}.items():
            frames.append(evaluate_pairs(method, synth, pairs, cfg, keep).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def _pooled_rows(per_pair: pd.DataFrame, n_boot: int) -> list[dict]:
    """Sections ``table1``, ``background_kept``, ``mask`` and ``weight_map``: per-pair columns
    pooled over seeds with bootstrap CIs (:func:`table1`)."""
    rows: list[dict] = []
    boot = {"n": n_boot}
    metric_names = ("mse", "ssim", "psnr")
    plain = {m: (m, "") for m in metric_names}
    rows += _ci_rows("table1", table1(per_pair, metric_names, **boot), plain)
    bg_names = {f"bg_{m}": (m, "") for m in metric_names}
    kept = per_pair.dropna(subset=list(bg_names))
    if len(kept):
        rows += _ci_rows("background_kept", table1(kept, list(bg_names), **boot), bg_names)
    painted = per_pair[per_pair.method != "unchanged"]
    mask_cols = {"mask_px": ("area_px", ""), "mask_empty": ("empty_rate", "")}
    rows += _ci_rows("mask", table1(painted, list(mask_cols), **boot), mask_cols)
    map_cols = {
        c: (f"{c.split('_')[1]}_mean", c.split("_")[0][1:])
        for c in per_pair.columns
        if c.startswith("w") and c.endswith(("_inside", "_outside"))
    }
    with_maps = per_pair.dropna(subset=list(map_cols), how="all")
    if map_cols and len(with_maps):
        rows += _ci_rows("weight_map", table1(with_maps, list(map_cols), **boot), map_cols)
    return rows


def _realism_rows(cohort: CuratedCohort, synths: Mapping[tuple[str, int], Syntheses]) -> list[dict]:
    """Section ``realism``: each (method, seed)'s tumours against the held-out real ones."""
    test_slices = np.flatnonzero(cohort.split[cohort.tumour_patient] == "test")
    real_images = cohort.tumour_images[test_slices]
    real_masks = cohort.tumour_masks[test_slices]
    rows = []
    for (method, seed), synth in synths.items():
        region = synth["hole"] if method == "inpainting" else synth["mask"]
        r = realism(real_images, real_masks, synth["image"], region, n_perm=200, seed=seed)
        rows += [_row("realism", method, seed, k, v) for k, v in r.items()]
    return rows


def _counterfactual_panel(
    cohort: CuratedCohort,
    gans: Mapping[tuple[str, int], GAN],
    pairs: Mapping[str, np.ndarray],
    cfg: Profile,
    device: str,
    max_donors: int = 12,
) -> dict:
    """One held-out background with the genes of up to ``max_donors`` held-out patients."""
    donors = np.unique(pairs["donor_patient"])[:max_donors]
    if len(donors) < 2:
        donors = np.unique(cohort.tumour_patient)[:max_donors]
    slices = np.array(
        [
            np.flatnonzero(cohort.tumour_patient == p)[
                len(np.flatnonzero(cohort.tumour_patient == p)) // 2
            ]
            for p in donors
        ]
    )
    background = pairs["background"][0]
    panel_pairs = {
        "background": np.repeat(background[None], len(donors), 0),
        "genes": cohort.genes[donors].astype(np.float32),
        "real_tumour": cohort.tumour_images[slices],
        "real_mask": cohort.tumour_masks[slices],
        "donor_patient": donors,
    }
    synths = {
        key: synthesize_pairs(
            gan, panel_pairs, device=device, inpaint_margin=cfg.model.inpaint_margin
        )
        for key, gan in gans.items()
    }
    return {
        "background": background,
        "donors": donors,
        "synths": synths,
        "real": {"images": panel_pairs["real_tumour"], "masks": panel_pairs["real_mask"]},
    }


def _counterfactual_rows(panel: Mapping) -> list[dict]:
    """Sections ``counterfactual`` and ``diversity`` of the panel's syntheses."""
    real_div = diversity(panel["real"]["images"])
    rows = []
    for (method, seed), syn in panel["synths"].items():
        effect = counterfactual_effect(syn["image"], syn["mask"], panel["background"])
        rows += [
            _row("counterfactual", method, seed, k, v) for k, v in effect.items() if k != "union_px"
        ]
        rows.append(
            _row(
                "diversity",
                method,
                seed,
                "relative_l1",
                diversity(syn["image"]) / real_div if real_div > 0 else np.nan,
            )
        )
    return rows


def _gene_control_rows(
    cohort: CuratedCohort,
    cfg: Profile,
    per_pair: pd.DataFrame,
    pairs: Mapping[str, np.ndarray],
    truth: PhantomTruth,
    section: str = "gene_control",
) -> list[dict]:
    """Section ``section``: Spearman rho of each measured trait with the donor's hidden
    trait, pooled over seeds with a CI over donors and seeds, and per seed."""
    ids = np.asarray(cohort.patients)
    donor_truth = truth.patients.loc[ids[pairs["donor_patient"]]].reset_index(drop=True)
    rows: list[dict] = []
    # the GANs that read genes, pooled over seeds, and the donors' real slices (the ceiling);
    # inpainting is left out: its hole is sized from the donor's real tumour, so its diameter
    # follows the donor whatever the genes
    real = per_pair[per_pair.seed == per_pair.seed.min()].drop_duplicates("pair")
    real = real.assign(method="real", seed="-")
    for trait in [*TRAIT_TRUTH]:
        real[f"synth_{trait}"] = real[f"donor_{trait}"]
    scored = pd.concat([per_pair[~per_pair.method.isin(NO_GENES)], real], ignore_index=True)
    for method, group in scored.groupby("method", sort=False):
        hidden_rows = donor_truth.iloc[group["pair"].to_numpy()]
        units = [group["donor_patient"].to_numpy(), group["seed"].astype(str).to_numpy()]
        for trait, hidden in TRAIT_TRUTH.items():
            a = group[f"synth_{trait}"].to_numpy(np.float64)
            b = hidden_rows[hidden].to_numpy(np.float64)
            rho, low, high = bootstrap(
                lambda r, a=a, b=b: spearman(a[r], b[r]),
                len(group),
                units,
                n=cfg.evaluation.bootstrap,
            )
            n_ok = int((np.isfinite(a) & np.isfinite(b)).sum())
            rows.append(_row(section, method, "all", trait, rho, low, high, n=n_ok))
        if method == "real":
            continue
        for seed, by_seed in group.groupby("seed"):
            hidden_seed = donor_truth.iloc[by_seed["pair"].to_numpy()]
            for trait, hidden in TRAIT_TRUTH.items():
                rho = spearman(
                    by_seed[f"synth_{trait}"].to_numpy(np.float64),
                    hidden_seed[hidden].to_numpy(np.float64),
                )
                rows.append(_row(section, method, seed, trait, rho))
    return rows


def _training_donor_rows(
    cohort: CuratedCohort,
    cfg: Profile,
    gans: Mapping[tuple[str, int], GAN],
    truth: PhantomTruth,
    device: str,
) -> list[dict]:
    """Section ``gene_control_train``: gene control on pairs of TRAINING donors (and
    backgrounds): whether a GAN learned to follow the genes at all, apart from whether that
    carries over to held-out donors (section ``gene_control``)."""
    pairs = evaluation_pairs(cohort, cfg.evaluation.pairs, seed=cfg.curation.seed, split="train")
    frames = [
        evaluate_pairs(method, synthesize_pairs(gan, pairs, device=device), pairs, cfg).assign(
            seed=seed
        )
        for (method, seed), gan in gans.items()
        if method not in NO_GENES
    ]
    if not frames:
        return []
    per_pair = pd.concat(frames, ignore_index=True)
    return _gene_control_rows(cohort, cfg, per_pair, pairs, truth, "gene_control_train")


def _joint_head_rows(
    cohort: CuratedCohort, cfg: Profile, gans: Mapping[tuple[str, int], GAN]
) -> list[dict]:
    """Section ``joint_head``: :func:`~radiolib.pairs.joint_head_auc` per GAN with a joint head
    and seed, on training (``level`` train) and held-out (``level`` test) slices; a split with
    fewer than two patients with slices (no mismatched pair) is left out."""
    splits = [s for s in ("train", "test") if len(patients_with_slices(cohort, s)) >= 2]
    rows = []
    for (method, seed), gan in gans.items():
        if not getattr(gan.discriminator, "conditional", False):
            continue
        for split in splits:
            auc, n = joint_head_auc(gan, cohort, split, cfg.evaluation.pairs, cfg.curation.seed)
            rows.append(_row("joint_head", method, seed, "auc", auc, n=n, level=split))
    return rows


def _subtype_rows(
    cohort: CuratedCohort,
    cfg: Profile,
    pairs: Mapping[str, np.ndarray],
    synths: Mapping[tuple[str, int], Syntheses],
    truth: PhantomTruth,
) -> list[dict]:
    """Section ``subtype``: accuracy of a classifier trained on real training slices, on the
    held-out real slices and on each (method, seed)'s syntheses against the donor's subtype."""
    subtype = truth.patients.loc[np.asarray(cohort.patients), "subtype"].to_numpy()
    train_slices = np.flatnonzero(cohort.split[cohort.tumour_patient] == "train")
    test_slices = np.flatnonzero(cohort.split[cohort.tumour_patient] == "test")
    clf = train_subtype_classifier(
        cohort.tumour_images[train_slices],
        subtype[cohort.tumour_patient[train_slices]],
        steps=cfg.evaluation.classifier_steps,
        seed=cfg.curation.seed,
    )
    donor_subtype = subtype[pairs["donor_patient"]]
    chance = np.bincount(donor_subtype).max() / len(donor_subtype)
    rows = [_row("subtype", "chance", "-", "accuracy", chance, n=len(donor_subtype))]
    rows.append(
        _row(
            "subtype",
            "real",
            "-",
            "accuracy",
            classifier_accuracy(
                clf, cohort.tumour_images[test_slices], subtype[cohort.tumour_patient[test_slices]]
            ),
            n=len(test_slices),
        )
    )
    for (method, seed), synth in synths.items():
        rows.append(
            _row(
                "subtype",
                method,
                seed,
                "accuracy",
                classifier_accuracy(clf, synth["image"], donor_subtype),
                n=len(donor_subtype),
            )
        )
    return rows


def evaluate_runs(
    curated: str | os.PathLike,
    runs: Sequence[Path | str],
    cfg: Profile,
    device: str = "cpu",
    out: str | os.PathLike | None = None,
    truth: PhantomTruth | None = None,
) -> SynthesisEvaluation:
    """``radiolib evaluate``: load the curated cohort and the trained run folders ``runs``
    (method and seed read from each checkpoint), evaluate, and write ``results.csv``,
    ``per_pair.csv`` and ``runs.csv`` into ``out`` when given. ``result.runs`` says which runs
    are unfinished; a run of another cohort, or two of the same model and seed, raise
    (:func:`radiolib.runs.inspect_runs`)."""
    device = resolve_device(device)
    if out is not None:
        out = check_folder_path(out, "results folder")
    cohort = load_curated(curated)
    table = inspect_runs(runs, cohort)
    gans = {(r.model, r.seed): load_generator(r.run, device) for r in table.itertuples()}
    result = evaluate_synthesis(cohort, cfg, gans, truth=truth, device=device)
    result.runs = table
    if out is not None:
        for name, frame in (
            ("results.csv", result.results),
            ("per_pair.csv", result.per_pair),
            ("runs.csv", table),
        ):
            with atomic_write(out / name, "w") as fh:
                frame.to_csv(fh, index=False)
    return result
