"""Gene codes as representations of each patient's expression, and how they are read.

A trained GAN's gene code phi(g) (:func:`gene_codes`; the contrastive map and the conventional
map's metagene code expose the same ``gene_code``) is a representation of each patient's
expression (:func:`representations`). The paper's Fig. 4 shows its t-SNE (:func:`embed_tsne`)
coloured by "rough clusters from the proposed coding method ... formed according to distance"
(:func:`cluster`); here the clusters are also scored against known subtypes
(:func:`cluster_agreement`), the codes are probed for the image traits they carry
(:func:`linear_probe_r2`, :func:`probe_table`), and gradients say which genes the code uses
(:func:`gene_attribution`, :func:`trait_attribution`). :func:`interpolate_genes` synthesises
tumours along the line between two patients' expression vectors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.linear_model import RidgeCV
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from radiolib.data.dataset import from_net, to_net
from radiolib.models import eval_mode

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from radiolib.data.curated import CuratedCohort
    from radiolib.models import GAN

RIDGE_ALPHAS = np.logspace(-3, 3, 13)
RAW = "raw genes"  # name of the representation that is the expression vector itself


# --------------------------------------------------------------------------- gene codes


def as_2d(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a finite float64 matrix (P, D); ValueError naming ``name`` otherwise."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (P, D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf values")
    return x


@torch.no_grad()
def gene_codes(
    gan: nn.Module, genes: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """The gene code phi(g) (P, code_dim) of expression vectors ``genes`` (P, G).

    ``gan``: a module with ``gene_code(genes (B, G))``: a GAN, a contrastive map, a metagene
    code. Raises ``ValueError`` for a model without a gene code (the inpainting GAN).
    """
    g = torch.as_tensor(as_2d(genes, "genes"), dtype=torch.float32)
    out = []
    with eval_mode(gan):
        for s in range(0, len(g), batch_size):
            code = gan.gene_code(g[s : s + batch_size].to(device))
            if code is None:
                raise ValueError(f"model {getattr(gan, 'name', gan)!r} has no gene code")
            out.append(code.float().cpu().numpy())
    return np.concatenate(out)


def representations(cohort: CuratedCohort, gans: Mapping[str, nn.Module]) -> dict[str, np.ndarray]:
    """Each curated patient's representations: ``{"raw genes": (P, G), model: phi(g) (P, D)}``
    for every model of ``gans`` (name -> trained GAN), rows in ``cohort.patients`` order."""
    genes = as_2d(cohort.genes, "cohort.genes")
    out = {RAW: genes}
    for name, gan in gans.items():
        if name == RAW:
            raise ValueError(f"a model may not be called {RAW!r}")
        out[name] = gene_codes(gan, genes)
    return out


# --------------------------------------------------------------------------- embeddings, clusters


def embed_tsne(x: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (P, 2) of a representation (P, D); the same seed gives the same map.

    t-SNE needs perplexity well below P; a perplexity of P / 3 or more is lowered to
    (P - 1) / 3 with a warning. PCA initialisation keeps the layout stable across runs.
    """
    x = as_2d(x, "x")
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


def first_appearance(labels: np.ndarray) -> np.ndarray:
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
    x = as_2d(x, "x")
    if not 2 <= k <= len(x):
        raise ValueError(f"k must be between 2 and the number of points {len(x)} (got {k})")
    if method == "ward":
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)
    elif method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    else:
        raise ValueError(f"method must be 'ward' or 'kmeans' (got {method!r})")
    return first_appearance(labels)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean) of ``labels`` (P,) on ``x`` (P, D); NaN with < 2 clusters."""
    x = as_2d(x, "x")
    n_lab = len(np.unique(labels))
    if n_lab < 2 or n_lab >= len(x):
        return float("nan")
    return float(silhouette_score(x, labels))


def cluster_agreement(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``{"ari", "nmi"}`` of cluster ``labels`` (P,) against ``truth`` (P,) (e.g. subtypes)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and truth {truth.shape} must be equal (P,)")
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
    }


def cluster_examples(x: np.ndarray, labels: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """The ``n`` members of each cluster nearest its centroid in ``x`` (P, D): ``{label:
    indices}`` (nearest first; fewer when the cluster is smaller)."""
    x = as_2d(x, "x")
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


# --------------------------------------------------------------------------- probes


def linear_probe_r2(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of a ridge probe predicting ``y`` (P,) from ``x`` (P, D).

    Standardisation and the ridge penalty (RidgeCV over 1e-3..1e3, chosen by efficient
    leave-one-out inside each training fold) are fitted inside the folds. R^2 is computed once
    on the pooled out-of-fold predictions, steadier than averaging fold scores when P is small.
    Rows where ``y`` is NaN are left out. 1 means fully linear in x; <= 0 means no better than
    the mean.
    """
    x = as_2d(x, "x")
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


def gene_attribution(gan: nn.Module, genes: np.ndarray, target: str = "norm") -> np.ndarray:
    """Mean |gradient x input| (G,) of the gene code w.r.t. the input genes (P, G).

    ``target``: ``"norm"`` differentiates each patient's code norm ||phi(g)||; ``"variance"``
    differentiates the summed variance of the code dimensions across the P patients (what
    spreads patients apart in the code). Gradients flow through ``gan.gene_code`` by autograd;
    parameters are not changed.
    """
    g = torch.as_tensor(as_2d(genes, "genes"), dtype=torch.float32).requires_grad_(True)
    with eval_mode(gan):
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


def trait_attribution(gan: nn.Module, genes: np.ndarray, traits_df: pd.DataFrame) -> pd.DataFrame:
    """Which genes the code uses for each trait: (G, T) mean |gradient x input|.

    For each trait (column of ``traits_df``, rows = patients of ``genes`` (P, G)) a ridge probe
    (RidgeCV) is fitted from the standardised code to the trait; the attribution is that of the
    probe's prediction w . (phi(g) - mu) / sigma w.r.t. the genes. Rows: gene index 0..G-1.
    """
    g_np = as_2d(genes, "genes")
    if len(traits_df) != len(g_np):
        raise ValueError(f"genes has {len(g_np)} rows, traits have {len(traits_df)}")
    codes = gene_codes(gan, g_np)
    mu, sd = codes.mean(0), codes.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    g = torch.as_tensor(g_np, dtype=torch.float32).requires_grad_(True)
    with eval_mode(gan):
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


# --------------------------------------------------------------------------- interpolation


@torch.no_grad()
def interpolate_genes(
    gan: GAN,
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
    device = next(gan.parameters()).device
    backgrounds = to_net(torch.from_numpy(bg)).expand(len(genes), 1, *bg.shape).contiguous()
    z = None
    if noise is not None:
        z = torch.as_tensor(np.asarray(noise, np.float32).ravel()).expand(len(genes), -1)
        z = z.contiguous().to(device)
    with eval_mode(gan):
        out = gan.synthesize(backgrounds.to(device), genes.to(device), z)
    images = from_net(out.image.float().clamp(-1, 1)).cpu().numpy()[:, 0]
    return images, out.mask.float().cpu().numpy()[:, 0]
