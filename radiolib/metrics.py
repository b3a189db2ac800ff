"""Measures of synthesis quality: pure functions of images, masks and numbers.

Every image here is a numpy array in [0, 1] (the curated HU window). The protocol that applies
these measures to trained GANs on held-out pairs is :mod:`radiolib.evaluation`.

* image metrics: :func:`mse`, :func:`psnr` and :func:`ssim` of two images, over the whole image
  or a region (:func:`region_metrics`, :func:`disk`);
* aggregation: :func:`bootstrap` and :func:`bootstrap_ci`, intervals over the independent units
  (donors, training seeds) rather than over pairs;
* realism: KID and a Gaussian-kernel MMD permutation test between real and synthetic tumour slices
  on handcrafted features (:func:`realism_features`);
* gene control: the :data:`MEASURED_TRAITS` of a tumour slice (:func:`measure_traits`) and their
  Spearman correlation with a truth (:func:`trait_correlation`);
* counterfactuals: one background, several genes (:func:`counterfactual_effect`);
* mode collapse: :func:`diversity` of synthetic tumours relative to real ones.

PSNR of two identical images is ``inf``. Single-pair functions report ``inf``; aggregations
(:func:`radiolib.evaluation.table1`) cap PSNR at :data:`PSNR_CAP_DB` before averaging and count
the capped pairs in a ``<metric>_capped`` column, so one untouched pair neither vanishes nor makes
the mean infinite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

PSNR_CAP_DB = 100.0  # = MSE 1e-10 for data_range 1; used only when aggregating

# the traits measure_traits reads on a slice (the phantom's hidden traits are another set)
MEASURED_TRAITS = ("diameter_mm", "attenuation_hu", "margin_sharpness")
SSIM_WINDOW = 7  # skimage's default window; regions smaller than this get NaN metrics


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
                "convert network outputs with radiolib.data.dataset.from_net"
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


def _unit_codes(groups: Sequence[ArrayLike], size: int) -> list[np.ndarray]:
    """Each grouping as integer codes (size,)."""
    codes = []
    for g in groups:
        g = np.asarray(g)
        if g.shape != (size,):
            raise ValueError(f"a grouping has shape {g.shape}, the values ({size},)")
        codes.append(np.unique(g, return_inverse=True)[1].ravel())
    return codes


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    size: int,
    groups: Sequence[ArrayLike] | None = None,
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
    groups: Sequence[ArrayLike] | None = None,
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


def spearman(a: np.ndarray, b: np.ndarray) -> float:
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
        rho = spearman(a, b)
        p = stats.spearmanr(a[ok], b[ok])[1] if np.isfinite(rho) else np.nan
        rows.append({"trait": mcol, "rho": float(rho), "p": float(p), "n": int(ok.sum())})
    return pd.DataFrame(rows).set_index("trait")


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
