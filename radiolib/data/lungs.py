"""Lungs and background slices: the lung mask of a CT, the distance of lung voxels to the lung
boundary (tumour excluded), and background VOI centres and slices drawn from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

from radiolib.data.geometry import largest_component, resize_stack, window

LUNG_THRESHOLD_HU = -400.0
LUNG_CLOSING_MM = 5.0  # closes vessels and small nodules into the lung mask
LUNG_MIN_RATIO = 0.05  # a second air component is a lung only if >= 5 % of the largest
TUMOUR_MARGIN_MM = 3.0  # tumour dilation removed from the lung before choosing backgrounds


def _bbox(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Bounding box of a non-empty boolean mask, grown by ``margin`` voxels within the array."""
    margins = [margin] * mask.ndim if np.isscalar(margin) else list(margin)
    nz = np.nonzero(mask)
    return tuple(
        slice(max(int(a.min()) - m, 0), min(int(a.max()) + m + 1, n))
        for a, m, n in zip(nz, margins, mask.shape, strict=True)
    )


def _distance_to(mask: np.ndarray, spacing: float | Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel of a 3D array to the nearest ``True`` voxel of
    ``mask`` (0 on the mask; ``scipy.ndimage.distance_transform_edt(~mask)``), from SimpleITK's
    Maurer transform, which is about twice as fast. ``mask`` must hold a ``True`` voxel."""
    spacing = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(map(float, spacing))
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, np.uint8))
    image.SetSpacing(spacing[::-1])  # SimpleITK orders axes (x, y, z)
    signed = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return np.maximum(sitk.GetArrayViewFromImage(signed), 0.0)


def _closing(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological closing by a Euclidean ball via two distance transforms (cost does not
    grow with the radius)."""
    pad = int(np.ceil(radius_mm / min(spacing))) + 1
    padded = np.pad(mask, pad)
    dilated = _distance_to(padded, spacing) <= radius_mm
    closed = _distance_to(~dilated, spacing) > radius_mm
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
            near = _distance_to(tumour[t_box], spacing_mm) <= tumour_margin_mm
            full = np.zeros(lungs.shape, bool)
            full[t_box] = near
            region &= ~full[box]
        # pad: the volume's edge counts as outside the lung
        sub = _distance_to(~np.pad(region, 1), spacing_mm)
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
