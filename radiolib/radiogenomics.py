"""The radiogenomic map: the paper's Fig. 4 measured, and the conventional three-step map beside it.

End-to-end (the paper): a trained GAN's gene code phi(g) is a representation of each patient's
expression. Fig. 4 shows its t-SNE coloured by "rough clusters from the proposed coding method
... formed according to distance"; here the clusters are also scored against known subtypes
(:func:`cluster_agreement`), the codes are probed for the image traits they carry
(:func:`linear_probe_r2`, :func:`probe_table`), and gradients say which genes the code uses
(:func:`gene_attribution`, :func:`trait_attribution`).

Conventional (the introduction's three steps, e.g. Zhou et al. 2018):

1. metagenes: hierarchical clustering of co-expressed genes (distance 1 - Pearson r, average
   linkage), each module averaged (:func:`metagenes`);
2. image features: pyradiomics first-order, 2-D shape and GLCM features of each patient's largest
   tumour slice (:func:`radiomic_features`), or semantic features read from AIM;
3. Spearman correlation of every feature with every metagene, Benjamini-Hochberg FDR
   (:func:`spearman_map`, :func:`significant_links`).

On the synthetic cohort the truth is known, and both maps are read as sets of (gene, trait)
links (:func:`conventional_links`, :func:`end_to_end_links`) and scored by
:func:`link_recovery`.

A study run (notebook 04): :func:`score_representations` gives every number of the map for raw
genes and each trained model's code on one curated cohort; :func:`signal_sweep` repeats it on
phantoms whose genes drive the image more or less strongly; :func:`interpolate_genes`
synthesises tumours along the line between two patients' expression vectors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.linear_model import RidgeCV
from sklearn.manifold import TSNE
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data.phantom import TRAITS
from .errors import CohortError

RIDGE_ALPHAS = np.logspace(-3, 3, 13)

# pyradiomics feature (prefix "original_" dropped) -> the trait it measures; used to read the
# conventional map as gene -> trait links.
RADIOMIC_TRAITS = {
    "shape2D_MaximumDiameter": "diameter_mm",
    "shape2D_MajorAxisLength": "diameter_mm",
    "shape2D_PixelSurface": "diameter_mm",
    "firstorder_Mean": "attenuation_hu",
    "firstorder_Median": "attenuation_hu",
}


# --------------------------------------------------------------------------- gene codes


def _as_2d(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (P, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf values")
    return x


@contextlib.contextmanager
def _eval_mode(gan: Any) -> Iterator[None]:
    """Evaluate ``gan`` in eval mode (batch norm on running statistics), then restore it."""
    was_training = bool(getattr(gan, "training", False))
    if hasattr(gan, "eval"):
        gan.eval()
    try:
        yield
    finally:
        if was_training and hasattr(gan, "train"):
            gan.train()


@torch.no_grad()
def gene_codes(
    gan: Any, genes: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """The gene code phi(g) (P, code_dim) of expression vectors ``genes`` (P, G).

    Raises ``ValueError`` for a model without a gene code (the inpainting GAN).
    """
    g = torch.as_tensor(_as_2d(genes, "genes"), dtype=torch.float32)
    out = []
    with _eval_mode(gan):
        for s in range(0, len(g), batch_size):
            code = gan.gene_code(g[s : s + batch_size].to(device))
            if code is None:
                raise ValueError(f"model {getattr(gan, 'name', gan)!r} has no gene code")
            out.append(code.float().cpu().numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------- embeddings, clusters


def embed_tsne(x: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (P, 2) of a representation (P, D); the same seed gives the same map.

    t-SNE needs perplexity well below P; a perplexity of P / 3 or more is lowered to
    (P - 1) / 3 with a warning. PCA initialisation keeps the layout stable across runs.
    """
    x = _as_2d(x, "x")
    p = len(x)
    if p < 4:
        raise ValueError(f"t-SNE needs at least 4 points (got {p})")
    if perplexity >= p / 3:
        new = max((p - 1) / 3.0, 1.0)
        warnings.warn(
            f"t-SNE perplexity {perplexity} is too large for {p} points; using {new:.2f}",
            stacklevel=2,
        )
        perplexity = new
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        learning_rate="auto",
        max_iter=1000,
    )
    return tsne.fit_transform(x)


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Relabel 0, 1, ... in order of first appearance (stable colours across runs)."""
    _, first = np.unique(labels, return_index=True)
    order = np.asarray(labels)[np.sort(first)]
    lookup = {old: new for new, old in enumerate(order)}
    return np.array([lookup[v] for v in labels], dtype=int)


def cluster(x: np.ndarray, k: int, seed: int = 0, method: str = "ward") -> np.ndarray:
    """Cluster labels (P,) in 0..k-1 of a representation (P, D).

    ``method``: ``"ward"`` (agglomerative, Euclidean distance, deterministic: the paper's
    "clusters formed according to distance") or ``"kmeans"`` (10 restarts from ``seed``).
    Labels are numbered in order of first appearance.
    """
    x = _as_2d(x, "x")
    if not 2 <= k <= len(x):
        raise ValueError(f"k must be between 2 and the number of points {len(x)} (got {k})")
    if method == "ward":
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    elif method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    else:
        raise ValueError(f"method must be 'ward' or 'kmeans' (got {method!r})")
    return _first_appearance(labels)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean) of ``labels`` (P,) on ``x`` (P, D); NaN with < 2 clusters."""
    x = _as_2d(x, "x")
    n_lab = len(np.unique(labels))
    if n_lab < 2 or n_lab >= len(x):
        return float("nan")
    return float(silhouette_score(x, labels))


def cluster_agreement(labels: np.ndarray, truth: np.ndarray) -> dict:
    """``{"ari", "nmi"}`` of cluster ``labels`` (P,) against ``truth`` (P,) (e.g. subtypes)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} must be equal (P,)")
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
    }


# --------------------------------------------------------------------------- probes


def linear_probe_r2(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of a ridge probe predicting ``y`` (P,) from ``x`` (P, D).

    Standardisation and the ridge penalty (RidgeCV over 1e-3..1e3, chosen by efficient
    leave-one-out inside each training fold) are fitted inside the folds. R^2 is computed once
    on the pooled out-of-fold predictions, steadier than averaging fold scores when P is small.
    Rows where ``y`` is NaN are left out. 1 means fully linear in x; <= 0 means no better than
    the mean.
    """
    x = _as_2d(x, "x")
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows, y has {len(y)}")
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    folds = min(folds, len(y))
    if len(y) < 4 or folds < 2:
        raise ValueError(f"a probe needs at least 4 finite targets (got {len(y)})")
    if np.ptp(y) == 0:
        return float("nan")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(model, x, y, cv=cv)
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def probe_table(
    representations: Mapping[str, np.ndarray],
    traits_df: pd.DataFrame,
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Probe R^2 of each representation (P, D_r) for each trait: index representation, columns
    the traits. Rows of every representation follow ``traits_df``'s row order (P rows).
    Trait columns must be numeric (encode categories first)."""
    bad = [c for c in traits_df.columns if not pd.api.types.is_numeric_dtype(traits_df[c])]
    if bad:
        raise ValueError(f"trait columns {bad} are not numeric; encode or drop them")
    out = {}
    for name, x in representations.items():
        if len(x) != len(traits_df):
            raise ValueError(
                f"representation {name!r} has {len(x)} rows, traits have {len(traits_df)}"
            )
        out[name] = {
            t: linear_probe_r2(x, traits_df[t].to_numpy(), folds, seed) for t in traits_df.columns
        }
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "representation"
    return table


# --------------------------------------------------------------------------- attribution


def gene_attribution(gan: Any, genes: np.ndarray, target: str = "norm") -> np.ndarray:
    """Mean |gradient x input| (G,) of the gene code w.r.t. the input genes (P, G).

    ``target``: ``"norm"`` differentiates each patient's code norm ||phi(g)||; ``"variance"``
    differentiates the summed variance of the code dimensions across the P patients (what
    spreads patients apart in the code). Gradients flow through ``gan.gene_code`` by autograd;
    parameters are not changed.
    """
    g = torch.as_tensor(_as_2d(genes, "genes"), dtype=torch.float32).requires_grad_(True)
    with _eval_mode(gan):
        code = gan.gene_code(g)
    if code is None:
        raise ValueError(f"model {getattr(gan, 'name', gan)!r} has no gene code")
    if target == "norm":
        value = code.norm(dim=1).sum()
    elif target == "variance":
        if len(g) < 2:
            raise ValueError("target 'variance' needs at least 2 patients")
        value = code.var(dim=0).sum()
    else:
        raise ValueError(f"target must be 'norm' or 'variance' (got {target!r})")
    (grad,) = torch.autograd.grad(value, g)
    return (grad * g).abs().mean(0).detach().numpy().astype(np.float64)


def trait_attribution(gan: Any, genes: np.ndarray, traits_df: pd.DataFrame) -> pd.DataFrame:
    """Which genes the code uses for each trait: (G, T) mean |gradient x input|.

    For each trait (column of ``traits_df``, rows = patients of ``genes`` (P, G)) a ridge probe
    (RidgeCV) is fitted from the standardised code to the trait; the attribution is that of the
    probe's prediction w . (phi(g) - mu) / sigma w.r.t. the genes. Rows: gene index 0..G-1.
    """
    g_np = _as_2d(genes, "genes")
    if len(traits_df) != len(g_np):
        raise ValueError(f"genes has {len(g_np)} rows, traits have {len(traits_df)}")
    codes = gene_codes(gan, g_np)
    mu, sd = codes.mean(0), codes.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    g = torch.as_tensor(g_np, dtype=torch.float32).requires_grad_(True)
    with _eval_mode(gan):
        raw = gan.gene_code(g)
    code = (raw - torch.as_tensor(mu, dtype=torch.float32)) / torch.as_tensor(sd).float()
    out = {}
    for trait in traits_df.columns:
        y = traits_df[trait].to_numpy(np.float64)
        ok = np.isfinite(y)
        if ok.sum() < 4:
            raise ValueError(f"trait {trait!r} has only {ok.sum()} finite values (need >= 4)")
        probe = RidgeCV(alphas=RIDGE_ALPHAS).fit((codes[ok] - mu) / sd, y[ok])
        w = torch.as_tensor(probe.coef_, dtype=torch.float32)
        (grad,) = torch.autograd.grad((code @ w).sum(), g, retain_graph=True)
        out[trait] = (grad * g).abs()[torch.as_tensor(ok)].mean(0).detach().numpy()
    return pd.DataFrame(out)


def attribution_scores(attribution: np.ndarray, linked_genes_mask: np.ndarray) -> dict:
    """How well an attribution (G,) ranks the truly linked genes (G,) bool first.

    ``precision_at_k``: share of linked genes among the top k, k = number of linked genes;
    ``auroc``: probability a linked gene outranks an unlinked one.
    """
    a = np.asarray(attribution, dtype=np.float64).ravel()
    linked = np.asarray(linked_genes_mask, dtype=bool).ravel()
    if a.shape != linked.shape:
        raise ValueError(f"attribution {a.shape} and mask {linked.shape} differ")
    k = int(linked.sum())
    if k == 0 or k == len(a):
        raise ValueError(f"need both linked and unlinked genes (linked: {k} of {len(a)})")
    top = np.argsort(-a, kind="stable")[:k]
    return {
        "precision_at_k": float(linked[top].mean()),
        "auroc": float(roc_auc_score(linked, a)),
        "k": k,
    }


# --------------------------------------------------------------------------- conventional map


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
    x = _as_2d(expr, "expr")
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
    labels = _first_appearance(labels)
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


def significant_links(map_df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Rows of a :func:`spearman_map` with q <= ``alpha``, strongest first."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    sig = map_df[map_df["q"] <= alpha]
    return sig.sort_values(["q", "p"]).reset_index(drop=True)


# --------------------------------------------------------------------------- links and truth


def conventional_links(
    links_df: pd.DataFrame,
    modules: Mapping[str, Sequence[str]],
    feature_traits: Mapping[str, str] | None = None,
) -> set[tuple[str, str]]:
    """The conventional map read as (gene, trait) links.

    A significant (feature, metagene) pair (rows of :func:`significant_links`) links every gene
    of that metagene's module (``modules``: :func:`module_genes`) to the trait the feature
    measures (``feature_traits``; a feature not in it is taken to be a trait itself, as when the
    measured traits of :func:`radiolib.metrics.measure_traits` serve as image features).
    """
    feature_traits = feature_traits or {}
    found = set()
    for row in links_df.itertuples():
        trait = feature_traits.get(row.feature, row.feature)
        if row.metagene not in modules:
            raise ValueError(f"metagene {row.metagene!r} is not among modules {list(modules)[:5]}")
        found.update((gene, trait) for gene in modules[row.metagene])
    return found


def end_to_end_links(
    attribution_df: pd.DataFrame,
    gene_names: Sequence[str],
    top_k: int | Mapping[str, int],
) -> set[tuple[str, str]]:
    """The end-to-end map read as (gene, trait) links: for each trait (column of
    :func:`trait_attribution`, rows genes), its ``top_k`` genes by attribution. ``top_k`` is one
    number or one per trait (e.g. the conventional map's number of linked genes, so that both
    maps claim as many links)."""
    if len(attribution_df) != len(gene_names):
        raise ValueError(f"{len(attribution_df)} attribution rows, {len(gene_names)} gene names")
    names = np.asarray(gene_names)
    found = set()
    for trait in attribution_df.columns:
        k = top_k[trait] if isinstance(top_k, Mapping) else top_k
        if k <= 0:
            continue
        top = np.argsort(-attribution_df[trait].to_numpy(), kind="stable")[:k]
        found.update((str(names[i]), trait) for i in top)
    return found


def link_recovery(found_links: Iterable[tuple], true_links: Iterable[tuple]) -> dict:
    """Score claimed links against the true ones (both iterables of hashable pairs, e.g.
    (gene, trait)): ``true_positives``, ``false_positives``, ``recall`` (of the truth),
    ``precision`` (of the claims; NaN when nothing is claimed)."""
    found, truth = set(found_links), set(true_links)
    if not truth:
        raise ValueError("true_links is empty: nothing to recover")
    tp = len(found & truth)
    return {
        "true_positives": tp,
        "false_positives": len(found - truth),
        "recall": tp / len(truth),
        "precision": tp / len(found) if found else float("nan"),
    }


# --------------------------------------------------------------------------- scoring a study run

RAW = "raw genes"  # name of the representation that is the expression vector itself
IMAGE_DRIVERS = ("subtype", *TRAITS)  # gene-module drivers that shape the tumour image


def representations(cohort: Any, gans: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each curated patient's representations: ``{"raw genes": (P, G), model: phi(g) (P, D)}``
    for every model of ``gans`` (name -> trained GAN), rows in ``cohort.patients`` order."""
    genes = _as_2d(cohort.genes, "cohort.genes")
    out = {RAW: genes}
    for name, gan in gans.items():
        if name == RAW:
            raise ValueError(f"a model may not be called {RAW!r}")
        out[name] = gene_codes(gan, genes)
    return out


def truth_table(truth: Any, patients: Sequence[str]) -> pd.DataFrame:
    """The hidden subtype and traits of ``patients`` (rows in that order) from a
    :class:`radiolib.data.phantom.PhantomTruth`: columns ``subtype`` and the TRAITS."""
    missing = [p for p in patients if p not in truth.patients.index]
    if missing:
        raise CohortError(
            f"patients {missing[:5]} of the cohort are not in the phantom's ground truth "
            f"(ground_truth/truth.json); was the cohort curated from another phantom?"
        )
    return truth.patients.loc[list(patients), ["subtype", *TRAITS]].copy()


def linked_genes(
    truth: Any, gene_names: Sequence[str], drivers: Iterable[str] = IMAGE_DRIVERS
) -> np.ndarray:
    """(G,) bool: which of ``gene_names`` the phantom's truth links to one of ``drivers``
    (default: the subtype and the image traits; nuisance modules are not linked)."""
    drivers = set(drivers)
    links = truth.gene_links
    linked = set(links.loc[links["driver"].isin(drivers), "gene"])
    return np.array([g in linked for g in gene_names], dtype=bool)


def cluster_examples(x: np.ndarray, labels: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """The ``n`` members of each cluster nearest its centroid in ``x`` (P, D): ``{label:
    indices}`` (nearest first; fewer when the cluster is smaller)."""
    x = _as_2d(x, "x")
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"labels {labels.shape} must be ({len(x)},)")
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    out = {}
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        dist = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        out[int(lab)] = members[np.argsort(dist, kind="stable")[:n]]
    return out


def _auroc_or_nan(attribution: np.ndarray, mask: np.ndarray) -> dict:
    if 0 < mask.sum() < len(mask):
        return attribution_scores(attribution, mask)
    return {"precision_at_k": float("nan"), "auroc": float("nan"), "k": int(mask.sum())}


def score_representations(
    cohort: Any, gans: Mapping[str, Any], truth: Any | None, cfg: Any, seed: int = 0
) -> pd.DataFrame:
    """The radiogenomic map's numbers, one row per representation (raw genes, then each model's
    phi(g); index ``representation``).

    Always: ``silhouette`` of the representation's own clusters (``cfg.evaluation.clusters``,
    Ward). With the phantom's ``truth`` (None for real data) also: ``ari`` and ``nmi`` of those
    clusters against the hidden subtypes, ``silhouette_subtypes`` (how far apart the true
    subtypes lie), cross-validated linear probe R^2 of every trait (``r2_<trait>``) and their
    mean ``mean_r2``, and for the gene codes the attribution scores: ``attribution_auroc`` and
    ``attribution_precision_at_k`` of :func:`gene_attribution` (target ``"variance"``) against
    the genes linked to the subtype or a trait, and ``trait_attribution_auroc``, the mean over
    traits of the AUROC of :func:`trait_attribution` against that trait's own genes (NaN for
    the raw genes, which have no attribution).
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
    any_link = linked_genes(truth, cohort.gene_names)
    for name, x in reps.items():
        row = rows[name]
        row.update(cluster_agreement(labels[name], subtypes))
        row["silhouette_subtypes"] = silhouette(x, subtypes)
        row.update({f"r2_{t}": float(probes.loc[name, t]) for t in TRAITS})
        row["mean_r2"] = float(np.nanmean(probes.loc[name].to_numpy(float)))
        row.update(
            dict.fromkeys(
                ("attribution_auroc", "attribution_precision_at_k", "trait_attribution_auroc"),
                float("nan"),
            )
        )
        if name == RAW:
            continue
        gan, genes = gans[name], cohort.genes
        overall = _auroc_or_nan(gene_attribution(gan, genes, target="variance"), any_link)
        row["attribution_auroc"] = overall["auroc"]
        row["attribution_precision_at_k"] = overall["precision_at_k"]
        per_trait = trait_attribution(gan, genes, traits)
        aucs = [
            _auroc_or_nan(per_trait[t].to_numpy(), linked_genes(truth, cohort.gene_names, (t,)))[
                "auroc"
            ]
            for t in TRAITS
        ]
        row["trait_attribution_auroc"] = (
            float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        )
    return _score_frame(rows)


def map_scores(
    cohort: Any, gans_by_seed: Mapping[int, Mapping[str, Any]], truth: Any | None, cfg: Any
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


def sweep_plan(workspace: Any, signals: Sequence[float], steps: int) -> pd.DataFrame:
    """Where each cohort of the signal sweep comes from; one row per signal.

    Columns: ``signal``; ``main_cohort`` (the signal is the profile's: the study's own phantom
    and curated cohort are used); ``curated`` (folder of the curated cohort); ``tag`` (the
    :meth:`Workspace.model_dir` tag of its models: ``""``, the study's own models, when the
    cohort is the main one and ``steps`` equals ``train.steps``, else ``signal<s>-steps<n>``,
    so that runs with other step counts never share a folder).
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
        rows.append(
            {
                "signal": s,
                "main_cohort": main,
                "curated": workspace.curated
                if main
                else workspace.run_dir / f"curated-signal{s:g}",
                "tag": "" if own_models else f"signal{s:g}-steps{int(steps)}",
            }
        )
    return pd.DataFrame(rows)


def signal_sweep(
    workspace: Any,
    signals: Sequence[float],
    steps: int,
    models: Sequence[str] = ("baseline", "proposed"),
    seed: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score the map at several phantom signal strengths (how strongly genes drive the image).

    For each signal (see :func:`sweep_plan`): write (or reuse) the phantom at that signal,
    curate it with the profile's curation, train ``models`` for ``steps`` steps with seed
    ``seed`` (default: the first of ``train.seeds``), and score them with
    :func:`score_representations` against the phantom's truth. Finished phantoms, cohorts and
    runs are reused. Returns a tidy frame: columns ``signal``, ``representation``, ``metric``,
    ``value``, ``steps``.
    """
    from radiolib.data.curate import curate_cohort
    from radiolib.data.phantom import load_truth
    from radiolib.runs import load_generator
    from radiolib.train import train_models

    cfg = workspace.profile
    seed = cfg.train.seeds[0] if seed is None else int(seed)
    plan = sweep_plan(workspace, signals, steps)
    cfg_s = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=int(steps)))
    frames = []
    for run in plan.itertuples(index=False):
        raw = workspace.phantom(None if run.main_cohort else run.signal, progress=progress)
        cohort = curate_cohort(raw, run.curated, cfg.curation, progress=progress)

        def model_dir(model: str, s: int, tag: str = run.tag) -> Path:
            return workspace.model_dir(model, s, tag=tag)

        train_models(cohort, cfg_s, model_dir, models, seeds=[seed], device=workspace.device)
        gans = {m: load_generator(model_dir(m, seed)) for m in models}
        scores = score_representations(cohort, gans, load_truth(raw), cfg, seed)
        long = scores.reset_index().melt(
            id_vars="representation", var_name="metric", value_name="value"
        )
        long.insert(0, "signal", run.signal)
        long["steps"] = int(steps)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- interpolation


@torch.no_grad()
def interpolate_genes(
    gan: Any,
    background: np.ndarray,
    genes_a: np.ndarray,
    genes_b: np.ndarray,
    steps: int,
    noise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic tumours along the straight line between two expression vectors.

    The generator takes genes, not codes, so the gene vectors are interpolated,
    g(t) = (1 - t) g_a + t g_b for ``steps`` values of t evenly from 0 to 1, and each is
    synthesised on the same ``background`` (S, S) in [0, 1] with the same ``noise`` (Z,)
    (default zeros). ``genes_a``, ``genes_b``: (G,). Returns images (steps, S, S) in [0, 1] and
    predicted masks (steps, S, S) in [0, 1].
    """
    from radiolib.data.dataset import from_net, to_net

    bg = np.asarray(background, dtype=np.float32)
    if bg.ndim != 2 or bg.shape[0] != bg.shape[1]:
        raise ValueError(f"background must be one square slice (S, S), got {bg.shape}")
    a = np.asarray(genes_a, dtype=np.float32).ravel()
    b = np.asarray(genes_b, dtype=np.float32).ravel()
    if a.shape != b.shape:
        raise ValueError(f"genes_a {a.shape} and genes_b {b.shape} differ")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(np.isfinite(bg))):
        raise ValueError("background and gene vectors must be finite")
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2 (got {steps})")
    t = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)[:, None]
    genes = torch.from_numpy((1.0 - t) * a[None] + t * b[None])
    device = next(iter(gan.parameters())).device if hasattr(gan, "parameters") else "cpu"
    backgrounds = to_net(torch.from_numpy(bg)).expand(len(genes), 1, *bg.shape).contiguous()
    z = None
    if noise is not None:
        z = torch.as_tensor(np.asarray(noise, np.float32).ravel()).expand(len(genes), -1)
        z = z.contiguous().to(device)
    with _eval_mode(gan):
        out = gan.synthesize(backgrounds.to(device), genes.to(device), z)
    images = from_net(out.image.float().clamp(-1, 1)).cpu().numpy()[:, 0]
    return images, out.mask.float().cpu().numpy()[:, 0]
