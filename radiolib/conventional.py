"""The conventional radiogenomic map, run end to end on the study's cohort and on real data.

The paper's introduction describes how radiogenomic maps are usually made, in three independent
steps (e.g. Zhou et al. 2018): 1) metagenes by clustering co-expressed genes, 2) image features
(hand-crafted radiomics or radiologists' semantic features), 3) a statistical test of every image
feature against every metagene. The building blocks live in :mod:`radiolib.radiogenomics`; this
module chains them and scores the result.

Step 1 (:func:`module_metagenes`): genes are clustered hierarchically (distance 1 - Pearson r,
average linkage). By default the tree is cut at ``cut`` = 0.6, i.e. a module's genes correlate
0.4 with each other on average, and only modules of at least ``min_module_size`` genes become
metagenes (the rest stay unassigned, like WGCNA's grey module); ``n_modules`` instead cuts the
tree into that many clusters and keeps them all. A metagene is the mean of its genes' z-scores.
Modules are named ``M0``, ``M1``, ... from the largest.

Step 2 (:func:`image_features`): on the curated cohort, each patient's representative tumour
slice (largest tumour area) gives pyradiomics first-order, 2-D shape and GLCM features
(``"radiomics"``) and the three traits of :func:`radiolib.metrics.measure_traits`
(``"measured"``). On real data the features are the AIM semantic annotations and clinical
labels (:func:`clinical_labels`).

Step 3 (:func:`correlate`): Spearman rho of every feature with every metagene; Benjamini-Hochberg
q-values within each feature set (each set is one conventional analysis, one FDR family).

Scoring on the synthetic cohort (:func:`score_against_truth`). The phantom's truth lists, for
every module gene, its driver. A TRUE link is a pair (gene, trait) such that the gene is among
the curated cohort's genes and its driver is that trait (one of
:data:`radiolib.data.phantom.TRAITS`); genes driven by the subtype or by nuisance factors have no
true link, even when the subtype makes them correlate with a trait. A CLAIMED link: every
significant (feature, metagene) pair whose feature measures a phantom trait
(:data:`PHANTOM_FEATURE_TRAITS`) links every gene of that metagene's module to that trait
(:func:`radiolib.radiogenomics.conventional_links`). Significant pairs of features that measure
no single trait (texture, most shape features) are counted as ``unscored_pairs``, not as false
links. True positives = claimed and true; false positives = claimed, not true; recall = TP / all
true links (all six traits, whether or not the feature set measures them); precision =
TP / claimed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from radiolib import metrics
from radiolib.data import tables
from radiolib.data.phantom import TRAITS as PHANTOM_TRAITS
from radiolib.errors import CohortError
from radiolib.io import atomic_write
from radiolib.models.blocks import check_shape
from radiolib.radiogenomics import (
    RADIOMIC_TRAITS,
    conventional_links,
    end_to_end_links,
    link_recovery,
    metagenes,
    radiomic_features,
    representative_slices,
    spearman_map,
    trait_attribution,
)

MODULE_CUT = 0.6  # tree cut (1 - r): a module's genes correlate 0.4 on average
MIN_MODULE_SIZE = 10  # smaller clusters are not metagenes
ALPHA = 0.05  # FDR level
MIN_MINORITY = 5  # a 0/1 feature needs this many patients in its rarer group
FEATURE_SETS = ("radiomics", "measured")

# measured trait (radiolib.metrics) -> phantom trait it reads; the phantom renders solidity as
# the tumour's mean density
MEASURED_PHANTOM_TRAITS = {
    "diameter_mm": "diameter_mm",
    "attenuation_hu": "solidity",
    "margin_sharpness": "margin_sharpness",
}
# image feature -> the phantom trait it measures; features not listed measure none on their own
PHANTOM_FEATURE_TRAITS: dict[str, str] = {
    **{f: MEASURED_PHANTOM_TRAITS.get(t, t) for f, t in RADIOMIC_TRAITS.items()},
    "shape2D_Elongation": "elongation",
    **MEASURED_PHANTOM_TRAITS,
}

MAP_LINKS_COLUMNS = (
    "approach",
    "signal",
    "true_positives",
    "false_positives",
    "recall",
    "precision",
)

REFERENCE_EXPRESSION = "GSE103584_top1000_log10_zscore_complete.csv"
REFERENCE_CLINICAL = "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv"
REFERENCE_AIM = "aim"

# clinical label -> (column of the TCIA table, value (lower case) -> number); values in
# _MISSING become NaN, any other value is an error
_MISSING = {
    "",
    "unknown",
    "not collected",
    "not assessed",
    "not recorded in database",
    "n/a",
    "na",
    "nan",
}
CLINICAL_LABELS: dict[str, tuple[str, dict[str, float] | None]] = {
    "egfr_mutant": ("EGFR mutation status", {"wildtype": 0.0, "mutant": 1.0}),
    "kras_mutant": ("KRAS mutation status", {"wildtype": 0.0, "mutant": 1.0}),
    "alk_translocated": ("ALK translocation status", {"wildtype": 0.0, "translocated": 1.0}),
    "squamous_histology": (
        "Histology",
        {
            "adenocarcinoma": 0.0,
            "squamous cell carcinoma": 1.0,
            "nsclc nos (not otherwise specified)": np.nan,
        },
    ),
    # class midpoints; Spearman only uses their order
    "ground_glass_percent": (
        "%GG",
        {
            "0%": 0.0,
            ">0 - 25%": 12.5,
            "25 - 50%": 37.5,
            "50 - 75%": 62.5,
            "75 - < 100%": 87.5,
            "100%": 100.0,
        },
    ),
    "smoking": ("Smoking status", {"nonsmoker": 0.0, "former": 1.0, "current": 2.0}),
    "pack_years": ("Pack Years", None),
    "age": ("Age at Histological Diagnosis", None),
    "male": ("Gender", {"female": 0.0, "male": 1.0}),
    "t_stage": (
        "Pathological T stage",
        {"tis": 0.0, "t1a": 1.0, "t1b": 2.0, "t2a": 3.0, "t2b": 4.0, "t3": 5.0, "t4": 6.0},
    ),
    "n_stage": ("Pathological N stage", {"n0": 0.0, "n1": 1.0, "n2": 2.0}),
    "grade": (
        "Histopathological Grade",
        {
            "g1 well differentiated": 1.0,
            "other, type i: well to moderately differentiated": 1.5,
            "g2 moderately differentiated": 2.0,
            "other, type ii: moderately to poorly differentiated": 2.5,
            "g3 poorly differentiated": 3.0,
        },
    ),
    "lymphovascular_invasion": ("Lymphovascular invasion", {"absent": 0.0, "present": 1.0}),
    "pleural_invasion": (
        "Pleural invasion (elastic, visceral, or parietal)",
        {"no": 0.0, "yes": 1.0},
    ),
    "recurrence": ("Recurrence", {"no": 0.0, "yes": 1.0}),
}


# --------------------------------------------------------------------------- step 1: metagenes


def module_metagenes(
    expr: np.ndarray,
    gene_names: Sequence[str],
    index: Sequence[str],
    n_modules: int | None = None,
    cut: float = MODULE_CUT,
    min_module_size: int = MIN_MODULE_SIZE,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Co-expression modules of ``expr`` (P, G) and their metagenes.

    With ``n_modules`` the tree is cut into that many clusters, all kept; otherwise it is cut
    at distance ``cut`` and clusters of fewer than ``min_module_size`` genes are left out.
    Returns the metagenes (P, M) (index ``index``, columns ``M0``... from the largest module)
    and ``{"M0": [genes], ...}``. Raises ``ValueError`` when no module is left.
    """
    expr = np.asarray(expr, dtype=np.float64)
    if expr.ndim != 2 or expr.shape[1] != len(gene_names) or expr.shape[0] != len(index):
        raise ValueError(
            f"expr {expr.shape} must be (P, G) = ({len(index)} patients, "
            f"{len(gene_names)} gene names)"
        )
    if n_modules is not None:
        matrix, labels = metagenes(expr, n_modules=n_modules)
        keep = np.arange(matrix.shape[1])
    else:
        if not 0.0 < cut < 2.0:
            raise ValueError(f"cut must be a distance 1 - r in (0, 2) (got {cut})")
        if min_module_size < 2:
            raise ValueError(f"min_module_size must be >= 2 (got {min_module_size})")
        matrix, labels = metagenes(expr, distance_threshold=cut)
        keep = np.flatnonzero(np.bincount(labels) >= min_module_size)
        if not len(keep):
            raise ValueError(
                f"no co-expression module of >= {min_module_size} genes at cut {cut} "
                f"(largest: {np.bincount(labels).max()} genes); raise cut, lower "
                "min_module_size or give n_modules"
            )
    sizes = np.bincount(labels)
    order = keep[np.argsort(-sizes[keep], kind="stable")]  # largest first, ties by gene order
    names = np.asarray(gene_names)
    frame = pd.DataFrame(
        matrix[:, order],
        index=pd.Index(list(index), name="patient_id"),
        columns=[f"M{k}" for k in range(len(order))],
    )
    modules = {f"M{k}": names[labels == lab].tolist() for k, lab in enumerate(order)}
    return frame, modules


# --------------------------------------------------------------------------- step 2: features


def _curation(cfg: Any) -> Any:
    """The curation settings of a Profile (or a CurationConfig itself)."""
    return getattr(cfg, "curation", cfg)


def image_features(
    cohort: Any, cfg: Any, feature_sets: Sequence[str] = FEATURE_SETS
) -> dict[str, pd.DataFrame]:
    """Image features of each patient's representative tumour slice (largest tumour area).

    ``cohort``: a CuratedCohort or any object with ``patients``, ``tumour_images``,
    ``tumour_masks`` (N, S, S) and ``tumour_patient`` (N,). ``cfg``: a Profile (its
    ``curation.hu_window`` and ``curation.voi_mm`` give HU and mm). ``feature_sets``: any of
    ``"radiomics"`` (pyradiomics first order, 2-D shape, GLCM) and ``"measured"``
    (diameter_mm, attenuation_hu, margin_sharpness). Returns ``{set: (P', F) DataFrame}``
    indexed by patient id; features constant over the patients are left out.
    """
    bad = [s for s in feature_sets if s not in FEATURE_SETS]
    if bad or not feature_sets:
        raise ValueError(f"feature_sets must be a non-empty subset of {FEATURE_SETS} (got {bad})")
    if len(cohort.tumour_images) == 0:
        raise CohortError(f"cohort {getattr(cohort, 'path', '')} has no tumour slice")
    cur = _curation(cfg)
    images, masks, ids = representative_slices(
        cohort.tumour_images, cohort.tumour_masks, cohort.tumour_patient
    )
    index = [cohort.patients[int(i)] for i in ids]
    out: dict[str, pd.DataFrame] = {}
    for name in feature_sets:
        if name == "radiomics":
            df = radiomic_features(
                images, masks, index, hu_window=tuple(cur.hu_window), voi_mm=cur.voi_mm
            )
        else:
            df = metrics.measure_traits_batch(
                images, masks, tuple(cur.hu_window), cur.voi_mm, index=index
            )[list(metrics.TRAITS)]
            df.index.name = "patient_id"
        varies = [c for c in df.columns if df[c].nunique(dropna=True) > 1]
        out[name] = df[varies]
    return out


# --------------------------------------------------------------------------- step 3: the map


def correlate(
    features: Mapping[str, pd.DataFrame], metagenes_df: pd.DataFrame, alpha: float = ALPHA
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman map of each feature set against the metagenes, one BH family per set.

    Returns ``(map_df, significant)``: ``map_df`` has columns ``feature_set``, ``feature``,
    ``metagene``, ``rho``, ``p``, ``n``, ``q``; ``significant`` its rows with q <= ``alpha``,
    smallest q first.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    if not features:
        raise ValueError("no feature set to correlate")
    parts = []
    for name, df in features.items():
        if df.shape[1] == 0:
            raise ValueError(f"feature set {name!r} has no feature that varies")
        part = spearman_map(df, metagenes_df)
        part.insert(0, "feature_set", name)
        parts.append(part)
    map_df = pd.concat(parts, ignore_index=True)
    sig = map_df[map_df["q"] <= alpha].sort_values(["q", "p"], kind="stable")
    return map_df, sig.reset_index(drop=True)


def map_matrix(map_df: pd.DataFrame, value: str = "rho", feature_set: str | None = None):
    """One column of a long map as a (features x metagenes) DataFrame, rows in first-seen
    order, columns ``M0``, ``M1``, ... in numeric order."""
    df = map_df if feature_set is None else map_df[map_df["feature_set"] == feature_set]
    if df.empty:
        raise ValueError(f"no rows for feature set {feature_set!r}")
    wide = df.pivot_table(index="feature", columns="metagene", values=value, dropna=False)
    rows = list(dict.fromkeys(df["feature"]))
    cols = sorted(wide.columns, key=lambda c: (len(c), c))
    return wide.reindex(index=rows, columns=cols)


@dataclass
class ConventionalMap:
    """The three steps' results.

    ``metagenes`` (P, M) indexed by patient id; ``modules`` ``{"M0": [genes]}``; ``features``
    ``{set: (P', F)}``; ``map_df`` every (feature, metagene) test (see :func:`correlate`);
    ``significant`` the tests with q <= ``alpha``.
    """

    metagenes: pd.DataFrame
    modules: dict[str, list[str]]
    features: dict[str, pd.DataFrame]
    map_df: pd.DataFrame
    significant: pd.DataFrame
    alpha: float
    params: dict = field(default_factory=dict)

    def matrix(self, value: str = "rho", feature_set: str | None = None) -> pd.DataFrame:
        return map_matrix(self.map_df, value, feature_set)

    def summary(self) -> pd.DataFrame:
        """Per feature set: features, metagenes, tests, significant pairs, smallest q."""
        rows = []
        for name, df in self.features.items():
            part = self.map_df[self.map_df["feature_set"] == name]
            rows.append(
                {
                    "feature_set": name,
                    "patients": len(df),
                    "features": df.shape[1],
                    "metagenes": self.metagenes.shape[1],
                    "tests": int(part["p"].notna().sum()),
                    f"significant (q <= {self.alpha:g})": int((part["q"] <= self.alpha).sum()),
                    "smallest q": float(part["q"].min()),
                }
            )
        return pd.DataFrame(rows).set_index("feature_set")


def conventional_map(
    cohort: Any,
    cfg: Any,
    n_modules: int | None = None,
    feature_sets: Sequence[str] = FEATURE_SETS,
    alpha: float = ALPHA,
    cut: float = MODULE_CUT,
    min_module_size: int = MIN_MODULE_SIZE,
    features: Mapping[str, pd.DataFrame] | None = None,
) -> ConventionalMap:
    """The conventional map of a curated cohort: metagenes of ``cohort.genes`` (P, G),
    image features of the representative slices, Spearman + BH per feature set.

    ``features`` (``{set: (P', F)}`` indexed by patient id) replaces step 2 when given.
    """
    genes = np.asarray(cohort.genes)
    if genes.ndim != 2 or genes.shape[0] != len(cohort.patients):
        raise CohortError(
            f"cohort genes {genes.shape} must be (P, G) with P = {len(cohort.patients)} patients"
        )
    mg, modules = module_metagenes(
        genes, cohort.gene_names, cohort.patients, n_modules, cut, min_module_size
    )
    if features is None:
        features = image_features(cohort, cfg, feature_sets)
    features = dict(features)
    map_df, sig = correlate(features, mg, alpha)
    params = {"n_modules": n_modules, "cut": cut, "min_module_size": min_module_size}
    return ConventionalMap(mg, modules, features, map_df, sig, alpha, params)


# --------------------------------------------------------------------------- as a representation


class MetageneCode(nn.Module):
    """The conventional map as a gene code: genes (B, G) -> standardised metagenes (B, M).

    An affine map of the genes, ``genes @ weight + bias`` (``weight`` (G, M), ``bias`` (M,)),
    so the code can be probed and differentiated like a GAN's phi(g). ``metagenes`` names the
    columns.
    """

    name = "conventional"

    def __init__(self, weight: np.ndarray, bias: np.ndarray, metagenes: Sequence[str]):
        super().__init__()
        weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        if weight.ndim != 2 or bias.shape != (weight.shape[1],) or len(metagenes) != len(bias):
            raise ValueError(
                f"weight {weight.shape}, bias {bias.shape} and {len(metagenes)} metagene names "
                "must be (G, M), (M,) and M"
            )
        self.register_buffer("weight", torch.from_numpy(weight))
        self.register_buffer("bias", torch.from_numpy(bias))
        self.metagenes = list(metagenes)

    def gene_code(self, genes: torch.Tensor) -> torch.Tensor:
        check_shape(genes, (None, self.weight.shape[0]), "genes")
        return genes @ self.weight + self.bias


@dataclass
class ConventionalFit:
    """The conventional map of a cohort's training split, read as a representation.

    ``code`` (:class:`MetageneCode`) gives every patient's linked metagenes, standardised;
    ``linked`` the metagenes in at least one significant (feature, metagene) pair; ``fallback``
    True when no pair was significant and ``code`` holds every metagene instead; ``cmap`` the
    three steps on the training patients; ``cpu_seconds`` and ``wall_seconds`` what the three
    steps and the code took (feature extraction included); ``flops`` an estimate
    (:func:`conventional_flops`).
    """

    code: MetageneCode
    linked: list[str]
    fallback: bool
    cmap: ConventionalMap
    cpu_seconds: float
    wall_seconds: float
    flops: int


def conventional_flops(patients: int, genes: int) -> int:
    """Estimated floating-point operations of step 1, which dominates the conventional map:
    the genes' correlation matrix (2 P G^2, multiply and add counted apart, as torch's flop
    counter does) and the average-linkage updates (about 3 G^2). Feature extraction and the
    Spearman tests (features x metagenes x P log P) are not counted."""
    return int(2 * patients * genes**2 + 3 * genes**2)


def _training_view(cohort: Any) -> SimpleNamespace:
    """The training patients of ``cohort`` as a cohort of their own (tumour slices re-indexed)."""
    split = np.asarray(cohort.split)
    train = np.flatnonzero(split == "train")
    if len(train) < 4:
        raise CohortError(
            f"cohort {getattr(cohort, 'path', '')}: the conventional map needs >= 4 training "
            f"patients (got {len(train)})"
        )
    new_index = np.full(len(cohort.patients), -1)
    new_index[train] = np.arange(len(train))
    owner = np.asarray(cohort.tumour_patient)
    rows = np.flatnonzero(np.isin(owner, train))
    return SimpleNamespace(
        path=getattr(cohort, "path", ""),
        patients=[cohort.patients[i] for i in train],
        genes=np.asarray(cohort.genes)[train],
        gene_names=list(cohort.gene_names),
        tumour_images=np.asarray(cohort.tumour_images)[rows],
        tumour_masks=np.asarray(cohort.tumour_masks)[rows],
        tumour_patient=new_index[owner[rows]],
    )


def conventional_representation(cohort: Any, cfg: Any, **options: Any) -> ConventionalFit:
    """The three-step map found on the training split, as a representation of every patient.

    :func:`conventional_map` runs on the training patients only (modules, image features of
    their representative slices, Spearman + BH per feature set), with ``options`` (its
    ``n_modules``, ``feature_sets``, ``alpha``, ``cut``, ``min_module_size``, ``features``).
    The metagenes with at least one significant link (q <= ``alpha``, any feature set) make
    the code; when no link survives, every metagene does and ``fallback`` is True (the map
    found nothing to select, so the representation is the whole of step 1). Each patient's
    metagene is the mean of its module's gene z-scores, with the genes' mean and standard
    deviation of the training patients (constant genes count as 0); each metagene is then
    standardised with its training mean and standard deviation. Rows follow
    ``cohort.patients``, test patients included.
    """
    cpu0, wall0 = time.process_time(), time.perf_counter()
    view = _training_view(cohort)
    cmap = conventional_map(view, cfg, **options)
    linked = [m for m in cmap.metagenes.columns if m in set(cmap.significant["metagene"])]
    fallback = not linked
    chosen = list(cmap.metagenes.columns) if fallback else linked
    x = np.asarray(view.genes, np.float64)
    mu, sd = x.mean(0), x.std(0)
    scale = np.where(sd > 1e-12, 1.0 / np.where(sd > 1e-12, sd, 1.0), 0.0)  # constant genes: 0
    col = {g: j for j, g in enumerate(view.gene_names)}
    weight = np.zeros((x.shape[1], len(chosen)))
    for k, name in enumerate(chosen):
        idx = [col[g] for g in cmap.modules[name]]
        weight[idx, k] = scale[idx] / len(idx)
    bias = -(mu @ weight)
    train_values = x @ weight + bias  # = cmap.metagenes[chosen] on the training patients
    m_mu, m_sd = train_values.mean(0), train_values.std(0)
    m_sd = np.where(m_sd > 1e-12, m_sd, 1.0)
    code = MetageneCode(weight / m_sd, (bias - m_mu) / m_sd, chosen)
    return ConventionalFit(
        code=code,
        linked=linked,
        fallback=fallback,
        cmap=cmap,
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=time.perf_counter() - wall0,
        flops=conventional_flops(len(view.patients), x.shape[1]),
    )


# --------------------------------------------------------------------------- truth (phantom)


def true_trait_links(
    truth: Any, gene_names: Sequence[str], traits: Sequence[str] = PHANTOM_TRAITS
) -> set[tuple[str, str]]:
    """The true (gene, trait) links among ``gene_names``: genes whose phantom driver is one of
    ``traits`` (``truth``: :class:`radiolib.data.phantom.PhantomTruth`)."""
    links = truth.gene_links
    sel = links["driver"].isin(list(traits)) & links["gene"].isin(set(gene_names))
    return set(zip(links.loc[sel, "gene"], links.loc[sel, "driver"], strict=True))


def module_composition(
    modules: Mapping[str, Sequence[str]], truth: Any, share: bool = False
) -> pd.DataFrame:
    """Genes of each module (rows ``M0``...) by their phantom driver (columns; ``none`` for
    genes no factor drives), with a ``genes`` total column; ``share``: the driver columns as
    fractions of the module's genes instead of counts."""
    driver = truth.gene_links.drop_duplicates("gene").set_index("gene")["driver"]
    rows = {
        m: pd.Series([driver.get(g, "none") for g in genes]).value_counts()
        for m, genes in modules.items()
    }
    table = pd.DataFrame(rows).T.fillna(0).astype(int)
    table = table[sorted(table.columns, key=lambda c: (c == "none", c))]
    total = table.sum(axis=1)
    if share:
        table = table.div(total, axis=0)
    table.insert(0, "genes", total)
    table.index.name = "module"
    return table


def score_against_truth(
    cmap: ConventionalMap,
    truth: Any,
    cohort: Any,
    feature_traits: Mapping[str, str] = PHANTOM_FEATURE_TRAITS,
) -> dict[str, dict]:
    """Link recovery of each feature set of ``cmap`` against the phantom's truth.

    Returns ``{feature_set: {true_positives, false_positives, recall, precision,
    claimed_links, true_links, significant_pairs, unscored_pairs, traits_measured,
    recall_measured_traits, per_trait}}``; ``per_trait`` is a DataFrame (index trait; columns
    true_links, claimed, true_positives, false_positives). See the module docstring for the
    definitions.
    """
    unknown = set(feature_traits.values()) - set(PHANTOM_TRAITS)
    if unknown:
        raise ValueError(f"feature_traits map to {sorted(unknown)}, not phantom traits")
    true = true_trait_links(truth, cohort.gene_names)
    if not true:
        raise ValueError("the cohort's genes hold no true trait link (is this the phantom?)")
    out: dict[str, dict] = {}
    for name, df in cmap.features.items():
        sig = cmap.significant[cmap.significant["feature_set"] == name]
        scored = sig[sig["feature"].isin(list(feature_traits))]
        claims = conventional_links(scored, cmap.modules, feature_traits)
        res = link_recovery(claims, true)
        measured = sorted({feature_traits[f] for f in df.columns if f in feature_traits})
        true_measured = {link for link in true if link[1] in measured}
        per_trait = pd.DataFrame(
            [
                {
                    "trait": t,
                    "true_links": sum(1 for link in true if link[1] == t),
                    "claimed": sum(1 for link in claims if link[1] == t),
                    "true_positives": sum(1 for link in claims & true if link[1] == t),
                    "false_positives": sum(1 for link in claims - true if link[1] == t),
                }
                for t in PHANTOM_TRAITS
            ]
        ).set_index("trait")
        out[name] = {
            **res,
            "claimed_links": len(claims),
            "true_links": len(true),
            "significant_pairs": len(sig),
            "unscored_pairs": len(sig) - len(scored),
            "traits_measured": measured,
            "recall_measured_traits": (
                len(claims & true_measured) / len(true_measured) if true_measured else np.nan
            ),
            "per_trait": per_trait,
        }
    return out


def recovery_table(scores: Mapping[str, dict], signal: float) -> pd.DataFrame:
    """Scores of :func:`score_against_truth` in the shared link-table format (columns
    :data:`MAP_LINKS_COLUMNS` plus claimed_links and true_links), approach
    ``conventional (<feature set>)``, at phantom ``signal``."""
    rows = [
        {
            "approach": f"conventional ({name})",
            "signal": float(signal),
            **{k: s[k] for k in MAP_LINKS_COLUMNS[2:]},
            "claimed_links": s["claimed_links"],
            "true_links": s["true_links"],
        }
        for name, s in scores.items()
    ]
    return pd.DataFrame(rows)


def end_to_end_link_table(
    gans: Mapping[str, Any],
    cohort: Any,
    cmap: ConventionalMap,
    truth: Any,
    signal: float,
    feature_set: str = "measured",
    feature_traits: Mapping[str, str] = PHANTOM_FEATURE_TRAITS,
) -> pd.DataFrame:
    """The end-to-end maps read as (gene, trait) links and scored like the conventional one.

    Each GAN's gene code is read with the SAME image features the conventional map correlates
    (``cmap.features[feature_set]``, per patient): a ridge probe from the code to each feature,
    and the genes whose gradient x input drives that probe most
    (:func:`radiolib.radiogenomics.trait_attribution`) are claimed for the feature's trait, as
    many genes as the truth links to that trait (precision at k). The truth only scores the
    claims. One row per GAN in the link-table format (:data:`MAP_LINKS_COLUMNS`), approach
    ``end to end (<name>)``.
    """
    features = cmap.features.get(feature_set)
    if features is None:
        raise ValueError(f"the conventional map has no {feature_set!r} features")
    columns = [f for f in features.columns if f in feature_traits]
    if not columns:
        raise ValueError(f"no feature of {feature_set!r} measures a phantom trait")
    true = true_trait_links(truth, cohort.gene_names)
    per_trait = pd.Series([t for _, t in true]).value_counts()
    rows_of = {p: i for i, p in enumerate(cohort.patients)}
    idx = [rows_of[p] for p in features.index]
    measured = features[columns].rename(columns=dict(feature_traits))
    top_k = {t: int(per_trait.get(t, 0)) for t in measured.columns}
    rows = []
    for name, gan in gans.items():
        attribution = trait_attribution(gan, cohort.genes[idx], measured)
        claims = end_to_end_links(attribution, cohort.gene_names, top_k)
        rows.append(
            {
                "approach": f"end to end ({name})",
                "signal": float(signal),
                **link_recovery(claims, true),
                "claimed_links": len(claims),
                "true_links": len(true),
            }
        )
    return pd.DataFrame(rows)


def write_map_links(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a link table (columns :data:`MAP_LINKS_COLUMNS` first, extra columns kept) as CSV,
    atomically. Raises ValueError naming missing columns."""
    missing = [c for c in MAP_LINKS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"link table lacks columns {missing}")
    rest = [c for c in table.columns if c not in MAP_LINKS_COLUMNS]
    path = Path(path)
    with atomic_write(path, "w") as fh:
        table[[*MAP_LINKS_COLUMNS, *rest]].to_csv(fh, index=False)
    return path


def side_by_side(conventional: pd.DataFrame, other: pd.DataFrame | None) -> pd.DataFrame:
    """Both link tables in one (columns :data:`MAP_LINKS_COLUMNS`), sorted by signal then
    approach; ``other`` may be None (only the conventional rows)."""
    parts = [conventional[list(MAP_LINKS_COLUMNS)]]
    if other is not None:
        parts.append(other[list(MAP_LINKS_COLUMNS)])
    both = pd.concat(parts, ignore_index=True)
    return both.sort_values(["signal", "approach"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- real reference data


def reference_dir() -> Path:
    """The real NSCLC Radiogenomics files shipped with radiolib (see PROVENANCE.md there)."""
    return Path(str(resources.files("radiolib.data") / "reference"))


@dataclass
class ReferenceData:
    """``expression`` genes (G rows) x samples (``R01-xxx``), log10 + z-scored, no NaN;
    ``semantic`` AIM annotations as read (index patient_id); ``clinical`` the TCIA table."""

    expression: pd.DataFrame
    semantic: pd.DataFrame
    clinical: pd.DataFrame
    folder: Path


def load_reference(folder: str | Path | None = None) -> ReferenceData:
    """Read the vendored real data (default :func:`reference_dir`)."""
    folder = Path(folder) if folder is not None else reference_dir()
    path = folder / REFERENCE_EXPRESSION
    if not path.is_file():
        raise CohortError(f"reference expression table {path} does not exist")
    expr = pd.read_csv(path, index_col=0)
    bad = [c for c in expr.columns if not tables.PATIENT_ID_RE.match(str(c))]
    if bad:
        raise CohortError(f"{path}: columns {bad[:3]} are not patient ids like 'R01-001'")
    if expr.isna().to_numpy().any():
        i, j = np.argwhere(expr.isna().to_numpy())[0]
        raise CohortError(
            f"{path}: gene {expr.index[i]!r}, sample {expr.columns[j]} is missing; the reference "
            "table holds only complete genes"
        )
    aim = folder / REFERENCE_AIM
    if not aim.is_dir():
        raise CohortError(f"reference AIM folder {aim} does not exist")
    semantic = tables.read_aim_folder(aim)
    clinical = tables.read_clinical(folder / REFERENCE_CLINICAL)
    return ReferenceData(expr.astype(np.float64), semantic, clinical, folder)


def clinical_labels(clinical: pd.DataFrame) -> pd.DataFrame:
    """Numeric clinical labels (:data:`CLINICAL_LABELS`), one row per patient (same index).

    Unknown / not collected values become NaN; a value the mapping does not know raises
    CohortError naming the patient and column.
    """
    out = {}
    for label, (col, mapping) in CLINICAL_LABELS.items():
        if col not in clinical.columns:
            raise CohortError(f"clinical table lacks column {col!r} (for label {label!r})")
        raw = clinical[col]
        text = raw.astype("string").str.strip().str.lower()
        missing = text.isna() | text.isin(list(_MISSING))
        if mapping is None:
            values = pd.to_numeric(raw.where(~missing), errors="coerce").astype(float)
            bad = values.isna() & ~missing
        else:
            values = text.map(mapping).astype(float)
            bad = ~missing & ~text.isin(list(mapping))
        if bad.any():
            pid = bad.idxmax()
            raise CohortError(
                f"clinical label {label!r} of patient {pid}: {col!r} = {raw[pid]!r} is not "
                f"{'a number' if mapping is None else 'one of ' + str(sorted(mapping))}"
            )
        out[label] = values.where(~missing)
    return pd.DataFrame(out, index=clinical.index)


def informative_features(df: pd.DataFrame, min_minority: int = MIN_MINORITY) -> pd.DataFrame:
    """Columns worth a test: at least two distinct values, a 0/1-like column (two values) with
    at least ``min_minority`` patients in its rarer group, any other at least
    ``2 * min_minority`` non-missing values."""
    keep = []
    for c in df.columns:
        v = df[c].dropna()
        counts = v.value_counts()
        if len(counts) < 2:
            continue
        if len(counts) == 2 and counts.min() < min_minority:
            continue
        if len(v) < 2 * min_minority:
            continue
        keep.append(c)
    return df[keep]


@dataclass
class ReferenceMap(ConventionalMap):
    """The conventional map on real data.

    As :class:`ConventionalMap`, with ``metagenes`` (P, M) over the RNA-seq patients and
    ``features`` ``{"semantic": (P_aim, F_s), "clinical": (P, F_c)}`` restricted to RNA-seq
    patients and informative columns; ``counts`` of patients and genes.
    """

    counts: dict = field(default_factory=dict)


def real_reference_map(
    folder: str | Path | None = None,
    n_modules: int | None = None,
    alpha: float = ALPHA,
    cut: float = MODULE_CUT,
    min_module_size: int = MIN_MODULE_SIZE,
    min_minority: int = MIN_MINORITY,
) -> ReferenceMap:
    """The three conventional steps on the real reference data.

    Metagenes of the complete genes over all RNA-seq samples; features: the AIM semantic
    annotations (:func:`radiolib.data.tables.semantic_numeric`) and the clinical labels
    (:func:`clinical_labels`) of the RNA-seq patients, informative columns only
    (:func:`informative_features`); Spearman + BH, one family per source.
    """
    ref = load_reference(folder)
    samples = list(ref.expression.columns)
    mg, modules = module_metagenes(
        ref.expression.T.to_numpy(),
        list(ref.expression.index),
        samples,
        n_modules,
        cut,
        min_module_size,
    )
    semantic = tables.semantic_numeric(ref.semantic)
    semantic = semantic.loc[semantic.index.isin(samples)]
    clinical = clinical_labels(ref.clinical)
    clinical = clinical.loc[clinical.index.isin(samples)]
    features = {
        "semantic": informative_features(semantic, min_minority),
        "clinical": informative_features(clinical, min_minority),
    }
    map_df, sig = correlate(features, mg, alpha)
    counts = {
        "genes": int(ref.expression.shape[0]),
        "rna_seq_patients": len(samples),
        "aim_patients": len(ref.semantic),
        "rna_seq_and_aim": int(ref.semantic.index.isin(samples).sum()),
        "rna_seq_and_clinical": int(ref.clinical.index.isin(samples).sum()),
        "metagenes": int(mg.shape[1]),
        "genes_in_modules": int(sum(len(g) for g in modules.values())),
        "semantic_features": int(features["semantic"].shape[1]),
        "clinical_labels": int(features["clinical"].shape[1]),
    }
    return ReferenceMap(mg, modules, features, map_df, sig, alpha, counts=counts)


# --------------------------------------------------------------------------- confounding check


def partial_spearman(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Spearman correlation of ``a`` and ``b`` (n,) with ``c`` (n,) held fixed, and its p-value.

    The first-order partial correlation of the ranks: (r_ab - r_ac r_bc) /
    sqrt((1 - r_ac^2)(1 - r_bc^2)), tested with t = r sqrt((n - 3) / (1 - r^2)) on n - 3
    degrees of freedom. Rows where any of the three is NaN are left out; NaN when fewer than 5
    rows remain or a variable is constant.
    """
    x = np.column_stack([np.asarray(v, dtype=np.float64).ravel() for v in (a, b, c)])
    x = x[np.all(np.isfinite(x), axis=1)]
    n = len(x)
    if n < 5 or np.any(np.ptp(x, axis=0) == 0):
        return float("nan"), float("nan")
    r = np.corrcoef(stats.rankdata(x, axis=0), rowvar=False)
    r_ab, r_ac, r_bc = r[0, 1], r[0, 2], r[1, 2]
    denom = np.sqrt((1 - r_ac**2) * (1 - r_bc**2))
    if denom < 1e-12:
        return float("nan"), float("nan")
    rho = float(np.clip((r_ab - r_ac * r_bc) / denom, -1.0, 1.0))
    if abs(rho) >= 1.0:
        return rho, 0.0
    t = rho * np.sqrt((n - 3) / (1 - rho**2))
    return rho, float(2 * stats.t.sf(abs(t), n - 3))


def patient_number(ids: Sequence[str]) -> np.ndarray:
    """The number of each patient id (``R01-023`` -> 23): the order of enrolment. (P,) float"""
    out = []
    for pid in ids:
        if not tables.PATIENT_ID_RE.match(str(pid)):
            raise CohortError(f"patient id {pid!r} is not like 'R01-023'")
        out.append(float(str(pid).rsplit("-", 1)[1]))
    return np.array(out)


def enrolment_check(rmap: ReferenceMap) -> pd.DataFrame:
    """Whether the significant links of ``rmap`` are carried by the order of enrolment.

    Patients were enrolled, annotated and sequenced over years; a metagene and a feature that
    both drift with the patient number correlate without any biology between them. For each
    significant (feature, metagene) link: Spearman rho of the feature and of the metagene with
    the patient number, and the partial Spearman rho of the link with the patient number held
    fixed (:func:`partial_spearman`) with its p-value.
    """
    rows = []
    for r in rmap.significant.itertuples():
        feat = rmap.features[r.feature_set][r.feature]
        common = feat.index.intersection(rmap.metagenes.index)
        f = feat.loc[common].to_numpy(np.float64)
        m = rmap.metagenes.loc[common, r.metagene].to_numpy(np.float64)
        order = patient_number(list(common))
        ok = np.isfinite(f) & np.isfinite(m)
        pr, pp = partial_spearman(f, m, order)
        rows.append(
            {
                "feature_set": r.feature_set,
                "feature": r.feature,
                "metagene": r.metagene,
                "rho": r.rho,
                "q": r.q,
                "feature_vs_order": float(stats.spearmanr(f[ok], order[ok])[0]),
                "metagene_vs_order": float(stats.spearmanr(m[ok], order[ok])[0]),
                "partial_rho": pr,
                "partial_p": pp,
            }
        )
    cols = [
        "feature_set",
        "feature",
        "metagene",
        "rho",
        "q",
        "feature_vs_order",
        "metagene_vs_order",
        "partial_rho",
        "partial_p",
    ]
    return pd.DataFrame(rows, columns=cols)
