"""Geometry of curation: isotropic resampling, cube volumes of interest (VOIs), the HU window
and the resizing of axial slices to the network grid.

Volumes are numpy arrays in ``(z, y, x)`` order on an isotropic grid with identity direction
(LPS axes); images are windowed to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.transform import resize_local_mean

from radiolib.errors import CohortError

AIR_HU = -1000.0


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
