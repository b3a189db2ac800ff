"""The conventional radiogenomic map: three independent steps, and the map as a representation.

The paper's introduction describes how radiogenomic maps are usually made, in three independent
steps (e.g. Zhou et al. 2018):

1. metagenes (:func:`metagenes`, :func:`module_metagenes`): genes are clustered hierarchically
   (distance 1 - Pearson r, average linkage). By default the tree is cut at ``cut`` = 0.6, i.e.
   a module's genes correlate 0.4 with each other on average, and only modules of at least
   ``min_module_size`` genes become metagenes (the rest stay unassigned, like WGCNA's grey
   module); ``n_modules`` instead cuts the tree into that many clusters and keeps them all. A
   metagene is the mean of its genes' z-scores. Modules are named ``M0``, ``M1``, ... from the
   largest.
2. image features (:func:`image_features`): on the curated cohort, each patient's
   representative tumour slice (largest tumour area, :func:`representative_slices`) gives
   pyradiomics first-order, 2-D shape and GLCM features (``"radiomics"``,
   :func:`radiomic_features`) and the three traits of :func:`radiolib.metrics.measure_traits`
   (``"measured"``). On real data the features are the AIM semantic annotations and clinical
   labels (:mod:`radiolib.radiogenomics.reference`).
3. Spearman rho of every feature with every metagene (:func:`spearman_map`), Benjamini-Hochberg
   q-values within each feature set (each set is one conventional analysis, one FDR family;
   :func:`correlate`, :func:`significant_links`).

:func:`conventional_map` chains the three on a curated cohort. :func:`conventional_representation`
finds the map on the training split and reads it as a gene code (:class:`MetageneCode`), so it
is scored like a GAN's phi(g). How its links compare with the phantom's truth is in
:mod:`radiolib.radiogenomics.ground_truth`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from torch import nn

from radiolib import metrics
from radiolib.errors import CohortError
from radiolib.models.blocks import check_shape
from radiolib.radiogenomics.codes import as_2d, first_appearance

if TYPE_CHECKING:
    from radiolib.config import Profile
    from radiolib.data.curated import CuratedCohort

MODULE_CUT = 0.6  # tree cut (1 - r): a module's genes correlate 0.4 on average
MIN_MODULE_SIZE = 10  # smaller clusters are not metagenes
ALPHA = 0.05  # FDR level
FEATURE_SETS = ("radiomics", "measured")


# --------------------------------------------------------------------------- step 1: metagenes


def metagenes(
    expr: np.ndarray,
    n_modules: int | None = None,
    distance_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: co-expression modules and their metagenes.

    ``expr`` (P, G) expression (samples as rows). Genes are clustered hierarchically with
    distance 1 - Pearson r and average linkage, cut into ``n_modules`` clusters or at
    ``distance_threshold`` (give exactly one). Returns the metagene matrix (P, M), each column
    the mean of its module's per-gene z-scores, and the module label of each gene (G,) in
    0..M-1, numbered in gene order. Constant genes correlate 0 with everything. Deterministic.
    """
    x = as_2d(expr, "expr")
    if (n_modules is None) == (distance_threshold is None):
        raise ValueError("give exactly one of n_modules and distance_threshold")
    p, g = x.shape
    if p < 3 or g < 2:
        raise ValueError(f"metagenes need >= 3 samples and >= 2 genes (got {x.shape})")
    sd = x.std(0)
    z = np.where(sd > 1e-12, (x - x.mean(0)) / np.where(sd > 1e-12, sd, 1.0), 0.0)
    corr = (z.T @ z) / p  # Pearson r of the genes (G, G)
    np.fill_diagonal(corr, 1.0)
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    tree = hierarchy.linkage(squareform(dist, checks=False), method="average")
    if n_modules is not None:
        if not 1 <= n_modules <= g:
            raise ValueError(f"n_modules must be between 1 and {g} (got {n_modules})")
        labels = hierarchy.fcluster(tree, t=n_modules, criterion="maxclust")
    else:
        labels = hierarchy.fcluster(tree, t=distance_threshold, criterion="distance")
    labels = first_appearance(labels)
    matrix = np.stack([z[:, labels == k].mean(1) for k in range(labels.max() + 1)], axis=1)
    return matrix, labels


def metagene_frame(matrix: np.ndarray, index: Sequence) -> pd.DataFrame:
    """Metagene matrix (P, M) as a DataFrame indexed by patient, columns ``M0``, ``M1``, ..."""
    return pd.DataFrame(
        matrix,
        index=pd.Index(index, name="patient_id"),
        columns=[f"M{k}" for k in range(matrix.shape[1])],
    )


def module_genes(labels: np.ndarray, gene_names: Sequence[str]) -> dict[str, list[str]]:
    """``{"M0": [genes...], ...}`` from the module label of each gene (G,)."""
    if len(labels) != len(gene_names):
        raise ValueError(f"{len(labels)} labels but {len(gene_names)} gene names")
    out: dict[str, list[str]] = {}
    for lab, name in zip(labels, gene_names, strict=True):
        out.setdefault(f"M{int(lab)}", []).append(name)
    return out


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


def representative_slices(
    images: np.ndarray, masks: np.ndarray, patient: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each patient's slice with the largest tumour area (the usual 2-D radiomics choice).

    ``images``, ``masks`` (N, S, S), ``patient`` (N,) -> images (P', S, S), masks (P', S, S),
    patient ids (P',) in ascending order.
    """
    patient = np.asarray(patient)
    area = (np.asarray(masks) > 0.5).sum((1, 2))
    ids = np.unique(patient)
    pick = np.array([np.flatnonzero(patient == p)[np.argmax(area[patient == p])] for p in ids])
    return np.asarray(images)[pick], np.asarray(masks)[pick], ids


def radiomic_features(
    images: np.ndarray,
    masks: np.ndarray,
    index: Sequence | None = None,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    voi_mm: float = 60.0,
    bin_width: float = 25.0,
) -> pd.DataFrame:
    """Step 2: pyradiomics features of 2-D tumour slices (N, S, S) in [0, 1] with masks.

    One slice per patient (see :func:`representative_slices`): the curated data are 2-D
    slices of a fixed VOI, so 2-D features are what both maps can share. The window is undone to
    HU and pixels are ``voi_mm / S`` mm, so ``bin_width`` is in HU (25, pyradiomics' default).
    Feature classes: first order, 2-D shape, GLCM, with ``force2D``. Columns are pyradiomics'
    names without the ``original_`` prefix; rows follow ``index`` (default 0..N-1).
    """
    import SimpleITK as sitk
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    images, masks = np.asarray(images, np.float64), np.asarray(masks) > 0.5
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"expected images and masks (N, S, S), got {images.shape}, {masks.shape}")
    index = list(range(len(images))) if index is None else list(index)
    if len(index) != len(images):
        raise ValueError(f"{len(index)} index labels for {len(images)} slices")
    spacing = voi_mm / images.shape[1]
    extractor = featureextractor.RadiomicsFeatureExtractor(
        force2D=True, force2Ddimension=0, binWidth=bin_width, label=1
    )
    extractor.disableAllFeatures()
    for name in ("firstorder", "shape2D", "glcm"):
        extractor.enableFeatureClassByName(name)
    lo, hi = hu_window
    rows = []
    for key, img, m in zip(index, images, masks, strict=True):
        if m.sum() < 2:
            raise CohortError(
                f"slice of {key}: tumour mask has {int(m.sum())} pixels; radiomics needs at least 2"
            )
        im = sitk.GetImageFromArray((lo + img * (hi - lo))[None].astype(np.float32))
        im.SetSpacing((spacing, spacing, spacing))
        mk = sitk.GetImageFromArray(m[None].astype(np.uint8))
        mk.CopyInformation(im)
        try:
            result = extractor.execute(im, mk)
        except (ValueError, RuntimeError) as err:
            raise CohortError(f"slice of {key}: pyradiomics failed: {err}") from err
        rows.append(
            {
                k.removeprefix("original_"): float(v)
                for k, v in result.items()
                if k.startswith("original_")
            }
        )
    return pd.DataFrame(rows, index=pd.Index(index, name="patient_id"))


def image_features(
    cohort: CuratedCohort, cfg: Profile, feature_sets: Sequence[str] = FEATURE_SETS
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
    cur = cfg.curation
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
            )[list(metrics.MEASURED_TRAITS)]
            df.index.name = "patient_id"
        varies = [c for c in df.columns if df[c].nunique(dropna=True) > 1]
        out[name] = df[varies]
    return out


# --------------------------------------------------------------------------- step 3: the map


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (same shape as ``p``); NaN p-values stay NaN and are not
    counted among the tests. q_(i) = min_{j >= i} p_(j) m / j, capped at 1
    (``scipy.stats.false_discovery_control`` on the finite p-values)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def spearman_map(
    features_df: pd.DataFrame, metagenes_df: pd.DataFrame, min_n: int = 4
) -> pd.DataFrame:
    """Step 3: Spearman rho of every image feature with every metagene, with BH q-values.

    Rows are matched on the index (patients); each pair uses the patients where both are
    present (NaN left out: semantic annotations can be missing). Features or metagenes constant
    over the shared patients, or pairs with fewer than ``min_n`` patients, get NaN and are not
    counted in the FDR. Returns a long DataFrame with columns ``feature``, ``metagene``,
    ``rho``, ``p``, ``n``, ``q``.
    """
    common = features_df.index.intersection(metagenes_df.index)
    if len(common) < min_n:
        raise ValueError(
            f"only {len(common)} patients shared by features and metagenes "
            f"(need >= {min_n}); check the patient ids of both"
        )
    for name, df in (("features", features_df), ("metagenes", metagenes_df)):
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise ValueError(f"{name} columns {bad} are not numeric; encode them first")
    f = features_df.loc[common].to_numpy(np.float64)
    g = metagenes_df.loc[common].to_numpy(np.float64)
    rows = []
    for i, fname in enumerate(features_df.columns):
        for j, gname in enumerate(metagenes_df.columns):
            ok = np.isfinite(f[:, i]) & np.isfinite(g[:, j])
            a, b = f[ok, i], g[ok, j]
            if ok.sum() < min_n or np.ptp(a) == 0 or np.ptp(b) == 0:
                rho, p = np.nan, np.nan
            else:
                rho, p = stats.spearmanr(a, b)
            rows.append(
                {
                    "feature": fname,
                    "metagene": gname,
                    "rho": float(rho),
                    "p": float(p),
                    "n": int(ok.sum()),
                }
            )
    out = pd.DataFrame(rows)
    out["q"] = benjamini_hochberg(out["p"].to_numpy())
    return out


def significant_links(map_df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Rows of a :func:`spearman_map` with q <= ``alpha``, strongest first."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    sig = map_df[map_df["q"] <= alpha]
    return sig.sort_values(["q", "p"]).reset_index(drop=True)


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
    return map_df, significant_links(map_df, alpha)


def map_matrix(
    map_df: pd.DataFrame, value: str = "rho", feature_set: str | None = None
) -> pd.DataFrame:
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
    cohort: CuratedCohort,
    cfg: Profile,
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


def _training_view(cohort: CuratedCohort) -> SimpleNamespace:
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


def conventional_representation(
    cohort: CuratedCohort, cfg: Profile, **options: Any
) -> ConventionalFit:
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
