"""Curation of the cohort into 2D training slices, as in the paper's section 3.

For every patient with a CT, a tumour segmentation and an expression profile:

1. the CT (linear) and the tumour mask (linear, then ``>= 0.5``) are resampled to an isotropic
   grid of ``spacing_mm`` with identity direction (LPS axes, array order ``(z, y, x)``);
2. a cube volume of interest (VOI) of edge ``voi_mm`` is cropped around the centre of mass of the
   largest connected tumour component, padded with air (-1000 HU, mask 0) beyond the scan;
3. every axial slice of that VOI showing tumour becomes a training slice: HU window
   ``hu_window`` mapped to [0, 1] and clipped, resized to ``image_size`` x ``image_size`` by area
   averaging (masks: area average ``>= 0.5``);
4. backgrounds: the lungs are segmented, the tumour (dilated by ``TUMOUR_MARGIN_MM``) is removed
   from the lung mask, a Euclidean distance transform (mm) is taken inside it, and
   ``background_vois`` centres are drawn among voxels ``background_min_mm`` to
   ``background_max_mm`` from the mask boundary; ``background_slices`` random axial slices of the
   ``voi_mm`` VOI around each centre become background slices (same window and resize);
5. the patients are split into train and test (patient level, seeded, stable);
6. expression: genes with any missing value are dropped, ``log2(x + 1)``, then a per-gene z-score
   whose mean and standard deviation come from the training patients.

The result is a folder (``arrays.npz``, ``slices.csv``, ``patients.csv``, ``manifest.json``)
written atomically and reused by a re-run with the same inputs and parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.transform import resize_local_mean
from tqdm.auto import tqdm

from radiolib.config import CurationConfig
from radiolib.errors import CohortError
from radiolib.io import (
    atomic_folder,
    check_folder_path,
    fsync_tree,
    leftovers,
    read_json,
    remove_leftovers,
    sha256_file,
    write_json,
)

#: Bumped whenever the curated folder's content changes meaning; part of the reuse check.
CURATION_FORMAT = 1
AIR_HU = -1000.0
LUNG_THRESHOLD_HU = -400.0
LUNG_CLOSING_MM = 5.0  # closes vessels and small nodules into the lung mask
LUNG_MIN_RATIO = 0.05  # a second air component is a lung only if >= 5 % of the largest
TUMOUR_MARGIN_MM = 3.0  # tumour dilation removed from the lung before choosing backgrounds
MAX_OUTSIDE_FRACTION = 0.5  # a VOI more than half outside the scan is kept with a warning
EXPRESSION_TRANSFORM = (
    "genes with any missing value dropped; log2(x + 1); per-gene z-score (x - mean) / std with "
    "mean and population std (ddof=0) over the training patients; genes with zero variance "
    "over them dropped"
)

ARRAY_KEYS = (
    "patients",
    "split",
    "genes",
    "gene_names",
    "tumour_images",
    "tumour_masks",
    "tumour_patient",
    "background_images",
    "background_patient",
)


# --------------------------------------------------------------------------------------------
# Expression
# --------------------------------------------------------------------------------------------


def preprocess_expression(
    expression: pd.DataFrame,
    reference: Sequence[str] | None = None,
    source: str = "expression table",
) -> tuple[np.ndarray, list[str], list[str], dict[str, Any]]:
    """Genes x samples linear values -> standardised ``(P, G)`` float32, samples as rows.

    Transform: genes with any missing value (NaN) are dropped; ``y = log2(x + 1)``; per gene,
    ``z = (y - mean) / std`` with the mean and population standard deviation (ddof=0) over the
    ``reference`` samples (default: all samples); genes whose std over the reference is zero are
    dropped too. Returns ``(z, sample_ids, gene_names, report)``; ``report`` counts
    ``genes_in``, ``genes_with_missing``, ``genes_constant``, ``genes_kept``, ``samples``.

    Raises :class:`CohortError` naming ``source`` for an empty or non-numeric table, negative
    or infinite values, duplicated samples, or when no gene is complete.
    """
    if not isinstance(expression, pd.DataFrame) or expression.shape[0] == 0:
        raise CohortError(f"{source}: expected a non-empty genes x samples table")
    if expression.shape[1] < 2:
        raise CohortError(
            f"{source}: per-gene standardisation needs >= 2 samples, got {expression.shape[1]}"
        )
    samples = [str(c) for c in expression.columns]
    dup = sorted({s for s in samples if samples.count(s) > 1})
    if dup:
        raise CohortError(f"{source}: duplicated sample columns {dup[:5]}")
    try:
        values = expression.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise CohortError(f"{source}: non-numeric expression values ({exc})") from None
    if np.isinf(values).any():
        g, s = np.argwhere(np.isinf(values))[0]
        raise CohortError(
            f"{source}: infinite value for gene {expression.index[g]!r}, sample {samples[s]!r}"
        )
    if (values < 0).any():  # NaN compares False
        g, s = np.argwhere(values < 0)[0]
        raise CohortError(
            f"{source}: negative expression {values[g, s]} for gene {expression.index[g]!r}, "
            f"sample {samples[s]!r}; expected linear non-negative values (e.g. FPKM)"
        )
    complete = ~np.isnan(values).any(axis=1)
    if not complete.any():
        raise CohortError(
            f"no gene without missing values in {source} ({values.shape[0]} genes, "
            f"{values.shape[1]} samples)"
        )
    logged = np.log2(values[complete] + 1.0)
    if reference is None:
        ref_cols = np.arange(len(samples))
    else:
        missing = [r for r in reference if r not in samples]
        if missing or len(reference) < 2:
            raise CohortError(
                f"{source}: reference samples must be >= 2 columns of the table; "
                f"missing {missing[:5]}, given {len(reference)}"
            )
        ref_cols = np.array([samples.index(r) for r in reference])
    mean = logged[:, ref_cols].mean(axis=1, keepdims=True)
    std = logged[:, ref_cols].std(axis=1, keepdims=True)
    # log2 values span ~0-20: a std below 1e-8 is rounding noise of a constant gene
    varying = std[:, 0] > 1e-8
    if not varying.any():
        raise CohortError(f"{source}: every complete gene is constant over the reference samples")
    z = ((logged[varying] - mean[varying]) / std[varying]).T.astype(np.float32)
    genes = [str(g) for g in np.asarray(expression.index)[complete][varying]]
    report = {
        "genes_in": int(values.shape[0]),
        "genes_with_missing": int((~complete).sum()),
        "genes_constant": int((~varying).sum()),
        "genes_kept": int(varying.sum()),
        "samples": len(samples),
        "reference_samples": len(ref_cols),
        "transform": EXPRESSION_TRANSFORM,
    }
    return z, samples, genes, report


# --------------------------------------------------------------------------------------------
# Geometry: resampling, VOIs, slices
# --------------------------------------------------------------------------------------------


def resample_isotropic(
    image: sitk.Image, spacing_mm: float, is_mask: bool = False, default_value: float | None = None
) -> sitk.Image:
    """Resample ``image`` to an isotropic grid of ``spacing_mm`` with identity direction.

    The new grid covers the physical extent of the input (voxel edges, not centres): its first
    voxel's outer corner is the input's outer corner, and it has ``round(extent / spacing_mm)``
    voxels per axis: as many as have their centre inside the scan, so no voxel is made of
    padding alone and less than half a voxel of the scan is left out. CT: linear
    interpolation, ``default_value`` (air, -1000 HU) outside. Mask (``is_mask``): linear
    interpolation of the 0/1 mask then ``>= 0.5``, returned as uint8 {0, 1}.
    """
    if not spacing_mm > 0:
        raise ValueError(f"curation.spacing_mm must be > 0 (got {spacing_mm})")
    dim = image.GetDimension()
    size = np.array(image.GetSize())
    corners = []
    for bits in np.ndindex(*(2,) * dim):
        idx = [(-0.5 if b == 0 else n - 0.5) for b, n in zip(bits, size, strict=True)]
        corners.append(image.TransformContinuousIndexToPhysicalPoint(idx))
    corners = np.array(corners)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    new_size = np.maximum(1, np.floor((hi - lo) / spacing_mm + 0.5 + 1e-6)).astype(int)
    origin = lo + spacing_mm / 2.0
    res = sitk.ResampleImageFilter()
    res.SetOutputSpacing([float(spacing_mm)] * dim)
    res.SetSize([int(s) for s in new_size])
    res.SetOutputOrigin([float(o) for o in origin])
    res.SetOutputDirection(np.eye(dim).ravel().tolist())
    res.SetInterpolator(sitk.sitkLinear)
    if is_mask:
        res.SetDefaultPixelValue(0.0)
        out = res.Execute(sitk.Cast(image > 0, sitk.sitkFloat32))
        return sitk.Cast(out >= 0.5, sitk.sitkUInt8)
    res.SetDefaultPixelValue(AIR_HU if default_value is None else float(default_value))
    return res.Execute(sitk.Cast(image, sitk.sitkFloat32))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean ``(Z, Y, X)`` mask (empty if none)."""
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def tumour_centre(mask: np.ndarray) -> np.ndarray:
    """Voxel index ``(z, y, x)`` (int) of the centre of mass of the largest tumour component."""
    comp = largest_component(np.asarray(mask, bool))
    if not comp.any():
        raise CohortError("empty tumour mask: no voxel to centre a VOI on")
    return np.rint(ndimage.center_of_mass(comp)).astype(int)


def voi_bounds(centre: Sequence[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and stop (exclusive) indices of a cube of ``size`` voxels whose voxel
    ``size // 2`` (per axis) is ``centre``."""
    start = np.asarray(centre, int) - size // 2
    return start, start + size


def crop_voi(volume: np.ndarray, centre: Sequence[int], size: int, fill: float) -> np.ndarray:
    """Cube ``(size, size, size)`` of ``volume`` ``(Z, Y, X)`` with voxel ``size // 2`` at
    ``centre``; parts beyond the volume are ``fill`` (air for CT, 0 for masks)."""
    if size < 1:
        raise ValueError(f"VOI size must be >= 1 voxel (got {size})")
    start, stop = voi_bounds(centre, size)
    out = np.full((size,) * volume.ndim, fill, dtype=volume.dtype)
    src = tuple(
        slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, volume.shape, strict=True)
    )
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, start, strict=True))
    if all(s.stop > s.start for s in src):
        out[dst] = volume[src]
    return out


def voi_outside_fraction(shape: Sequence[int], centre: Sequence[int], size: int) -> float:
    """Share of a cube VOI's voxels that fall outside a volume of ``shape``."""
    start, stop = voi_bounds(centre, size)
    inside = np.prod(
        [max(0, min(b, n) - max(a, 0)) for a, b, n in zip(start, stop, shape, strict=True)]
    )
    return float(1.0 - inside / size ** len(shape))


def window(hu: np.ndarray, hu_window: Sequence[float]) -> np.ndarray:
    """HU -> [0, 1]: ``(hu - lo) / (hi - lo)`` clipped, float32."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if not hi > lo:
        raise ValueError(f"curation.hu_window must be increasing (got {tuple(hu_window)})")
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


SOFT_TISSUE_HU = -300.0  # above this a pixel is soft tissue (or bone), below it aerated lung


def soft_tissue_share(
    images: np.ndarray,
    hu_window: Sequence[float],
    masks: np.ndarray | None = None,
    threshold_hu: float = SOFT_TISSUE_HU,
) -> np.ndarray:
    """Per slice, the share of pixels denser than ``threshold_hu`` outside the tumour mask.

    images (N, S, S) windowed to [0, 1] by ``hu_window``; masks (N, S, S) {0, 1} or None (no
    tumour). Returns (N,) float in [0, 1]: how much chest wall, mediastinum and vessel a
    slice's context holds, so tumour and background slices can be compared on that footing.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, S, S), got {images.shape}")
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if not lo < threshold_hu < hi:
        raise ValueError(f"threshold {threshold_hu} HU lies outside the window {lo}..{hi} HU")
    dense = images > (threshold_hu - lo) / (hi - lo)
    outside = np.ones_like(dense) if masks is None else ~np.asarray(masks, bool)
    if outside.shape != dense.shape:
        raise ValueError(f"masks {outside.shape} differ from images {dense.shape}")
    counted = outside.sum((1, 2))
    return np.where(counted > 0, (dense & outside).sum((1, 2)) / np.maximum(counted, 1), np.nan)


def resize_stack(stack: np.ndarray, image_size: int, is_mask: bool = False) -> np.ndarray:
    """``(n, H, W)`` -> ``(n, S, S)`` by area averaging (masks: average ``>= 0.5``, uint8).

    A mask slice that would vanish (tumour smaller than half a pixel) keeps its pixel of largest
    coverage, so a tumour slice never has an empty mask.
    """
    stack = np.asarray(stack, np.float32)
    if stack.shape[0] == 0:
        return np.zeros((0, image_size, image_size), np.uint8 if is_mask else np.float32)
    out = resize_local_mean(
        stack, (image_size, image_size), preserve_range=True, channel_axis=0
    ).astype(np.float32)
    if not is_mask:
        return np.clip(out, 0.0, 1.0)
    binary = out >= 0.5
    for k in np.flatnonzero(~binary.any(axis=(1, 2)) & (stack.reshape(len(stack), -1).max(1) > 0)):
        binary[k].flat[int(out[k].argmax())] = True
    return binary.astype(np.uint8)


def tumour_slices(
    ct_voi: np.ndarray, mask_voi: np.ndarray, image_size: int, hu_window: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every axial slice of a VOI ``(D, D, D)`` (HU, mask) that contains tumour.

    Returns images ``(n, S, S)`` float32 in [0, 1], masks ``(n, S, S)`` uint8 {0, 1} and the
    slice indices ``(n,)`` within the VOI.
    """
    if ct_voi.shape != mask_voi.shape:
        raise ValueError(f"CT VOI {ct_voi.shape} and mask VOI {mask_voi.shape} differ")
    idx = np.flatnonzero(np.asarray(mask_voi, bool).any(axis=(1, 2)))
    images = resize_stack(window(ct_voi[idx], hu_window), image_size)
    masks = resize_stack(np.asarray(mask_voi, bool)[idx], image_size, is_mask=True)
    return images, masks, idx


# --------------------------------------------------------------------------------------------
# Lungs and background centres
# --------------------------------------------------------------------------------------------


def _bbox(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Bounding box of a non-empty boolean mask, grown by ``margin`` voxels within the array."""
    margins = [margin] * mask.ndim if np.isscalar(margin) else list(margin)
    nz = np.nonzero(mask)
    return tuple(
        slice(max(int(a.min()) - m, 0), min(int(a.max()) + m + 1, n))
        for a, m, n in zip(nz, margins, mask.shape, strict=True)
    )


def _closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological closing by a Euclidean ball via two distance transforms (cost does not
    grow with the radius)."""
    pad = int(np.ceil(radius_mm / min(spacing))) + 1
    padded = np.pad(mask, pad)
    dilated = ndimage.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    return closed[tuple(slice(pad, -pad) for _ in mask.shape)]


def segment_lungs(
    ct: np.ndarray,
    spacing_mm: float | Sequence[float],
    threshold_hu: float = LUNG_THRESHOLD_HU,
    closing_mm: float = LUNG_CLOSING_MM,
) -> np.ndarray:
    """Boolean lung mask of a CT ``(Z, Y, X)`` in HU.

    The body is the largest connected component of tissue (``>= threshold_hu``); air
    (``< threshold_hu``) inside its convex hull, slice by slice, is split in 6-connected
    components and the two largest are kept (the second only if it holds >=
    ``LUNG_MIN_RATIO`` of the first, so bowel gas or the trachea alone are not taken for a
    lung). The convex hull, rather than "air not touching the image border", keeps a lung that
    a reduced field of view cuts at the image edge. A closing by a ball of ``closing_mm`` and
    an axial hole filling then bring vessels and nodules into the mask.
    """
    ct = np.asarray(ct)
    spacing = (
        tuple(float(s) for s in spacing_mm)
        if isinstance(spacing_mm, (tuple, list, np.ndarray))
        else (float(spacing_mm),) * 3
    )
    air = ct < threshold_hu
    body = largest_component(~air)
    if not body.any():
        return np.zeros(ct.shape, bool)
    inside = np.zeros(ct.shape, bool)
    box = _bbox(body)
    hull = inside[box]  # a view: filled slice by slice
    for k, sl in enumerate(body[box]):
        if sl.any():
            try:
                hull[k] = convex_hull_image(sl)
            except (ValueError, RuntimeError):  # degenerate (collinear) slice: no hull
                hull[k] = sl
    labels, n = ndimage.label(air & inside)
    if n == 0:
        return np.zeros(ct.shape, bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    order = np.argsort(sizes)[::-1]
    keep = [int(order[0])] if sizes[order[0]] > 0 else []
    if len(order) > 1 and keep and sizes[order[1]] >= LUNG_MIN_RATIO * sizes[order[0]] > 0:
        keep.append(int(order[1]))
    lungs = np.isin(labels, keep) if keep else np.zeros(ct.shape, bool)
    if not lungs.any():
        return lungs
    # work on the lungs' bounding box (plus the closing radius) to keep it cheap
    box = _bbox(lungs, [int(np.ceil(closing_mm / s)) + 1 for s in spacing])
    sub = _closing(lungs[box], closing_mm, spacing) if closing_mm > 0 else lungs[box]
    for k in range(sub.shape[0]):
        sub[k] = ndimage.binary_fill_holes(sub[k])
    out = np.zeros(ct.shape, bool)
    out[box] = sub
    return out


def lung_boundary_distance(
    lungs: np.ndarray,
    tumour: np.ndarray,
    spacing_mm: float,
    tumour_margin_mm: float = TUMOUR_MARGIN_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of every lung voxel to the lung boundary, the tumour excluded.

    The tumour, dilated by ``tumour_margin_mm``, is removed from ``lungs`` ``(Z, Y, X)``; the
    Euclidean distance of every remaining voxel to the nearest voxel outside it (the volume's
    edge counts as outside) is returned with the remaining region: ``(distance, region)``.
    """
    lungs = np.asarray(lungs, bool)
    tumour = np.asarray(tumour, bool)
    dist = np.zeros(lungs.shape, np.float32)
    region = lungs.copy()
    if lungs.any():
        # distance transforms on bounding boxes only: whole scans are tens of millions of voxels
        box = _bbox(lungs, 1)
        region = lungs[box].copy()
        if tumour.any():
            t_box = _bbox(tumour, int(np.ceil(tumour_margin_mm / spacing_mm)) + 1)
            near = (
                ndimage.distance_transform_edt(~tumour[t_box], sampling=spacing_mm)
                <= tumour_margin_mm
            )
            full = np.zeros(lungs.shape, bool)
            full[t_box] = near
            region &= ~full[box]
        # pad: the volume's edge counts as outside the lung
        sub = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing_mm)
        dist[box] = sub[1:-1, 1:-1, 1:-1]
        full_region = np.zeros(lungs.shape, bool)
        full_region[box] = region
        region = full_region
    return dist, region


def sample_background_centres(
    lungs: np.ndarray,
    tumour: np.ndarray,
    spacing_mm: float,
    n: int,
    min_mm: float,
    max_mm: float,
    rng: np.random.Generator | int,
    tumour_margin_mm: float = TUMOUR_MARGIN_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` background centres inside the lungs, ``min_mm`` to ``max_mm`` from the boundary.

    Distances come from :func:`lung_boundary_distance` (tumour excluded); centres are drawn
    uniformly among voxels with ``min_mm <= distance <= max_mm`` (without replacement when there
    are enough). Returns centres ``(k, 3)`` int ``(z, y, x)`` and their distances ``(k,)`` mm;
    ``k = 0`` when no voxel qualifies.
    """
    rng = np.random.default_rng(rng)
    dist, region = lung_boundary_distance(lungs, tumour, spacing_mm, tumour_margin_mm)
    candidates = np.flatnonzero(region & (dist >= min_mm) & (dist <= max_mm))
    if candidates.size == 0 or n <= 0:
        return np.zeros((0, 3), int), np.zeros(0)
    pick = rng.choice(candidates, size=n, replace=candidates.size < n)
    centres = np.stack(np.unravel_index(pick, lungs.shape), axis=1).astype(int)
    return centres, dist.ravel()[pick].astype(np.float64)


def background_slices(
    ct_voi: np.ndarray,
    mask_voi: np.ndarray,
    n: int,
    image_size: int,
    hu_window: Sequence[float],
    rng: np.random.Generator | int,
    inside: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random distinct axial slices of a background VOI ``(D, D, D)``.

    Slices are drawn among those inside the scan (``inside`` ``(D,)`` bool; a VOI at the top or
    bottom of a scan has slices made only of padding) that show no tumour; when fewer than
    ``n`` qualify, among the slices inside the scan (then all slices, with replacement if
    needed). Returns images ``(n, S, S)`` float32 in [0, 1], slice indices ``(n,)`` and the
    tumour pixel count of each chosen slice at the VOI's resolution ``(n,)``.
    """
    rng = np.random.default_rng(rng)
    depth = ct_voi.shape[0]
    inside = np.ones(depth, bool) if inside is None else np.asarray(inside, bool)
    tumour_px = np.asarray(mask_voi, bool).sum(axis=(1, 2))
    pool = np.arange(depth)
    for candidate in (np.flatnonzero(inside & (tumour_px == 0)), np.flatnonzero(inside)):
        if candidate.size >= n:
            pool = candidate
            break
    idx = np.sort(rng.choice(pool, size=n, replace=pool.size < n))
    images = resize_stack(window(ct_voi[idx], hu_window), image_size)
    return images, idx, tumour_px[idx]


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


@dataclass
class BackgroundSampling:
    """One axial slice through a background centre, to show how backgrounds are chosen."""

    patient_id: str
    ct: np.ndarray  # (Y, X) windowed to [0, 1]
    lungs: np.ndarray  # (Y, X) bool lung mask, tumour excluded
    band: np.ndarray  # (Y, X) bool: lung voxels min_mm..max_mm from the boundary
    tumour: np.ndarray  # (Y, X) bool
    centres: np.ndarray  # (k, 2) (y, x) of the centres drawn in this slice
    spacing_mm: float


def explain_background_sampling(
    ct: sitk.Image, mask: sitk.Image, cfg: CurationConfig, seed: int, patient_id: str = "?"
) -> BackgroundSampling:
    """The lung mask, the distance band and the drawn centres on the axial slice of the first
    centre, computed exactly as :func:`curate_scan` computes them for this patient."""
    ct_iso = resample_isotropic(ct, cfg.spacing_mm)
    hu = sitk.GetArrayFromImage(ct_iso)
    tum = sitk.GetArrayFromImage(resample_isotropic(mask, cfg.spacing_mm, is_mask=True)) > 0
    sp = float(cfg.spacing_mm)
    lungs = segment_lungs(hu, sp)
    dist, region = lung_boundary_distance(lungs, tum, sp)
    centres, _ = sample_background_centres(
        lungs,
        tum,
        sp,
        max(cfg.background_vois, 1),
        cfg.background_min_mm,
        cfg.background_max_mm,
        _patient_rng(seed, patient_id),
    )
    if len(centres) == 0:
        raise CohortError(f"patient {patient_id}: no background centre could be drawn")
    z = int(centres[0][0])
    band = region[z] & (dist[z] >= cfg.background_min_mm) & (dist[z] <= cfg.background_max_mm)
    return BackgroundSampling(
        patient_id=patient_id,
        ct=window(hu[z], cfg.hu_window),
        lungs=region[z],
        band=band,
        tumour=tum[z],
        centres=centres[centres[:, 0] == z][:, 1:],
        spacing_mm=sp,
    )


def split_patients(patients: Sequence[str], test_fraction: float, seed: int) -> np.ndarray:
    """Patient-level split: ``(P,)`` array of ``'train'`` / ``'test'`` in the order given.

    Each patient is ranked by ``sha256(seed, patient id)``; the ``max(1, round(P *
    test_fraction))`` first are test. The split depends only on the set of ids and the seed (not
    their order), and adding a patient moves at most one other. Needs >= 1 test and >= 2 train
    patients.
    """
    ids = [str(p) for p in patients]
    if len(set(ids)) != len(ids):
        raise CohortError(f"duplicated patient ids in the split: {sorted(ids)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"curation.test_fraction must be in (0, 1) (got {test_fraction})")
    n_test = max(1, int(round(len(ids) * test_fraction)))
    if len(ids) - n_test < 2:
        raise CohortError(
            f"cannot split {len(ids)} patients with test_fraction={test_fraction}: need >= 1 "
            f"test and >= 2 train patients (would give {n_test} test, {len(ids) - n_test} train)"
        )
    key = {p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest() for p in ids}
    test = set(sorted(ids, key=lambda p: key[p])[:n_test])
    return np.array(["test" if p in test else "train" for p in ids])


# --------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------


@dataclass
class PatientCuration:
    """What one patient contributes: tumour slices, background slices and notes."""

    patient_id: str
    tumour_images: np.ndarray  # (n, S, S) float32 [0, 1]
    tumour_masks: np.ndarray  # (n, S, S) uint8
    tumour_z_mm: np.ndarray  # (n,) physical z (LPS) of each slice
    tumour_voi_slice: np.ndarray  # (n,) slice index within the VOI
    tumour_centre_mm: np.ndarray  # (3,) x, y, z (LPS) of the VOI centre
    background_images: np.ndarray  # (m, S, S) float32 [0, 1]
    background_info: pd.DataFrame  # (m rows) voi, slice, z_mm, centre_*_mm, distance_mm, tumour_px
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    background_skip: str = ""


def _patient_rng(seed: int, patient_id: str) -> np.random.Generator:
    # a patient's draws depend on the seed and its id only, not on who else is curated
    word = int.from_bytes(hashlib.sha256(str(patient_id).encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), word])


def _check_grids(ct: sitk.Image, mask: sitk.Image, patient_id: str) -> None:
    if ct.GetDimension() != 3:
        raise CohortError(f"patient {patient_id}: expected a 3D CT, got {ct.GetDimension()}D")
    same = (
        ct.GetSize() == mask.GetSize()
        and np.allclose(ct.GetSpacing(), mask.GetSpacing(), atol=1e-4)
        and np.allclose(ct.GetOrigin(), mask.GetOrigin(), atol=1e-3)
        and np.allclose(ct.GetDirection(), mask.GetDirection(), atol=1e-4)
    )
    if not same:
        raise CohortError(
            f"patient {patient_id}: tumour mask grid (size {mask.GetSize()}, spacing "
            f"{mask.GetSpacing()}) differs from the CT grid (size {ct.GetSize()}, spacing "
            f"{ct.GetSpacing()}); expected the same grid"
        )


def curate_scan(
    ct: sitk.Image, mask: sitk.Image, cfg: CurationConfig, seed: int, patient_id: str = "?"
) -> PatientCuration:
    """Tumour and background slices of one patient (steps 1-4 of the module docstring).

    ``ct`` float HU and ``mask`` {0, 1} on the same 3D grid. Raises :class:`CohortError` for an
    empty mask, a grid mismatch or non-finite CT values; a patient without lung voxels at the
    wanted distance keeps its tumour slices and gets ``background_skip`` set.
    """
    _check_grids(ct, mask, patient_id)
    ct_iso = resample_isotropic(ct, cfg.spacing_mm)
    mask_iso = resample_isotropic(mask, cfg.spacing_mm, is_mask=True)
    hu = sitk.GetArrayFromImage(ct_iso)  # (Z, Y, X)
    tum = sitk.GetArrayFromImage(mask_iso).astype(bool)
    if not np.isfinite(hu).all():
        raise CohortError(f"patient {patient_id}: CT holds non-finite values")
    if not tum.any():
        raise CohortError(f"patient {patient_id}: empty tumour mask (after resampling)")
    rng = _patient_rng(seed, patient_id)
    size = int(round(cfg.voi_mm / cfg.spacing_mm))
    sp = float(cfg.spacing_mm)
    origin = np.array(ct_iso.GetOrigin())  # x, y, z
    notes: list[str] = []

    centre = tumour_centre(tum)
    outside = voi_outside_fraction(hu.shape, centre, size)
    if outside > MAX_OUTSIDE_FRACTION:
        notes.append(f"tumour VOI {outside:.0%} outside the scan (padded with air)")
    mask_native = sitk.GetArrayViewFromImage(mask) > 0
    edge = (
        mask_native[0].any()
        or mask_native[-1].any()
        or mask_native[:, 0].any()
        or mask_native[:, -1].any()
        or mask_native[:, :, 0].any()
        or mask_native[:, :, -1].any()
    )
    if edge:
        notes.append("tumour touches the edge of the scan")
    ct_voi = crop_voi(hu, centre, size, AIR_HU)
    mask_voi = crop_voi(tum, centre, size, False)
    cut = int(tum.sum() - mask_voi.sum())
    if cut:
        notes.append(
            f"tumour extends beyond the {cfg.voi_mm:g} mm VOI ({cut} voxels, "
            f"{cut / tum.sum():.1%} of it, cut)"
        )
    images, masks, idx = tumour_slices(ct_voi, mask_voi, cfg.image_size, cfg.hu_window)
    start, _ = voi_bounds(centre, size)
    z_mm = origin[2] + (start[0] + idx) * sp
    centre_mm = origin + centre[::-1] * sp
    zs = np.flatnonzero(tum.any(axis=(1, 2)))

    bg_images = np.zeros((0, cfg.image_size, cfg.image_size), np.float32)
    rows: list[dict[str, Any]] = []
    skip = ""
    if cfg.background_vois > 0 and cfg.background_slices > 0:
        lungs = segment_lungs(hu, sp)
        centres, dists = sample_background_centres(
            lungs,
            tum,
            sp,
            cfg.background_vois,
            cfg.background_min_mm,
            cfg.background_max_mm,
            rng,
        )
        if not lungs.any():
            skip = "no lung found (no air component inside the body)"
        elif len(centres) == 0:
            skip = (
                f"no lung voxel {cfg.background_min_mm:g}-{cfg.background_max_mm:g} mm from the "
                "lung boundary and the tumour"
            )
        stacks = []
        for v, (c, d) in enumerate(zip(centres, dists, strict=True)):
            b_ct = crop_voi(hu, c, size, AIR_HU)
            b_mask = crop_voi(tum, c, size, False)
            b_start, _ = voi_bounds(c, size)
            z = b_start[0] + np.arange(size)
            imgs, sl, px = background_slices(
                b_ct,
                b_mask,
                cfg.background_slices,
                cfg.image_size,
                cfg.hu_window,
                rng,
                inside=(z >= 0) & (z < hu.shape[0]),
            )
            c_mm = origin + c[::-1] * sp
            stacks.append(imgs)
            for s, p in zip(sl, px, strict=True):
                rows.append(
                    {
                        "voi": v,
                        "slice": int(s),
                        "z_mm": float(origin[2] + (b_start[0] + s) * sp),
                        "centre_x_mm": c_mm[0],
                        "centre_y_mm": c_mm[1],
                        "centre_z_mm": c_mm[2],
                        "distance_mm": float(d),
                        "tumour_px": int(p),
                    }
                )
        if stacks:
            bg_images = np.concatenate(stacks).astype(np.float32)
    info = {
        "ct_size": "x".join(str(s) for s in ct.GetSize()),
        "ct_spacing_mm": "x".join(f"{s:.4g}" for s in ct.GetSpacing()),
        "tumour_volume_ml": float(tum.sum() * sp**3 / 1000.0),
        "tumour_extent_z_mm": float((zs.max() - zs.min() + 1) * sp),
        "voi_outside_fraction": outside,
    }
    return PatientCuration(
        patient_id=patient_id,
        tumour_images=images,
        tumour_masks=masks,
        tumour_z_mm=z_mm,
        tumour_voi_slice=idx,
        tumour_centre_mm=centre_mm,
        background_images=bg_images,
        background_info=pd.DataFrame(rows),
        info=info,
        warnings=notes,
        background_skip=skip,
    )


# --------------------------------------------------------------------------------------------
# The curated cohort
# --------------------------------------------------------------------------------------------


@dataclass
class CuratedCohort:
    """The curated cohort every later step uses (see the module docstring)."""

    path: Path
    patients: list[str]  # (P,) index order used everywhere
    split: np.ndarray  # (P,) str 'train' | 'test'
    genes: np.ndarray  # (P, G) float32 standardised expression
    gene_names: list[str]  # (G,)
    tumour_images: np.ndarray  # (N, S, S) float32 [0, 1]
    tumour_masks: np.ndarray  # (N, S, S) uint8 {0, 1}
    tumour_patient: np.ndarray  # (N,) int index into patients
    background_images: np.ndarray  # (M, S, S) float32 [0, 1]
    background_patient: np.ndarray  # (M,) int index into patients
    slices: pd.DataFrame  # one row per slice (tumour rows first, then background rows)
    manifest: dict

    @property
    def image_size(self) -> int:
        return int(self.tumour_images.shape[-1])

    @property
    def n_genes(self) -> int:
        return int(self.genes.shape[1])

    def patient_indices(self, split: str) -> np.ndarray:
        """Indices ``(k,)`` of the patients of ``split`` ('train' or 'test')."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test' (got {split!r})")
        return np.flatnonzero(self.split == split)


def _validate_config(cfg: CurationConfig) -> None:
    problems = []
    if not cfg.spacing_mm > 0:
        problems.append(f"curation.spacing_mm must be > 0 (got {cfg.spacing_mm})")
    elif cfg.voi_mm < 4 * cfg.spacing_mm:
        problems.append(f"curation.voi_mm must be >= 4 voxels (got {cfg.voi_mm} mm)")
    if cfg.image_size < 4:
        problems.append(f"curation.image_size must be >= 4 (got {cfg.image_size})")
    if not cfg.hu_window[0] < cfg.hu_window[1]:
        problems.append(f"curation.hu_window must be increasing (got {cfg.hu_window})")
    if cfg.background_vois < 0 or cfg.background_slices < 0:
        problems.append("curation.background_vois and background_slices must be >= 0")
    if not 0 <= cfg.background_min_mm < cfg.background_max_mm:
        problems.append("curation.background_min_mm must be >= 0 and < background_max_mm")
    if not 0 < cfg.test_fraction < 1:
        problems.append(f"curation.test_fraction must be in (0, 1) (got {cfg.test_fraction})")
    if problems:
        raise ValueError("; ".join(problems))


def _expression_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("GSE103584*RNAseq*") if p.is_file())


def input_hashes(root: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> dict:
    """Cheap fingerprint of a raw cohort folder: sha256 of the expression file(s) and of the
    tables, and one hash over every file's relative path, size and mtime (DICOM included,
    without reading it). Paths under ``exclude`` are left out."""
    root = Path(root)
    if not root.is_dir():
        raise CohortError(f"cohort folder {root} does not exist")
    skip = [Path(e).resolve() for e in exclude]
    # the temporary folders of a result being written count as that result
    prefixes = tuple(f".{e.name}.{kind}-" for e in skip for kind in ("tmp", "old"))
    h = hashlib.sha256()
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(
            x
            for x in dirnames
            if (d / x).resolve() not in skip and not (prefixes and x.startswith(prefixes))
        )
        for name in sorted(filenames):
            p = d / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
    tables = {}
    for p in _expression_files(root) + sorted(root.rglob("NSCLCR01Radiogenomic_DATA_LABELS_*.csv")):
        tables[str(p.relative_to(root))] = sha256_file(p)
    return {"files": n, "files_stat_sha256": h.hexdigest(), "tables_sha256": tables}


def _versions() -> dict[str, str]:
    import scipy
    import skimage

    import radiolib

    return {
        "radiolib": radiolib.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "SimpleITK": sitk.Version_VersionString(),
        "scikit-image": skimage.__version__,
    }


def _open_cohort(root: Path) -> Any:
    from radiolib.data import nsclc

    return nsclc.open_cohort(root)


def _load_scan(cohort: Any, patient_id: str) -> Any:
    from radiolib.data import nsclc

    return nsclc.load_scan(cohort, patient_id)


def _patient_file(cohort: Any, patient_id: str) -> str:
    try:
        row = cohort.series.loc[patient_id]
        files = row["ct_files"]
        return str(Path(files[0]).parent) if len(files) else str(row["seg_file"])
    except (KeyError, AttributeError, TypeError, IndexError):
        return str(cohort.root)


def _code_hash() -> str:
    """Hash of this module's source: a result made by other curation code is not reused."""
    return sha256_file(__file__)


def _json_normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _reusable(out: Path, params: dict, hashes: dict) -> CuratedCohort | None:
    if not (out / "manifest.json").is_file():
        return None
    try:
        manifest = read_json(out / "manifest.json")
    except (OSError, ValueError):
        return None
    same = (
        manifest.get("format") == CURATION_FORMAT
        and manifest.get("code_sha256") == _code_hash()
        and manifest.get("parameters") == _json_normal(params)
        and manifest.get("input_hashes") == _json_normal(hashes)
    )
    if not same:
        return None
    try:
        return load_curated(out)
    except CohortError:
        return None


def _restore_interrupted(out: Path) -> None:
    """A run killed between its two renames left the previous result as ``.old-PID`` and no
    ``out``: put the newest such result back."""
    for old in reversed(leftovers(out.parent, f".{out.name}.old-")):
        if not out.exists() and (old / "manifest.json").is_file():
            os.replace(old, out)


def _check_source(out: Path, root: Path, replace: bool) -> None:
    """Refuse to replace a curated cohort made from another raw folder unless ``replace``."""
    if replace or not (out / "manifest.json").is_file():
        return
    try:
        made_from = read_json(out / "manifest.json").get("root")
    except (OSError, ValueError, AttributeError):
        return  # a broken result is rebuilt (load_curated names what is wrong)
    if made_from and Path(made_from).resolve() != root.resolve():
        raise CohortError(
            f"{out} holds a cohort curated from {made_from}, not from {root}; refusing to "
            "replace it (pass --replace, or replace=True, to do so, or choose another --out)"
        )


def curate_cohort(
    root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: CurationConfig,
    progress: bool = True,
    replace: bool = False,
) -> CuratedCohort:
    """Curate the raw cohort at ``root`` into the folder ``out`` and return it.

    A previous result in ``out`` with the same parameters and input fingerprint
    (:func:`input_hashes`) is returned as is. Otherwise every patient of
    ``nsclc.open_cohort(root)`` is curated (:func:`curate_scan`); a patient whose scan cannot be
    loaded or has no usable tumour is skipped and listed in ``manifest['skipped']`` (patient,
    file, reason), whatever went wrong with its files. The new folder is built next to ``out``
    and renamed into place only once complete, so a run that dies leaves any previous result
    intact. A result in ``out`` curated from another raw folder is replaced only with
    ``replace``; a folder that is no curated cohort never is.
    """
    if hasattr(cfg, "curation"):  # a whole Profile
        cfg = cfg.curation
    _validate_config(cfg)
    root, out = Path(root), check_folder_path(out, "curated cohort folder")
    _restore_interrupted(out)
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise CohortError(
            f"{out} exists and is not a curated cohort (no manifest.json); refusing to replace it"
        )
    if not root.is_dir():
        raise CohortError(f"cohort folder {root} does not exist")
    _check_source(out, root, replace)
    params = dataclasses.asdict(cfg)
    hashes = input_hashes(root, exclude=[out])
    reused = _reusable(out, params, hashes)
    if reused is not None:
        return reused

    cohort = _open_cohort(root)
    files = getattr(cohort, "files", None) or {}
    expression_files = _expression_files(root)
    expr_name = str(
        files.get("expression") or (expression_files[0] if expression_files else "expression")
    )
    results: list[PatientCuration] = []
    skipped: list[dict[str, str]] = []
    for pid in tqdm(list(cohort.patients), desc="curating", unit="patient", disable=not progress):
        if pid not in cohort.expression.columns:
            skipped.append({"patient": pid, "file": expr_name, "reason": "no expression sample"})
            continue
        try:
            scan = _load_scan(cohort, pid)
            results.append(curate_scan(scan.ct, scan.mask, cfg, cfg.seed, pid))
        except Exception as exc:  # noqa: BLE001 - one patient's bad file must not stop the rest
            skipped.append(
                {
                    "patient": pid,
                    "file": _patient_file(cohort, pid),
                    "reason": f"{type(exc).__name__}: {exc}",
                }
            )
    patients = [r.patient_id for r in results]
    try:
        split = split_patients(patients, cfg.test_fraction, cfg.seed)
    except CohortError as exc:
        why = "; ".join(f"{s['patient']}: {s['reason']}" for s in skipped[:5])
        raise CohortError(f"{exc}. Skipped patients: {why or 'none'}") from None
    train_ids = [p for p, s in zip(patients, split, strict=True) if s == "train"]
    genes, _, gene_names, expr_report = preprocess_expression(
        cohort.expression[patients], reference=train_ids, source=expr_name
    )
    cohort_obj = _assemble(out, results, split, genes, gene_names)
    dropped = getattr(cohort, "dropped", pd.DataFrame())
    dropped_ids = set(dropped.get("patient_id", pd.Series(dtype=str))) - {""}  # "": no patient
    n_found = len(set(cohort.patients) | dropped_ids)
    counts: dict[str, Any] = {
        "subjects_found": n_found,
        "subjects_with_expression": int(
            sum(p in cohort.expression.columns for p in cohort.patients)
        ),
        "expression_samples": int(cohort.expression.shape[1]),
        "subjects_curated": len(patients),
        "subjects_skipped": len(skipped),
        "subjects_dropped": len(dropped_ids - set(cohort.patients)),
        "genes_in": expr_report["genes_in"],
        "genes_kept": expr_report["genes_kept"],
        "genes_with_missing": expr_report["genes_with_missing"],
        "genes_constant": expr_report["genes_constant"],
        "tumour_slices": int(len(cohort_obj.tumour_images)),
        "background_slices": int(len(cohort_obj.background_images)),
    }
    for s in ("train", "test"):
        idx = set(np.flatnonzero(split == s).tolist())
        counts[s] = {
            "patients": len(idx),
            "tumour_slices": int(sum(int(p) in idx for p in cohort_obj.tumour_patient)),
            "background_slices": int(sum(int(p) in idx for p in cohort_obj.background_patient)),
        }
    cohort_obj.manifest = {
        "format": CURATION_FORMAT,
        "code_sha256": _code_hash(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": str(root.resolve()),
        "parameters": _json_normal(params),
        "input_hashes": _json_normal(hashes),
        "expression": expr_report,
        "counts": counts,
        "skipped": skipped,
        "dropped_by_loader": _json_normal(dropped.to_dict("records")) if len(dropped) else [],
        "loader_notes": _records(getattr(cohort, "notes", None)),
        "skipped_inputs": _records(getattr(cohort, "skipped_inputs", None)),
        "background_skipped": [
            {"patient": r.patient_id, "reason": r.background_skip}
            for r in results
            if r.background_skip
        ],
        "warnings": [{"patient": r.patient_id, "warning": w} for r in results for w in r.warnings],
        "versions": _versions(),
        "constants": {
            "lung_threshold_hu": LUNG_THRESHOLD_HU,
            "lung_closing_mm": LUNG_CLOSING_MM,
            "tumour_margin_mm": TUMOUR_MARGIN_MM,
            "air_hu": AIR_HU,
        },
    }
    _write_atomically(out, cohort_obj, _patients_table(results, split))
    return load_curated(out)  # the same object a re-run returns


def _records(frame: pd.DataFrame | None) -> list[dict]:
    return _json_normal(frame.to_dict("records")) if frame is not None and len(frame) else []


def curation_report(cohort: CuratedCohort) -> list[str]:
    """What a curation did, as console lines: the counts, then every patient left out and why
    (with the file), optional inputs skipped, unreadable files that name no patient, notes."""
    m = cohort.manifest

    def line(text: Any) -> str:
        return " ".join(str(text).split())  # a reason may hold a parser's line breaks

    counts = {k: v for k, v in m.get("counts", {}).items() if not isinstance(v, dict)}
    lines = [
        f"curated cohort at {cohort.path}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    ]
    left_out = [(d["patient_id"], d["reason"], d["file"]) for d in m.get("dropped_by_loader", [])]
    left_out += [(s["patient"], s["reason"], s["file"]) for s in m.get("skipped", [])]
    by_patient = sorted(x for x in left_out if x[0])
    if by_patient:
        lines.append(f"{len(by_patient)} patient(s) left out:")
        lines += [f"  {p}: {line(r)} ({f})" for p, r, f in by_patient]
    ignored = [(f, r) for p, r, f in left_out if not p]
    ignored += [(s["file"], s["reason"]) for s in m.get("skipped_inputs", [])]
    lines += [f"ignored file {f}: {line(r)}" for f, r in ignored]
    lines += [
        f"note, patient {n['patient_id']}: {line(n['note'])} ({n['file']})"
        for n in m.get("loader_notes", [])
    ]
    lines += [
        f"note, patient {s['patient']}: no background slices ({line(s['reason'])})"
        for s in m.get("background_skipped", [])
    ]
    return lines


def _assemble(
    out: Path,
    results: list[PatientCuration],
    split: np.ndarray,
    genes: np.ndarray,
    gene_names: list[str],
) -> CuratedCohort:
    S = None
    t_img, t_mask, t_pat, b_img, b_pat, rows = [], [], [], [], [], []
    for i, r in enumerate(results):
        S = r.tumour_images.shape[-1]
        t_img.append(r.tumour_images)
        t_mask.append(r.tumour_masks)
        t_pat.append(np.full(len(r.tumour_images), i))
        for k in range(len(r.tumour_images)):
            rows.append(
                {
                    "kind": "tumour",
                    "patient_id": r.patient_id,
                    "patient": i,
                    "split": split[i],
                    "voi": 0,
                    "slice": int(r.tumour_voi_slice[k]),
                    "z_mm": float(r.tumour_z_mm[k]),
                    "area_px": int(r.tumour_masks[k].sum()),
                    "centre_x_mm": r.tumour_centre_mm[0],
                    "centre_y_mm": r.tumour_centre_mm[1],
                    "centre_z_mm": r.tumour_centre_mm[2],
                }
            )
    for i, r in enumerate(results):
        b_img.append(r.background_images)
        b_pat.append(np.full(len(r.background_images), i))
        for rec in r.background_info.to_dict("records"):
            rows.append(
                {
                    "kind": "background",
                    "patient_id": r.patient_id,
                    "patient": i,
                    "split": split[i],
                    "area_px": 0,
                    **rec,
                }
            )
    if S is None:
        raise CohortError("no patient could be curated (see the skipped list)")
    table = pd.DataFrame(rows)
    table.insert(1, "index", table.groupby("kind").cumcount())
    return CuratedCohort(
        path=out,
        patients=[r.patient_id for r in results],
        split=np.asarray(split).astype(str),
        genes=genes.astype(np.float32),
        gene_names=list(gene_names),
        tumour_images=np.concatenate(t_img).astype(np.float32),
        tumour_masks=np.concatenate(t_mask).astype(np.uint8),
        tumour_patient=np.concatenate(t_pat).astype(np.int64),
        background_images=np.concatenate(b_img).astype(np.float32).reshape(-1, S, S),
        background_patient=np.concatenate(b_pat).astype(np.int64),
        slices=table,
        manifest={},
    )


def _patients_table(results: list[PatientCuration], split: np.ndarray) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(results):
        rows.append(
            {
                "patient_id": r.patient_id,
                "split": split[i],
                "tumour_slices": len(r.tumour_images),
                "background_slices": len(r.background_images),
                "centre_x_mm": r.tumour_centre_mm[0],
                "centre_y_mm": r.tumour_centre_mm[1],
                "centre_z_mm": r.tumour_centre_mm[2],
                **r.info,
                "background_skip": r.background_skip,
                "warnings": "; ".join(r.warnings),
            }
        )
    return pd.DataFrame(rows)


def _write_folder(folder: Path, c: CuratedCohort, patients_table: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    np.savez_compressed(
        folder / "arrays.npz",
        patients=np.array(c.patients, dtype=str),
        split=c.split.astype(str),
        genes=c.genes,
        gene_names=np.array(c.gene_names, dtype=str),
        tumour_images=c.tumour_images,
        tumour_masks=c.tumour_masks,
        tumour_patient=c.tumour_patient,
        background_images=c.background_images,
        background_patient=c.background_patient,
    )
    c.slices.to_csv(folder / "slices.csv", index=False)
    patients_table.to_csv(folder / "patients.csv", index=False)
    write_json(folder / "manifest.json", c.manifest)  # last: marks the folder complete
    fsync_tree(folder)


def _write_atomically(out: Path, c: CuratedCohort, patients_table: pd.DataFrame) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):  # left by runs that were killed
        remove_leftovers(out.parent, f".{out.name}.{kind}-")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with atomic_folder(out, tmp):
        _write_folder(tmp, c, patients_table)
        load_curated(tmp)  # never move an unreadable result into place


def load_curated(out: str | os.PathLike) -> CuratedCohort:
    """Read a curated folder, checking every array's shape, dtype range and cross-reference.

    Raises :class:`CohortError` naming the file when the folder is incomplete or corrupt.
    """
    out = Path(out)
    for name in ("manifest.json", "arrays.npz", "slices.csv", "patients.csv"):
        if not (out / name).is_file():
            raise CohortError(f"curated cohort {out} is incomplete: {out / name} is missing")
    try:
        manifest = read_json(out / "manifest.json")
    except (OSError, ValueError) as exc:
        raise CohortError(f"unreadable manifest {out / 'manifest.json'}: {exc}") from None
    path = out / "arrays.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ARRAY_KEYS if k not in z.files]
            if missing:
                raise CohortError(f"{path}: arrays {missing} missing")
            a = {k: z[k] for k in ARRAY_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CohortError(f"corrupt array file {path}: {exc}") from None
    try:
        slices = pd.read_csv(out / "slices.csv")
        patients_table = pd.read_csv(out / "patients.csv")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CohortError(f"unreadable table in {out}: {exc}") from None

    def bad(msg: str) -> CohortError:
        return CohortError(f"{path}: {msg}")

    P = a["patients"].shape[0]
    if a["split"].shape != (P,) or not np.isin(a["split"], ["train", "test"]).all():
        raise bad(f"split must be (P,)={P} of 'train'/'test'")
    if a["genes"].ndim != 2 or a["genes"].shape[0] != P:
        raise bad(f"genes {a['genes'].shape} must be (P={P}, G)")
    if a["gene_names"].shape != (a["genes"].shape[1],):
        raise bad(f"gene_names {a['gene_names'].shape} must be (G={a['genes'].shape[1]},)")
    if not np.isfinite(a["genes"]).all():
        raise bad("genes hold non-finite values")
    ti, tm = a["tumour_images"], a["tumour_masks"]
    if ti.ndim != 3 or ti.shape[1] != ti.shape[2] or tm.shape != ti.shape:
        raise bad(f"tumour_images {ti.shape} / tumour_masks {tm.shape} must both be (N, S, S)")
    S = ti.shape[1]
    bi = a["background_images"]
    if bi.ndim != 3 or bi.shape[1:] != (S, S):
        raise bad(f"background_images {bi.shape} must be (M, {S}, {S})")
    for key, n in (("tumour_patient", len(ti)), ("background_patient", len(bi))):
        v = a[key]
        if v.shape != (n,) or (n and (v.min() < 0 or v.max() >= P)):
            raise bad(f"{key} must be ({n},) indices in [0, {P})")
    for key in ("tumour_images", "background_images"):
        v = a[key]
        if v.size and (not np.isfinite(v).all() or v.min() < 0 or v.max() > 1):
            raise bad(f"{key} must lie in [0, 1]")
    if tm.size and not np.isin(tm, [0, 1]).all():
        raise bad("tumour_masks must be 0/1")
    if len(slices) != len(ti) + len(bi):
        raise CohortError(
            f"{out / 'slices.csv'}: {len(slices)} rows, expected {len(ti) + len(bi)} (N + M)"
        )
    if len(patients_table) != P:
        raise CohortError(f"{out / 'patients.csv'}: {len(patients_table)} rows, expected {P}")
    return CuratedCohort(
        path=out,
        patients=[str(p) for p in a["patients"]],
        split=a["split"].astype(str),
        genes=a["genes"].astype(np.float32),
        gene_names=[str(g) for g in a["gene_names"]],
        tumour_images=ti.astype(np.float32),
        tumour_masks=tm.astype(np.uint8),
        tumour_patient=a["tumour_patient"].astype(np.int64),
        background_images=bi.astype(np.float32),
        background_patient=a["background_patient"].astype(np.int64),
        slices=slices,
        manifest=manifest,
    )
