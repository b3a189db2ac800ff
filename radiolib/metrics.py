"""Synthesis quality: the paper's Table 1 protocol and the measures the paper lacked.

Every image here is a numpy array in [0, 1] (the curated HU window); networks work in [-1, 1]
and :func:`synthesize_pairs` converts at the boundary.

The paper's Table 1 compares each synthetic image with the background it was painted into:

* inpainting: MSE / SSIM / PSNR inside a disk of ``inpaint_region_scale`` (1.5) x the inpainted
  radius, centred like the hole (the paper: "otherwise any numbers can be achieved just by
  adjusting the sphere");
* baseline and proposed: over the whole image.

The two regions differ, so the rows are not comparable with each other (the paper's own caveat).
The study therefore adds measures that answer one question each, on one footing:

* background kept: the three metrics for every method over ONE common region, outside the union
  of all methods' dilated tumours (:func:`background_keep_region`);
* realism: KID and a Gaussian-kernel MMD permutation test between real and synthetic tumour slices
  on handcrafted features (:func:`realism_features`);
* gene control: traits measured on the synthetic tumour against the donor's
  (:func:`measure_traits`, :func:`trait_correlation`), and a subtype classifier trained on real
  slices applied to synthetic ones (:func:`train_subtype_classifier`);
* counterfactuals: one background, several genes (:func:`counterfactual_effect`);
* mode collapse: :func:`diversity` of synthetic tumours relative to real ones.

PSNR of two identical images is ``inf``. Single-pair functions report ``inf``; aggregations
(:func:`table1`) cap PSNR at :data:`PSNR_CAP_DB` before averaging and count the capped pairs in a
``<metric>_capped`` column, so one untouched pair neither vanishes nor makes the mean infinite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity
from torch import nn

PSNR_CAP_DB = 100.0  # = MSE 1e-10 for data_range 1; used only when aggregating

# Table 1 of the paper (MSE, SSIM, PSNR in dB), regions as described in the module docstring.
PAPER_TABLE1 = pd.DataFrame(
    {
        "mse": [0.0121, 0.0065, 0.0044],
        "ssim": [0.76, 0.74, 0.88],
        "psnr": [20.94, 22.05, 24.52],
    },
    index=pd.Index(["inpainting", "baseline", "proposed"], name="method"),
)

TRAITS = ("diameter_mm", "attenuation_hu", "margin_sharpness")
_SSIM_WIN = 7  # skimage's default window; regions smaller than this get NaN metrics


# --------------------------------------------------------------------------- image metrics


def _check_pair(a: np.ndarray, b: np.ndarray, region: np.ndarray | None) -> tuple:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two 2-D images of one shape, got {a.shape} and {b.shape}")
    for name, x in (("a", a), ("b", b)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"image {name} holds NaN or inf values")
        if x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(
                f"image {name} must lie in [0, 1] (got [{x.min():.3g}, {x.max():.3g}]); "
                "convert network outputs with (y + 1) / 2"
            )
    if region is not None:
        region = np.asarray(region)
        if region.shape != a.shape:
            raise ValueError(f"region shape {region.shape} differs from image shape {a.shape}")
        region = region.astype(bool)
        if not region.any():
            raise ValueError("region is empty: no pixel to measure")
    return a, b, region


def mse(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean squared error of two (H, W) images in [0, 1], over ``region`` (H, W) bool if given."""
    a, b, region = _check_pair(a, b, region)
    d = (a - b) ** 2
    return float(d[region].mean() if region is not None else d.mean())


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB with data range 1; ``inf`` for identical images."""
    m = mse(a, b, region)
    return float("inf") if m == 0 else float(10.0 * np.log10(1.0 / m))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full SSIM map (H, W) of scikit-image's ``structural_similarity(data_range=1)``."""
    a, b, _ = _check_pair(a, b, None)
    _, full = structural_similarity(a, b, data_range=1.0, full=True)
    return full


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """SSIM of two (H, W) images in [0, 1].

    Without a region this is exactly ``skimage.metrics.structural_similarity(a, b,
    data_range=1)`` (which averages the map without a border of 3 pixels). With a region it is
    the mean of the full SSIM map over the region's pixels.
    """
    a, b, region = _check_pair(a, b, region)
    value, full = structural_similarity(a, b, data_range=1.0, full=True)
    return float(value if region is None else full[region].mean())


def region_metrics(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> dict:
    """``{"mse", "ssim", "psnr", "region_px"}`` of images (H, W) over ``region`` (H, W) bool."""
    a, b, region = _check_pair(a, b, region)
    m = mse(a, b, region)
    return {
        "mse": m,
        "ssim": ssim(a, b, region),
        "psnr": float("inf") if m == 0 else float(10.0 * np.log10(1.0 / m)),
        "region_px": int(region.sum()) if region is not None else int(a.size),
    }


def disk(
    shape: tuple[int, int], centre: tuple[float, float] | None = None, radius: float = 1.0
) -> np.ndarray:
    """Boolean disk (H, W): pixels whose centre lies within ``radius`` of ``centre`` (row, col).

    ``centre`` defaults to the image centre ``((H - 1) / 2, (W - 1) / 2)``.
    """
    if radius < 0 or not np.isfinite(radius):
        raise ValueError(f"radius must be a finite number >= 0 (got {radius})")
    h, w = shape
    cy, cx = ((h - 1) / 2.0, (w - 1) / 2.0) if centre is None else centre
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def equivalent_radius(mask: np.ndarray) -> float:
    """Radius (pixels) of the disk with the area of ``mask`` (H, W) (values > 0.5 count)."""
    return float(np.sqrt((np.asarray(mask) > 0.5).sum() / np.pi))


# --------------------------------------------------------------------------- aggregation


def _unit_codes(groups: Sequence[Any], size: int) -> list[np.ndarray]:
    """Each grouping as integer codes (size,)."""
    codes = []
    for g in groups:
        g = np.asarray(g)
        if g.shape != (size,):
            raise ValueError(f"a grouping has shape {g.shape}, the values ({size},)")
        codes.append(np.unique(g, return_inverse=True)[1].ravel())
    return codes


def bootstrap(
    statistic: Any,
    size: int,
    groups: Sequence[Any] | None = None,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``statistic(rows)`` on all ``size`` rows, and its percentile-bootstrap CI over the
    independent units: ``(estimate, low, high)``.

    ``groups``: label arrays (size,), e.g. ``(donor, seed)``. Each grouping's units are resampled
    with replacement, independently (crossed), and a replicate takes every row of every drawn
    combination, as often as drawn: pairs drawn from one donor or one training seed move
    together, so the interval reflects how many donors and seeds there are, not how many pairs
    were drawn from them. None: rows are the units. ``statistic`` maps an index array (with
    repeats) to a float; replicates that give NaN are dropped.
    """
    if size < 1:
        raise ValueError("bootstrap needs at least one row")
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1 and 0 < level < 1 (got n={n}, level={level})")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(size)))
    if groups is None or len(groups) == 0:  # rows are the units
        reps = np.array([statistic(rng.integers(0, size, size=size)) for _ in range(n)])
        return _percentile_interval(estimate, reps, level)
    codes = _unit_codes(groups, size)
    # rows of each unit combination, found by a lexicographic sort of the codes
    key = np.ravel_multi_index(codes, [int(c.max()) + 1 for c in codes])
    order = np.argsort(key, kind="stable")
    cells, starts = np.unique(key[order], return_index=True)
    rows_of = dict(zip(cells.tolist(), np.split(order, starts[1:]), strict=True))
    dims = [int(c.max()) + 1 for c in codes]
    reps = np.empty(n)
    for r in range(n):
        drawn = [rng.integers(0, d, size=d) for d in dims]
        combos = np.ravel_multi_index(np.meshgrid(*drawn, indexing="ij"), dims).ravel()
        idx = [rows_of[c] for c in combos if c in rows_of]
        reps[r] = statistic(np.concatenate(idx)) if idx else np.nan
    return _percentile_interval(estimate, reps, level)


def _percentile_interval(
    estimate: float, reps: np.ndarray, level: float
) -> tuple[float, float, float]:
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return estimate, np.nan, np.nan
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return estimate, float(low), float(high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | None = None,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``values`` (N,) and its bootstrap CI ``(mean, low, high)`` over the units of
    ``groups`` (see :func:`bootstrap`; None: the N values are the units). NaN is rejected."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci got NaN or inf; drop or cap them first")
    return bootstrap(lambda rows: x[rows].mean(), x.size, groups, n=n, level=level, seed=seed)


UNITS = ("donor_patient", "seed")  # what is independent in an evaluation: donors, training seeds


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
        row: dict[str, Any] = {"n": len(group)}
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


# --------------------------------------------------------------------------- realism


def realism_features(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Handcrafted features (N, 17) of tumour slices (N, H, W) in [0, 1] with masks (N, H, W).

    Chosen because they need no downloaded weights, are fast on CPU, are defined for any mask
    (pyradiomics fails on the empty or one-pixel masks a poor generator produces) and describe
    what a radiologist sees: size, density, texture and margin. Per slice:
    mask area fraction; intensity mean, std, 10/50/90th percentiles inside the mask; mean of a
    3-pixel ring outside it and the inside-ring contrast; mean gradient magnitude on the mask
    boundary and over the image; image mean and std; a radial intensity profile (5 annuli of
    width H/16 around the mask centroid). An empty mask is read as a zero-area tumour at the
    image centre: its inside statistics come from the central disk of radius 2 pixels.
    """
    images = np.asarray(images, dtype=np.float64)
    masks = np.asarray(masks) > 0.5
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"expected images and masks (N, H, W), got {images.shape}, {masks.shape}")
    n, h, w = images.shape
    yy, xx = np.mgrid[:h, :w]
    width = max(h / 16.0, 1.0)
    feats = np.empty((n, 17))
    for i in range(n):
        img, m = images[i], masks[i]
        area = m.sum() / m.size
        if not m.any():
            m = disk((h, w), None, 2.0)
        cy, cx = yy[m].mean(), xx[m].mean()
        inside = img[m]
        ring = ndimage.binary_dilation(m, iterations=3) & ~m
        ring_mean = img[ring].mean() if ring.any() else inside.mean()
        gy, gx = np.gradient(img)
        grad = np.hypot(gy, gx)
        edge = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
        r = np.hypot(yy - cy, xx - cx)
        profile = [
            img[(r >= k * width) & (r < (k + 1) * width)].mean()
            if ((r >= k * width) & (r < (k + 1) * width)).any()
            else img.mean()
            for k in range(5)
        ]
        p10, p50, p90 = np.percentile(inside, [10, 50, 90])
        feats[i] = [
            area,
            inside.mean(),
            inside.std(),
            p10,
            p50,
            p90,
            ring_mean,
            inside.mean() - ring_mean,
            grad[edge].mean(),
            grad.mean(),
            img.mean(),
            img.std(),
            *profile,
        ]
    return feats


def _check_features(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected feature matrices (N, F) and (M, F), got {x.shape}, {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 samples on each side (got {len(x)}, {len(y)})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("features hold NaN or inf")
    return x, y


def _standardise_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both samples by the first one's mean and std (constant features scale by 1)."""
    x, y = _check_features(x, y)
    mu, sd = x.mean(0), x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (x - mu) / sd, (y - mu) / sd


def _unbiased_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def kid(x: np.ndarray, y: np.ndarray, standardise: bool = True) -> float:
    """Kernel inception distance between feature samples x (N, F) and y (M, F).

    The unbiased MMD^2 with the cubic polynomial kernel ``k(a, b) = (a.b / F + 1)^3`` (Binkowski
    et al. 2018), here on our own features instead of Inception's. ``standardise`` scales both by
    x's mean and std first. Its expectation is 0 when the distributions agree (can be < 0).
    """
    x, y = _standardise_pair(x, y) if standardise else _check_features(x, y)
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    return _unbiased_mmd2(k(x, x), k(y, y), k(x, y))


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    n_perm: int = 500,
    bandwidth: float | None = None,
    seed: int = 0,
    standardise: bool = True,
) -> tuple[float, float]:
    """Gaussian-kernel MMD^2 (unbiased) of x (N, F) vs y (M, F) and its permutation p-value.

    ``standardise`` scales features by the pooled sample's mean and std. ``bandwidth`` defaults
    to the median pairwise distance of the pooled sample. The p-value is
    ``(1 + #{permuted >= observed}) / (1 + n_perm)``.
    """
    x, y = _check_features(x, y)
    z = np.concatenate([x, y])
    if standardise:
        # pooled scaling treats both samples alike, so the permutation test stays exact
        sd = z.std(0)
        z = (z - z.mean(0)) / np.where(sd > 1e-12, sd, 1.0)
    sq = np.sum(z**2, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    if bandwidth is None:
        off = d2[np.triu_indices(len(z), 1)]
        bandwidth = float(np.sqrt(np.median(off))) or 1.0
    kz = np.exp(-d2 / (2.0 * bandwidth**2))
    m = len(x)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:m], idx[m:]
        return _unbiased_mmd2(kz[np.ix_(a, a)], kz[np.ix_(b, b)], kz[np.ix_(a, b)])

    observed = stat(np.arange(len(z)))
    rng = np.random.default_rng(seed)
    perms = np.array([stat(rng.permutation(len(z))) for _ in range(n_perm)])
    p = (1.0 + np.sum(perms >= observed)) / (1.0 + n_perm)
    return observed, float(p)


def realism(
    real_images: np.ndarray,
    real_masks: np.ndarray,
    synth_images: np.ndarray,
    synth_masks: np.ndarray,
    n_perm: int = 500,
    seed: int = 0,
) -> dict:
    """``{"kid", "mmd2", "p"}`` between real (N, H, W) and synthetic (M, H, W) tumour slices."""
    fx = realism_features(real_images, real_masks)
    fy = realism_features(synth_images, synth_masks)
    mmd2, p = mmd_test(fx, fy, n_perm=n_perm, seed=seed)
    return {"kid": kid(fx, fy), "mmd2": mmd2, "p": p}


# --------------------------------------------------------------------------- gene control


def measure_traits(
    image: np.ndarray,
    mask: np.ndarray,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    voi_mm: float = 60.0,
) -> dict:
    """Tumour traits measured on one slice (H, W) in [0, 1] with its mask (H, W).

    * ``diameter_mm``: equivalent diameter of the mask (pixels) x ``voi_mm / H`` mm per pixel;
    * ``attenuation_hu``: mean HU inside the mask (the [0, 1] window undone with ``hu_window``);
    * ``margin_gradient``: mean gradient magnitude (HU/mm) on the 3-pixel band straddling the
      mask boundary;
    * ``margin_sharpness``: that gradient divided by the tumour-to-surrounding contrast (HU)
      (1/mm): a sharp step scores high, a blurred margin low, whatever the tumour's density.

    An empty mask gives NaN for every trait but diameter (0).
    """
    image = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask) > 0.5
    if image.ndim != 2 or image.shape != m.shape:
        raise ValueError(f"expected image and mask (H, W), got {image.shape}, {m.shape}")
    lo, hi = hu_window
    if not lo < hi:
        raise ValueError(f"hu_window must be increasing (got {hu_window})")
    mm_per_px = voi_mm / image.shape[0]
    out = {"diameter_mm": 2.0 * equivalent_radius(m) * mm_per_px}
    if not m.any():
        return {
            **out,
            "attenuation_hu": np.nan,
            "margin_gradient": np.nan,
            "margin_sharpness": np.nan,
        }
    hu = lo + image * (hi - lo)
    gy, gx = np.gradient(hu, mm_per_px)
    grad = np.hypot(gy, gx)
    band = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
    core = ndimage.binary_erosion(m, iterations=2)
    core = core if core.any() else m
    outer = ndimage.binary_dilation(m, iterations=5) & ~ndimage.binary_dilation(m, iterations=2)
    contrast = abs(hu[core].mean() - hu[outer].mean()) if outer.any() else np.nan
    g = float(grad[band].mean())
    out["attenuation_hu"] = float(hu[m].mean())
    out["margin_gradient"] = g
    out["margin_sharpness"] = g / contrast if contrast and contrast > 1e-6 else np.nan
    return out


def measure_traits_batch(
    images: np.ndarray,
    masks: np.ndarray,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    voi_mm: float = 60.0,
    index: Sequence | None = None,
) -> pd.DataFrame:
    """:func:`measure_traits` for (N, H, W) slices; one row per slice (``index`` if given)."""
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"expected images and masks (N, H, W), got {images.shape}, {masks.shape}")
    rows = [measure_traits(a, b, hu_window, voi_mm) for a, b in zip(images, masks, strict=True)]
    return pd.DataFrame(rows, index=index)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho over the rows where both are finite; NaN under 3 rows or a constant side."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(a[ok], b[ok])[0])


def trait_correlation(
    measured_df: pd.DataFrame,
    truth_df: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Spearman correlation of measured traits with the truth, per trait.

    Rows are matched by index. ``columns`` maps measured column -> truth column; by default the
    columns the two frames share. Returns index ``trait`` with ``rho``, ``p`` and ``n`` (rows
    where both are finite).
    """
    if columns is None:
        columns = {c: c for c in measured_df.columns if c in truth_df.columns}
    if not columns:
        raise ValueError(
            f"no trait to compare: measured has {list(measured_df.columns)}, "
            f"truth has {list(truth_df.columns)}; pass columns={{measured: truth}}"
        )
    common = measured_df.index.intersection(truth_df.index)
    if len(common) < 3:
        raise ValueError(f"only {len(common)} rows shared by measured and truth (need >= 3)")
    rows = []
    for mcol, tcol in columns.items():
        a = measured_df.loc[common, mcol].to_numpy(np.float64)
        b = truth_df.loc[common, tcol].to_numpy(np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        rho = _spearman(a, b)
        p = stats.spearmanr(a[ok], b[ok])[1] if np.isfinite(rho) else np.nan
        rows.append({"trait": mcol, "rho": float(rho), "p": float(p), "n": int(ok.sum())})
    return pd.DataFrame(rows).set_index("trait")


class SubtypeCNN(nn.Module):
    """Tiny classifier: (B, 1, H, W) in [0, 1] -> (B, K) logits.

    Two stride-2 convolutions, global average pooling and a linear layer (about 1.5k weights):
    enough to read size, density and margin, small enough to train in seconds on a CPU.
    """

    def __init__(self, n_classes: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # mean and max pooling: mean reads density, max reads the brightest structure
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1))


def train_subtype_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    steps: int = 300,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 3e-3,
) -> SubtypeCNN:
    """Train :class:`SubtypeCNN` on slices (N, H, W) in [0, 1] with labels (N,) in 0..K-1.

    Deterministic for a seed (own RNG for weights and batches; global torch RNG untouched).
    Returns the model in eval mode on the CPU.
    """
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    y = torch.as_tensor(np.asarray(labels)).long()
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"expected images (N, H, W) and labels (N,), got {images.shape}, {np.shape(labels)}"
        )
    if y.min() < 0:
        raise ValueError("labels must be integers 0..K-1")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SubtypeCNN(int(y.max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def classifier_predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class (N,) for slices (N, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    model.eval()
    return torch.cat(
        [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    ).numpy()


def classifier_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of slices (N, H, W) whose predicted class equals ``labels`` (N,)."""
    labels = np.asarray(labels)
    if len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return float(np.mean(classifier_predict(model, images) == labels))


# --------------------------------------------------------------------------- counterfactuals


def counterfactual_effect(
    synth_images: np.ndarray, synth_masks: np.ndarray, background: np.ndarray
) -> dict:
    """How far genes change the tumour versus the rest, on one background.

    ``synth_images`` (K, H, W) in [0, 1] are syntheses of one ``background`` (H, W) with K
    different gene vectors; ``synth_masks`` (K, H, W) their predicted masks. Returns the mean
    |difference| between pairs of syntheses inside the union of the masks (``inside``) and
    outside it (``outside``), their ratio (``ratio``: large when genes steer only the tumour) and
    the mean |synthesis - background| outside the union (``background_change``).
    """
    x = np.asarray(synth_images, np.float64)
    if x.ndim != 3 or len(x) < 2:
        raise ValueError(f"expected K >= 2 syntheses (K, H, W), got {x.shape}")
    masks = np.asarray(synth_masks) > 0.5
    background = np.asarray(background, np.float64)
    if masks.shape != x.shape or background.shape != x.shape[1:]:
        raise ValueError(
            f"shapes differ: images {x.shape}, masks {masks.shape}, background {background.shape}"
        )
    union = masks.any(0)
    i, j = np.triu_indices(len(x), 1)
    diff = np.abs(x[i] - x[j]).mean(0)  # (H, W) mean over pairs
    inside = float(diff[union].mean()) if union.any() else np.nan
    outside = float(diff[~union].mean()) if (~union).any() else np.nan
    bg = float(np.abs(x - background)[:, ~union].mean()) if (~union).any() else np.nan
    ratio = inside / outside if outside and outside > 0 else np.inf
    return {
        "inside": inside,
        "outside": outside,
        "ratio": ratio,
        "background_change": bg,
        "union_px": int(union.sum()),
    }


def diversity(
    images: np.ndarray, metric: str = "l1", max_pairs: int = 2000, seed: int = 0
) -> float:
    """Mean pairwise distance between images (N, H, W) in [0, 1].

    ``metric``: ``"l1"`` (mean absolute difference per pixel) or ``"1-ssim"``. With more than
    ``max_pairs`` pairs a random subset (``seed``) is used. Compare synthetic tumours for
    different genes on one background with the same number for real tumour slices: a ratio
    well below 1 is mode collapse.
    """
    x = np.asarray(images, np.float64)
    if x.ndim != 3 or len(x) < 2:
        raise ValueError(f"expected N >= 2 images (N, H, W), got {x.shape}")
    i, j = np.triu_indices(len(x), 1)
    if len(i) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(i), max_pairs, replace=False)
        i, j = i[pick], j[pick]
    if metric == "l1":
        return float(np.mean([np.abs(x[a] - x[b]).mean() for a, b in zip(i, j, strict=True)]))
    if metric == "1-ssim":
        return float(np.mean([1.0 - ssim(x[a], x[b]) for a, b in zip(i, j, strict=True)]))
    raise ValueError(f"metric must be 'l1' or '1-ssim' (got {metric!r})")


# --------------------------------------------------------------------------- GAN evaluation

_PAIR_KEYS = ("background", "genes", "real_tumour", "real_mask", "donor_patient")


def _check_pairs(pairs: Mapping[str, np.ndarray]) -> int:
    missing = [k for k in _PAIR_KEYS if k not in pairs]
    if missing:
        raise ValueError(f"evaluation pairs lack {missing}; expected keys {list(_PAIR_KEYS)}")
    n = len(pairs["background"])
    for k in _PAIR_KEYS:
        if len(pairs[k]) != n:
            raise ValueError(f"pairs[{k!r}] has {len(pairs[k])} rows, background has {n}")
    if np.asarray(pairs["background"]).ndim != 3:
        raise ValueError(f"pairs['background'] must be (n, S, S), got {pairs['background'].shape}")
    return n


def inpaint_holes(real_masks: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred disks to inpaint: radius = ``margin`` x each donor mask's equivalent radius.

    ``real_masks`` (n, S, S) -> (holes (n, S, S) bool, radii (n,) pixels).
    """
    masks = np.asarray(real_masks)
    radii = np.array([margin * equivalent_radius(m) for m in masks])
    empty = np.flatnonzero(radii == 0)
    if len(empty):
        raise ValueError(f"donor masks of pairs {empty[:5].tolist()} are empty; cannot size holes")
    holes = np.stack([disk(m.shape, None, r) for m, r in zip(masks, radii, strict=True)])
    return holes, radii


def _weight_maps(out: Any, size: int) -> list[np.ndarray]:
    """Every fusion level's weight map of a Synthesis, coarse to fine, each (B, size, size):
    a coarse map's cell covers the pixels it steers (nearest-neighbour); [] if none."""
    maps = []
    for w in getattr(out, "weight_maps", None) or []:
        w = w.float()
        if w.shape[-1] != size:
            w = torch.nn.functional.interpolate(w, size=(size, size), mode="nearest")
        maps.append(w[:, 0].cpu().numpy())
    return maps


@torch.no_grad()
def synthesize_pairs(
    gan: Any,
    pairs: Mapping[str, np.ndarray],
    batch_size: int = 64,
    device: str = "cpu",
    inpaint_margin: float = 1.2,
) -> dict:
    """Run ``gan.synthesize`` on every evaluation pair, noise fixed at zero.

    Every model gets a centred hole of ``inpaint_margin`` x the donor tumour's equivalent radius
    (only the inpainting model reads it). Returns ``image`` (n, S, S) in [0, 1], ``mask``
    (n, S, S) in [0, 1], ``weight`` (n, S, S): the finest level's fusion weight map (1 = object,
    0 = background; NaN for a model without one), ``weight_maps``: every level's map, coarse to
    fine, each resized to (n, S, S) ([] without), ``weight_levels``: their native sizes,
    ``hole`` (n, S, S) bool, ``hole_radius`` (n,)
    and ``method`` (the GAN's name). The model is switched to eval mode for the call and then
    restored.
    """
    n = _check_pairs(pairs)
    holes, radii = inpaint_holes(pairs["real_mask"], inpaint_margin)
    was_training = bool(getattr(gan, "training", False))
    if hasattr(gan, "eval"):
        gan.eval()
    images, masks, levels = [], [], []
    try:
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            # networks work in [-1, 1]: to_net(x) = 2x - 1
            bg = torch.as_tensor(2.0 * np.asarray(pairs["background"][sl], np.float32) - 1.0)
            out = gan.synthesize(
                bg[:, None].to(device),
                torch.as_tensor(np.asarray(pairs["genes"][sl], np.float32)).to(device),
                noise=None,
                hole=torch.as_tensor(holes[sl, None].astype(np.float32)).to(device),
            )
            images.append(((out.image[:, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0, 1))
            masks.append(out.mask[:, 0].float().cpu().numpy())
            levels.append(_weight_maps(out, bg.shape[-1]))
    finally:
        if was_training and hasattr(gan, "train"):
            gan.train()
    image = np.concatenate(images).astype(np.float32)
    weight_maps = [np.concatenate(level).astype(np.float32) for level in zip(*levels, strict=True)]
    sizes = [int(m.shape[-1]) for m in (getattr(out, "weight_maps", None) or [])]
    return {
        "image": image,
        "mask": np.concatenate(masks).astype(np.float32),
        "weight": weight_maps[-1] if weight_maps else np.full(image.shape, np.nan, np.float32),
        "weight_maps": weight_maps,
        "weight_levels": sizes,
        "hole": holes,
        "hole_radius": radii,
        "method": str(getattr(gan, "name", "")),
    }


def _changed_region(synth: Mapping[str, Any], method: str, dilation_px: int) -> np.ndarray:
    """(n, S, S) bool: the synthetic tumour (and the hole, for inpainting), dilated.

    The square is ``dilation_px`` plus SSIM's window less one, so that no 7 x 7 SSIM window
    centred on a kept pixel reaches into a changed one.
    """
    region = np.asarray(synth["mask"]) > 0.5
    if method == "inpainting":
        region = region | np.asarray(synth["hole"], bool)
    size = max(int(dilation_px), 1) + _SSIM_WIN - 1
    st = np.ones((1, size, size), bool)  # per slice, no mixing across pairs
    return ndimage.binary_dilation(region, structure=st)


def background_keep_region(
    synths: Mapping[str, Mapping[str, Any]], dilation_px: int = 5
) -> np.ndarray:
    """The common region (n, S, S) bool where every method should have kept the background.

    ``synths`` maps method name -> :func:`synthesize_pairs` output on the same pairs. A pixel
    counts if it lies outside every method's tumour mask (> 0.5) and outside the inpainting
    hole, each dilated by a ``dilation_px`` square (the square the generator's background L1
    erodes with, ``model.erosion_px``: where the loss asks for the background unchanged) grown
    by SSIM's window, so that all three metrics see only pixels that every method should keep.
    """
    if not synths:
        raise ValueError("background_keep_region needs at least one method's syntheses")
    changed = None
    for method, synth in synths.items():
        c = _changed_region(synth, method, dilation_px)
        changed = c if changed is None else changed | c
    return ~changed


ANCHORS = ("oracle", "unchanged")  # Table 1's bounds: no GAN can beat or should lose to them


def anchor_syntheses(pairs: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """The two references that bound Table 1, in :func:`synthesize_pairs`' layout.

    * ``oracle``: the donor's real tumour pasted into the untouched background (its real mask
      copied, everything else kept): what a perfect object/background separation with the
      donor's own nodule would score against the background;
    * ``unchanged``: the background itself, no tumour (empty mask): the score of painting
      nothing, which Table 1's protocol rewards most.
    """
    n = _check_pairs(pairs)
    bg = np.asarray(pairs["background"], np.float32)
    real = np.asarray(pairs["real_mask"]) > 0
    empty = np.zeros((n, *bg.shape[1:]), np.float32)
    common = {
        "weight": np.full(bg.shape, np.nan, np.float32),
        "weight_maps": [],
        "weight_levels": [],
        "hole": np.zeros(bg.shape, bool),
        "hole_radius": np.zeros(n),
    }
    return {
        "oracle": {
            **common,
            "image": np.where(real, np.asarray(pairs["real_tumour"], np.float32), bg),
            "mask": real.astype(np.float32),
            "method": "oracle",
        },
        "unchanged": {**common, "image": bg.copy(), "mask": empty, "method": "unchanged"},
    }


def mechanism_per_pair(synth: Mapping[str, Any], dilation_px: int) -> pd.DataFrame:
    """Per pair, what the fusion mechanism did (Fig. 2 in numbers).

    Columns: ``mask_px`` (predicted mask > 0.5, pixels), ``mask_empty`` (0/1), and for every
    fusion level s of ``synth["weight_levels"]``: ``w<s>_inside``, the mean weight map inside
    the predicted mask (NaN when it is empty), and ``w<s>_outside``, the mean outside the
    predicted mask dilated by a ``dilation_px`` square (where the background loss asks for the
    background). Coarse maps are compared on the full-size grid (each cell covers its pixels).
    """
    mask = np.asarray(synth["mask"]) > 0.5
    area = mask.sum((1, 2))
    out = {"mask_px": area.astype(float), "mask_empty": (area == 0).astype(float)}
    size = max(int(dilation_px), 1)
    far = ~ndimage.binary_dilation(mask, structure=np.ones((1, size, size), bool))
    for level, w in zip(synth.get("weight_levels", []), synth.get("weight_maps", []), strict=True):
        inside = np.where(area > 0, (w * mask).sum((1, 2)) / np.maximum(area, 1), np.nan)
        n_far = far.sum((1, 2))
        outside = np.where(n_far > 0, (w * far).sum((1, 2)) / np.maximum(n_far, 1), np.nan)
        out[f"w{level}_inside"] = inside
        out[f"w{level}_outside"] = outside
    return pd.DataFrame(out)


def evaluate_pairs(
    method: str,
    synth: Mapping[str, Any],
    pairs: Mapping[str, np.ndarray],
    cfg: Any,
    keep_region: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-pair metrics of one method's syntheses (:func:`synthesize_pairs`) on ``pairs``.

    ``cfg`` is a :class:`radiolib.config.Profile`. Columns:

    * ``pair``, ``method``, ``donor_patient``;
    * ``mse``, ``ssim``, ``psnr``, ``region_px``: Table 1 protocol, synthesis vs background,
      over the whole image, or for inpainting over the centred disk of
      ``evaluation.inpaint_region_scale`` x the hole radius;
    * ``bg_mse``, ``bg_ssim``, ``bg_psnr``, ``bg_region_px``: the same over ``keep_region``
      (n, S, S) bool, normally :func:`background_keep_region` of all methods; when None each
      pair's own dilated tumour (and hole) is excluded. Regions under 49 pixels give NaN;
    * ``synth_<trait>`` and ``donor_<trait>`` for :func:`measure_traits`' traits, measured on
      the synthesis with its mask and on the donor slice with its mask;
    * the :func:`mechanism_per_pair` columns (mask area, empty masks, weight maps).
    """
    n = _check_pairs(pairs)
    for key in ("image", "mask", "hole", "hole_radius"):
        if key not in synth or len(synth[key]) != n:
            raise ValueError(f"synth[{key!r}] missing or not {n} rows; use synthesize_pairs")
    hu, voi = tuple(cfg.curation.hu_window), float(cfg.curation.voi_mm)
    if keep_region is None:
        keep_region = ~_changed_region(synth, method, int(cfg.model.erosion_px))
    keep_region = np.asarray(keep_region, bool)
    if keep_region.shape != np.asarray(synth["image"]).shape:
        raise ValueError(
            f"keep_region {keep_region.shape} differs from images "
            f"{np.asarray(synth['image']).shape}"
        )
    scale = float(cfg.evaluation.inpaint_region_scale)
    rows = []
    for i in range(n):
        img, bg = synth["image"][i], pairs["background"][i]
        region = None  # baseline and proposed: the whole image
        if method == "inpainting":
            region = disk(img.shape, None, scale * synth["hole_radius"][i])
        row: dict[str, Any] = {
            "pair": i,
            "method": method,
            "donor_patient": pairs["donor_patient"][i],
        }
        row.update(region_metrics(img, bg, region))
        if keep_region[i].sum() >= _SSIM_WIN**2:
            kept = region_metrics(img, bg, keep_region[i])
        else:
            kept = {
                "mse": np.nan,
                "ssim": np.nan,
                "psnr": np.nan,
                "region_px": int(keep_region[i].sum()),
            }
        row.update({f"bg_{k}": v for k, v in kept.items()})
        st = measure_traits(img, synth["mask"][i], hu, voi)
        dt = measure_traits(pairs["real_tumour"][i], pairs["real_mask"][i], hu, voi)
        row.update({f"synth_{k}": v for k, v in st.items()})
        row.update({f"donor_{k}": v for k, v in dt.items()})
        rows.append(row)
    mechanism = mechanism_per_pair(synth, int(cfg.model.erosion_px))
    return pd.concat([pd.DataFrame(rows), mechanism], axis=1)


# --------------------------------------------------------------------------- the whole evaluation

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

    pairs: dict  # evaluation pairs (radiolib.data.dataset.evaluation_pairs)
    synths: dict  # (method, seed) -> synthesize_pairs output on ``pairs``
    per_pair: pd.DataFrame  # evaluate_pairs rows of every (method, seed), with a ``seed`` column
    results: pd.DataFrame  # tidy: section, method, seed, measure, value, low, high, n
    panel: dict  # one background, several donors' genes: method -> syntheses (counterfactuals)
    runs: pd.DataFrame | None = None  # evaluate_runs: radiolib.train.inspect_runs of the runs


def _row(
    section: str,
    method: str,
    seed: Any,
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


def _ci_rows(section: str, table: pd.DataFrame, columns: Mapping[str, tuple[str, Any]]) -> list:
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


def evaluate_synthesis(
    cohort: Any,
    cfg: Any,
    gans: Mapping[tuple[str, int], Any],
    truth: Any | None = None,
    device: str = "cpu",
) -> SynthesisEvaluation:
    """The paper's Table 1 protocol and the study's own measures for trained GANs.

    ``gans`` maps ``(method, seed)`` to a trained GAN (``radiolib.train.load_generator``);
    ``cfg`` is the :class:`~radiolib.config.Profile`; ``truth`` the phantom's
    :class:`~radiolib.data.phantom.PhantomTruth` (None on real data: the truth-based measures
    are left out). Pairs are held-out donors' genes with held-out backgrounds
    (``cfg.evaluation.pairs`` of them, drawn with ``cfg.curation.seed``). Sections of
    ``results``:

    * ``table1``: MSE / SSIM / PSNR against the background, pooled over seeds, with a bootstrap
      CI over donors and seeds (:func:`table1`), and the :func:`anchor_syntheses` rows
      ``oracle`` and ``unchanged`` that bound it;
    * ``background_kept``: the same over the region every GAN should keep;
    * ``mask``: the predicted mask's ``area_px`` and ``empty_rate`` (the oracle's: the donors'
      real masks);
    * ``weight_map``: ``inside_mean`` and ``outside_mean`` of every fusion level's map (column
      ``level``: its size), see :func:`mechanism_per_pair`;
    * ``realism``: KID, MMD^2 and its permutation p-value, synthetic vs held-out real tumours;
    * ``diversity``: mean pairwise L1 of syntheses for different donors on one background
      relative to the same for those donors' real tumour slices (1 = as varied as real);
    * ``counterfactual``: on that background, change inside vs outside the tumours;
    * with ``truth``: ``gene_control`` (Spearman rho of each measured trait with the donor's
      hidden trait, per seed and pooled (seed ``all``) with a CI over donors and seeds; ``real``
      rows measure the real slices, the ceiling; methods without genes are left out) and
      ``subtype``
      (accuracy of a classifier trained on real training slices, applied to syntheses against
      the donor's subtype; ``chance`` is the majority share).
    """
    from radiolib.data.dataset import evaluation_pairs

    if not gans:
        raise ValueError("evaluate_synthesis needs at least one trained GAN")
    ev = cfg.evaluation
    pairs = evaluation_pairs(cohort, ev.pairs, seed=cfg.curation.seed, split="test")
    synths = {
        key: synthesize_pairs(gan, pairs, device=device, inpaint_margin=cfg.model.inpaint_margin)
        for key, gan in gans.items()
    }
    anchors = anchor_syntheses(pairs)
    seeds = sorted({seed for _, seed in gans})
    frames = []
    for seed in seeds:
        same_seed = {m: synths[(m, s)] for (m, s) in synths if s == seed}
        keep = background_keep_region(same_seed, cfg.model.erosion_px)
        for method, synth in {**same_seed, **anchors}.items():
            frames.append(evaluate_pairs(method, synth, pairs, cfg, keep).assign(seed=seed))
    per_pair = pd.concat(frames, ignore_index=True)

    rows: list[dict] = []
    boot = {"n": ev.bootstrap}
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

    test_slices = np.flatnonzero(cohort.split[cohort.tumour_patient] == "test")
    real_images = cohort.tumour_images[test_slices]
    real_masks = cohort.tumour_masks[test_slices]
    for (method, seed), synth in synths.items():
        region = synth["hole"] if method == "inpainting" else synth["mask"]
        r = realism(real_images, real_masks, synth["image"], region, n_perm=200, seed=seed)
        rows += [_row("realism", method, seed, k, v) for k, v in r.items()]

    panel = _counterfactual_panel(cohort, gans, pairs, cfg, device)
    real_div = diversity(panel["real"]["images"])
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

    if truth is not None:
        rows += _truth_rows(cohort, cfg, per_pair, pairs, synths, truth)
    return SynthesisEvaluation(
        pairs=pairs, synths=synths, per_pair=per_pair, results=pd.DataFrame(rows), panel=panel
    )


LOWER_IS_BETTER = {"mse", "kid", "mmd2"}


def verdicts(results: pd.DataFrame, section: str, first: str, second: str) -> pd.DataFrame:
    """Which of two methods does better on each measure of ``section``, and whether the data
    can tell: ``first better`` / ``second better`` only when their pooled 95 % intervals
    (``seed == "all"`` rows of :func:`evaluate_synthesis` results) do not overlap, else
    ``not resolved``. Lower is better for MSE-like measures, higher for the rest.
    Returns index ``measure`` with both values and the verdict."""
    part = results[(results.section == section) & (results.seed == "all")]
    if part.empty:
        raise ValueError(f"no pooled rows in section {section!r}")
    rows = {}
    for measure, group in part.groupby("measure", sort=False):
        by = group.set_index("method")
        if first not in by.index or second not in by.index:
            continue
        a, b = by.loc[first], by.loc[second]
        low = measure in LOWER_IS_BETTER
        if (a.high < b.low) if low else (a.low > b.high):
            verdict = f"{first} better"
        elif (b.high < a.low) if low else (b.low > a.high):
            verdict = f"{second} better"
        else:
            verdict = "not resolved"
        rows[measure] = {first: a.value, second: b.value, "verdict": verdict}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "measure"
    return out


def _counterfactual_panel(
    cohort: Any, gans: Mapping, pairs: Mapping, cfg: Any, device: str, max_donors: int = 12
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


def _truth_rows(
    cohort: Any, cfg: Any, per_pair: pd.DataFrame, pairs: Mapping, synths: Mapping, truth: Any
) -> list[dict]:
    patients = truth.patients
    ids = np.asarray(cohort.patients)
    donor_truth = patients.loc[ids[pairs["donor_patient"]]].reset_index(drop=True)
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
                lambda r, a=a, b=b: _spearman(a[r], b[r]),
                len(group),
                units,
                n=cfg.evaluation.bootstrap,
            )
            n_ok = int((np.isfinite(a) & np.isfinite(b)).sum())
            rows.append(_row("gene_control", method, "all", trait, rho, low, high, n=n_ok))
        if method == "real":
            continue
        for seed, by_seed in group.groupby("seed"):
            hidden_seed = donor_truth.iloc[by_seed["pair"].to_numpy()]
            for trait, hidden in TRAIT_TRUTH.items():
                rho = _spearman(
                    by_seed[f"synth_{trait}"].to_numpy(np.float64),
                    hidden_seed[hidden].to_numpy(np.float64),
                )
                rows.append(_row("gene_control", method, seed, trait, rho))

    subtype = patients.loc[ids, "subtype"].to_numpy()
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
    rows.append(_row("subtype", "chance", "-", "accuracy", chance, n=len(donor_subtype)))
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
    curated: Any,
    runs: Sequence[Any],
    cfg: Any,
    device: str = "cpu",
    out: Any = None,
    truth: Any | None = None,
) -> SynthesisEvaluation:
    """``radiolib evaluate``: load the curated cohort and the trained run folders ``runs``
    (method and seed read from each checkpoint), evaluate, and write ``results.csv``,
    ``per_pair.csv`` and ``runs.csv`` into ``out`` when given. ``result.runs`` says which runs
    are unfinished; a run of another cohort, or two of the same model and seed, raise
    (:func:`radiolib.train.inspect_runs`)."""
    from radiolib.config import resolve_device
    from radiolib.data.curated import load_curated
    from radiolib.io import atomic_write, check_folder_path
    from radiolib.train import inspect_runs, load_generator

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
