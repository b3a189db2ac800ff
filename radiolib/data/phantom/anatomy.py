"""The phantom's chest CT: geometry, anatomy, lungs and one tumour shaped by its traits.

:func:`render_patient` draws one patient's CT grid (the cohort's spacings), a tumour-free chest
(body, chest wall, ribs, spine, mediastinum, aorta, lungs with texture and branching vessels),
places the tumour in the lung near the pleura (:data:`PLEURA_BAND_MM`) and blends it in with the
size, solidity, margin, spiculation, lobulation and elongation of the patient's traits.
Coordinates are millimetres on DICOM patient (LPS) axes, arrays ``(z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import expit

from .streams import stream

PLEURA_BAND_MM = 2.0  # tumour centres lie at most this beyond the closest fit (_place_tumour)


@dataclass
class Geometry:
    """One patient's CT grid and anatomy (millimetres, DICOM patient LPS axes)."""

    matrix: int
    nz: int
    dx: float  # in-plane spacing (rows and columns)
    dz: float  # slice spacing = slice thickness
    x0: float  # centre of the first column
    y0: float  # centre of the first row
    z0: float  # centre of the lowest slice
    side: int  # -1 right lung (x < 0), +1 left lung: the tumour's side
    body: tuple[float, float]  # semi-axes of the body ellipse (x, y)
    fat: float  # subcutaneous fat thickness
    cavity: tuple[float, float]  # semi-axes of the thoracic cavity
    rib_period: float
    rib_phase: float
    noise_sd: float

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel centre coordinates ``(z (nz,), y (ny,), x (nx,))`` in mm, float32."""
        k = np.arange(self.nz, dtype=np.float64)
        j = np.arange(self.matrix, dtype=np.float64)
        return (
            (self.z0 + k * self.dz).astype(np.float32),
            (self.y0 + j * self.dx).astype(np.float32),
            (self.x0 + j * self.dx).astype(np.float32),
        )


LOBE_COLUMNS = ("RUL", "RML", "RLL", "LUL", "LLL", "L Lingula")


def _lobe(center: np.ndarray) -> str:
    """Lobe of a point ``(z, y, x)`` mm from simplified fissures.

    The oblique fissure runs from posterior-superior to anterior-inferior (z = -40 + 0.7 y);
    below it lies the lower lobe. Above it, the right middle lobe lies below the horizontal
    fissure (z < -35) and the lingula below z = -60.
    """
    z, y, x = (float(v) for v in center)
    right = x < 0
    if z < -40.0 + 0.7 * y:
        return "RLL" if right else "LLL"
    if right:
        return "RML" if z < -35.0 else "RUL"
    return "L Lingula" if z < -60.0 else "LUL"


def spacing_scale(matrix: int) -> float:
    """Factor on the 0.6-0.9 mm in-plane spacing range: 1 for matrices of 250 and more."""
    return max(1.0, 150.0 / (0.6 * matrix))


def _draw_geometry(rng: np.random.Generator, matrix: int) -> Geometry:
    # the cohort's in-plane spacing (0.6-0.9 mm); matrices below 250 get proportionally larger
    # pixels so the field of view stays >= 150 mm (room for a 60 mm VOI and the lung around it)
    dx = round(float(rng.uniform(0.6, 0.9)) * spacing_scale(matrix), 4)
    dz = float(rng.choice([1.25, 1.5, 2.0, 2.5], p=[0.3, 0.2, 0.2, 0.3]))
    coverage = rng.uniform(90.0, 130.0)
    nz = int(round(coverage / dz))
    fov = matrix * dx
    fat = float(rng.uniform(6.0, 22.0))
    wall = fat + 14.0
    a_b, b_b = float(rng.uniform(145.0, 170.0)), float(rng.uniform(100.0, 120.0))
    # a reduced field of view keeps the lungs' AP extent inside the image (smaller patients get
    # smaller fields of view) ...
    b_b = min(b_b, fov / 2 - 10.0 + wall)
    side = -1 if rng.random() < 0.6 else 1  # right lung 95 of 162 R01 tumours
    # ... and is centred on the tumour's lung when the whole chest does not fit
    xc = 0.0 if fov >= 2 * a_b + 16 else side * (a_b + 8.0 - fov / 2)
    yc = float(rng.uniform(-5.0, 5.0))
    half = (matrix - 1) / 2 * dx
    z_top = float(rng.uniform(-40.0, 60.0))
    return Geometry(
        matrix=matrix,
        nz=nz,
        dx=dx,
        dz=dz,
        x0=round(xc - half, 4),
        y0=round(yc - half, 4),
        z0=round(z_top - nz * dz, 4),
        side=side,
        body=(a_b, b_b),
        fat=fat,
        cavity=(a_b - wall, b_b - wall),
        rib_period=float(rng.uniform(24.0, 30.0)),
        rib_phase=float(rng.uniform(0, 2 * np.pi)),
        noise_sd=float(rng.uniform(10.0, 25.0)),
    )


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    scale_mm: float,
) -> np.ndarray:
    """Low-frequency Gaussian texture (unit-ish variance), separable Gaussian interpolation.

    Coarse white noise on nodes ``scale_mm`` apart is spread to the voxels by one Gaussian
    weight matrix per axis: three small matrix products instead of a 3-D zoom.
    """
    mats = []
    for n, s in zip(shape, spacing, strict=True):
        pos = np.arange(n) * s
        nodes = np.arange(-scale_mm, pos[-1] + 2 * scale_mm, scale_mm)
        w = np.exp(-0.5 * ((pos[:, None] - nodes[None, :]) / (0.6 * scale_mm)) ** 2)
        mats.append((w / w.sum(1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal(tuple(m.shape[1] for m in mats)).astype(np.float32)
    out = coarse @ mats[2].T  # (cz, cy, nx)
    out = np.einsum("ab,zbx->zax", mats[1], out)  # (cz, ny, nx)
    out = (mats[0] @ out.reshape(out.shape[0], -1)).reshape(shape)
    return out / max(float(out.std()), 1e-6)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _vessel_segments(rng: np.random.Generator, geo: Geometry) -> list[tuple]:
    """Branching trees from each hilum: (start (3,), end (3,), radius start, radius end) in mm.

    Points are ``(z, y, x)``. Seven trees per lung (roots spread along the hilum, fanning out)
    of six generations, radii tapering from about 4.5 mm to 1 mm.
    """
    segs = []
    for lung in (-1, 1):
        for dz_dir, dy_dir in (
            (0.9, 0.0),
            (0.3, -0.6),
            (-0.3, 0.6),
            (-0.9, 0.1),
            (0.0, 0.0),
            (0.5, 0.5),
            (-0.5, -0.5),
        ):
            hilum = np.array([rng.uniform(-60, 20), rng.uniform(-15, 15), lung * 36.0])
            d0 = np.array([dz_dir, dy_dir + rng.uniform(-0.3, 0.3), lung * 1.0])
            stack = [(hilum, d0 / np.linalg.norm(d0), 0, 4.5)]
            while stack:
                p, d, gen, r = stack.pop()
                length = 38.0 * 0.78**gen * rng.uniform(0.8, 1.2)
                q = p + d * length
                segs.append((p, q, r, r * 0.85))
                if gen == 5:
                    continue
                perp = np.cross(d, rng.standard_normal(3))
                perp /= np.linalg.norm(perp)
                for sgn in (1.0, -1.0):
                    ang = np.deg2rad(rng.uniform(20, 40))
                    nd = np.cos(ang) * d + sgn * np.sin(ang) * perp
                    stack.append((q, nd / np.linalg.norm(nd), gen + 1, r * 0.75))
    return segs


def _rasterise_vessels(segs: list[tuple], geo: Geometry, shape: tuple[int, int, int]) -> np.ndarray:
    """Vessel opacity in [0, 1] (nz, ny, nx): distance to each segment inside its bounding box."""
    vz, vy, vx = geo.axes
    out = np.zeros(shape, np.float32)
    origin = np.array([geo.z0, geo.y0, geo.x0])
    step = np.array([geo.dz, geo.dx, geo.dx])
    for p, q, r0, r1 in segs:
        lo = np.floor((np.minimum(p, q) - r0 - 1.0 - origin) / step).astype(int)
        hi = np.ceil((np.maximum(p, q) + r0 + 1.0 - origin) / step).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, shape)
        if np.any(hi <= lo):
            continue
        z = vz[lo[0] : hi[0], None, None] - np.float32(p[0])
        y = vy[None, lo[1] : hi[1], None] - np.float32(p[1])
        x = vx[None, None, lo[2] : hi[2]] - np.float32(p[2])
        d = (q - p).astype(np.float32)
        ll = float(d @ d)
        t = np.clip((z * d[0] + y * d[1] + x * d[2]) / ll, 0.0, 1.0)
        dist = np.sqrt((z - t * d[0]) ** 2 + (y - t * d[1]) ** 2 + (x - t * d[2]) ** 2)
        rad = r0 + (r1 - r0) * t
        a = np.clip((rad - dist) / 0.8 + 0.5, 0.0, 1.0)
        view = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(view, a, out=view)
    return out


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def _anatomy(geo: Geometry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tumour-free chest ``(hu (nz, ny, nx) float32, lung mask (nz, ny, nx) bool)``."""
    vz, vy, vx = geo.axes
    shape = (geo.nz, geo.matrix, geo.matrix)
    x2, y2 = vx[None, :], vy[:, None]
    a_b, b_b = geo.body
    a_c, b_c = geo.cavity
    body = _ellipse(x2, y2, 0, 0, a_b, b_b) < 1
    inner = _ellipse(x2, y2, 0, 0, a_b - geo.fat, b_b - geo.fat) < 1
    cavity = _ellipse(x2, y2, 0, 0, a_c, b_c) < 1
    base = np.full(shape[1:], -1000.0, np.float32)
    base[body] = -100.0  # subcutaneous fat
    base[inner] = 40.0  # chest wall muscle
    base[cavity] = 35.0  # mediastinum
    fat_pad = _ellipse(x2, y2, 0, -b_c + 25, 45, 22) < 1
    base[fat_pad & cavity] = -90.0
    # spine: vertebral body (cancellous + cortex), canal, posterior elements; aorta; sternum
    vb_y = b_c - 22.0
    vb = _ellipse(x2, y2, 0, vb_y, 19, 17)
    base[vb < 1] = 700.0
    base[vb < 0.7] = 280.0
    base[_ellipse(x2, y2, 0, vb_y + 26, 8, 7) < 1] = 20.0
    post = (np.abs(x2) < 6) & (y2 > vb_y + 33) & (y2 < b_b - geo.fat - 4)
    base[post] = 600.0
    ao = _ellipse(x2, y2, 24, vb_y - 12, 13, 13)
    base[(ao < 1.35) & (ao >= 1)] = -90.0
    base[ao < 1] = 40.0
    base[_ellipse(x2, y2, 0, -b_c - 4, 14, 6) < 1] = 450.0
    hu = np.broadcast_to(base, shape).copy()

    # ribs: a band outside the cavity, cut into obliquely descending bars along z
    band = (_ellipse(x2, y2, 0, 0, a_c, b_c) >= 1) & (_ellipse(x2, y2, 0, 0, a_c + 9, b_c + 9) < 1)
    band &= y2 > -0.55 * b_c
    jj, ii = np.nonzero(band)
    phase = 2 * np.pi * (vz[:, None] - 0.45 * vy[jj][None, :]) / geo.rib_period + geo.rib_phase
    rib = np.cos(phase) > 0.35
    hu[:, jj, ii] = np.where(rib, np.float32(500.0), hu[:, jj, ii])

    # lungs: cavity less the mediastinum, which widens towards the heart inferiorly
    heart = np.clip((-10.0 - vz) / 70.0, 0.0, 1.0)[:, None, None]
    med_w = 28.0 + 34.0 * heart
    med_x = 8.0 * heart
    x3, y3 = vx[None, None, :], vy[None, :, None]
    med = ((x3 - med_x) / med_w) ** 2 + ((y3 + 0.1 * b_c) / (1.05 * b_c)) ** 2 < 1
    spine = _ellipse(x2, y2, 0, vb_y + 4, 32, 30) < 1
    pleura = _ellipse(x2, y2, 0, 0, a_c - 2.5, b_c - 2.5) < 1
    lung = (pleura & ~spine)[None] & ~med
    # parenchyma: about -850 HU, low-frequency texture, denser posteriorly (gravity)
    tex = _smooth_noise(rng, shape, (geo.dz, geo.dx, geo.dx), 12.0)
    par = -860.0 + 22.0 * tex + (25.0 * (vy / b_c))[None, :, None]
    vessels = _rasterise_vessels(_vessel_segments(rng, geo), geo, shape)
    par += vessels * (40.0 - par)
    np.copyto(hu, par, where=lung)
    return hu, lung


def _place_tumour(
    lung: np.ndarray, geo: Geometry, need_mm: float, rng: np.random.Generator
) -> np.ndarray | None:
    """A centre ``(z, y, x)`` mm in the tumour's lung ``need_mm`` to ``need_mm +``
    :data:`PLEURA_BAND_MM` from its boundary (and from the image edge), with 31 mm of slices
    above and below for a 60 mm VOI.

    The band keeps the tumour's surface within a few millimetres of the pleura, as most
    resected NSCLC tumours are peripheral, and gives tumour slices about the share of chest
    wall and mediastinum that background slices have (their centres lie 5-25 mm from the lung
    boundary): a tumour placed anywhere deeper sits in aerated lung that no background shows.
    Deeper centres are used only when the band holds none."""
    s = 2 if geo.dz < 2 else 1
    c = 3
    sub = np.pad(lung[::s, ::c, ::c], 1)
    dist = ndimage.distance_transform_edt(sub, sampling=(geo.dz * s, geo.dx * c, geo.dx * c))
    dist = dist[1:-1, 1:-1, 1:-1]
    vz, vy, vx = geo.axes
    vz, vy, vx = vz[::s], vy[::c], vx[::c]
    zmid = 0.5 * (geo.z0 + geo.z0 + (geo.nz - 1) * geo.dz)
    zok = np.abs(vz - zmid) <= (geo.nz * geo.dz) / 2 - 31.0
    ok = (dist >= need_mm) & zok[:, None, None] & (np.sign(vx) == geo.side)[None, None, :]
    near = ok & (dist <= need_mm + PLEURA_BAND_MM)
    idx = np.flatnonzero(near if near.any() else ok)
    if idx.size == 0:
        return None
    k, j, i = np.unravel_index(idx[rng.integers(idx.size)], ok.shape)
    jitter = rng.uniform(-0.5, 0.5, 3) * np.array([geo.dz * s, geo.dx * c, geo.dx * c]) * 0.5
    return np.array([vz[k], vy[j], vx[i]], float) + jitter


@dataclass
class _TumourShape:
    radius: float  # longest semi-axis, mm
    axes: np.ndarray  # (3,) semi-axes
    rotation: np.ndarray  # (3, 3)
    lobes: np.ndarray  # (L, 3) unit directions
    lobe_amp: float
    spikes: np.ndarray  # (S, 3)
    spike_len: np.ndarray  # (S,) in units of the radius
    blur_mm: float
    core: float  # solid core radius fraction
    solid_hu: float
    gg_hu: float

    @property
    def extent(self) -> float:
        """Largest distance of the support from the centre, mm."""
        lob = 1.0 + self.lobe_amp * (1.0 - 0.1)
        spike = float(self.spike_len.max()) if len(self.spike_len) else 0.0
        return self.radius * (lob + spike)


def _tumour_shape(traits: pd.Series, rng: np.random.Generator) -> _TumourShape:
    d, sol = float(traits["diameter_mm"]), float(traits["solidity"])
    margin, spic = float(traits["margin_sharpness"]), float(traits["spiculation"])
    lob, elong = float(traits["lobulation"]), float(traits["elongation"])
    r = d / 2
    short = 1.0 / (1.0 + 0.8 * elong)
    n_sp = int(round(3 + 14 * spic))
    amp = max(spic - 0.15, 0.0) / 0.85  # LIDC rating 1 (no spiculation) spans [0, 0.2)
    return _TumourShape(
        radius=r,
        axes=np.array([r, r * short, r * (0.5 + 0.5 * short)]),
        rotation=_rotation(rng),
        lobes=_unit(rng, 5),
        lobe_amp=0.35 * lob,
        spikes=_unit(rng, n_sp),
        spike_len=amp * rng.uniform(0.5, 1.0, n_sp) * 1.1,
        blur_mm=0.25 + 2.5 * (1.0 - margin) ** 1.5,
        core=float(np.clip((sol - 0.1) / 0.9, 0.0, 1.0) ** 0.5),
        solid_hu=float(rng.uniform(20.0, 50.0)),
        gg_hu=float(rng.uniform(-680.0, -560.0)),
    )


def _draw_tumour(
    hu: np.ndarray,
    geo: Geometry,
    center: np.ndarray,
    shape: _TumourShape,
    rng: np.random.Generator,
) -> np.ndarray:
    """Blend the tumour into ``hu`` in place; returns its support mask (nz, ny, nx) uint8.

    The support is where the tumour contributes at least half its contrast: inside the
    lobulated, spiculated surface.
    """
    vz, vy, vx = geo.axes
    reach = shape.extent + 4 * shape.blur_mm + 2.0
    lo = [
        max(0, int(np.floor((center[a] - reach - o) / s)))
        for a, (o, s) in enumerate(((geo.z0, geo.dz), (geo.y0, geo.dx), (geo.x0, geo.dx)))
    ]
    hi = [
        min(n, int(np.ceil((center[a] + reach - o) / s)) + 1)
        for a, (o, s, n) in enumerate(
            ((geo.z0, geo.dz, geo.nz), (geo.y0, geo.dx, geo.matrix), (geo.x0, geo.dx, geo.matrix))
        )
    ]
    z = vz[lo[0] : hi[0], None, None] - np.float32(center[0])
    y = vy[None, lo[1] : hi[1], None] - np.float32(center[1])
    x = vx[None, None, lo[2] : hi[2]] - np.float32(center[2])
    rot = shape.rotation.astype(np.float32)
    # body frame coordinates scaled by the semi-axes (surface of the ellipsoid at r = 1)
    q = [
        (z * rot[0, a] + y * rot[1, a] + x * rot[2, a]) / np.float32(shape.axes[a])
        for a in range(3)
    ]
    r = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) + np.float32(1e-6)
    u = [qa / r for qa in q]
    surf = np.ones_like(r)
    if shape.lobe_amp > 0:
        bumps = sum(
            np.exp(5.0 * (u[0] * d[0] + u[1] * d[1] + u[2] * d[2] - 1.0))
            for d in shape.lobes.astype(np.float32)
        )
        surf += np.float32(shape.lobe_amp) * (bumps - np.float32(0.1 * len(shape.lobes)))
    for d, ln in zip(shape.spikes.astype(np.float32), shape.spike_len, strict=True):
        cosang = u[0] * d[0] + u[1] * d[1] + u[2] * d[2]
        ang = np.sqrt(np.maximum(2.0 * (1.0 - cosang), 0.0))
        surf += np.float32(ln) * np.maximum(1.0 - ang / np.float32(0.18), 0.0)
    # signed distance to the surface in mm (approximate: radial, along the longest axis)
    sd = (surf - r) * np.float32(shape.radius)
    alpha = expit(sd / np.float32(shape.blur_mm))
    if shape.core > 0.05:
        core = expit((shape.core * surf - r) * np.float32(shape.radius))
    else:
        core = np.zeros_like(r)
    tex = rng.standard_normal(r.shape).astype(np.float32)
    tex = ndimage.uniform_filter(tex, 3) * np.float32(12.0)
    tum = np.float32(shape.gg_hu) + np.float32(shape.solid_hu - shape.gg_hu) * core + tex
    view = hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    view += alpha * (tum - view)
    mask = np.zeros(hu.shape, np.uint8)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = sd >= 0
    return mask


def render_patient(
    traits: pd.Series, seed: int, index: int, matrix: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One patient's CT ``(hu (nz, ny, nx) float32, tumour mask (nz, ny, nx) uint8, geometry)``.

    ``traits`` holds the :data:`TRAITS` of the patient; the result depends only on
    ``(traits, seed, index, matrix)``. Slice k lies at ``z0 + k dz`` (increasing = superior).
    """
    rng = stream(seed, 4, index)
    geo = _draw_geometry(rng, matrix)
    hu, lung = _anatomy(geo, rng)
    shape = _tumour_shape(traits, rng)
    center, scale = None, 1.0
    for _ in range(12):
        center = _place_tumour(lung, geo, shape.extent + 2 * shape.blur_mm + 2.0, rng)
        if center is not None:
            break
        # a tumour too large for this lung is drawn slightly smaller (recorded in the truth)
        scale *= 0.9
        shape.radius *= 0.9
        shape.axes = shape.axes * 0.9
    if center is None:
        raise RuntimeError(f"patient {index}: no room for the tumour in the lung")
    mask = _draw_tumour(hu, geo, center, shape, rng)
    if (mask.astype(bool) & ~lung).any():
        raise RuntimeError(f"patient {index}: tumour support leaves the lung")
    # partial volume of the reconstruction and quantum noise
    hu = ndimage.gaussian_filter(hu, (0, 0.6, 0.6), truncate=2.5)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(geo.noise_sd)
    info = {
        "pixel_spacing_mm": geo.dx,
        "slice_spacing_mm": geo.dz,
        "slices": geo.nz,
        "tumour_z_mm": float(center[0]),
        "tumour_y_mm": float(center[1]),
        "tumour_x_mm": float(center[2]),
        "lobe": _lobe(center),
        "size_scale": scale,
        "rendered_diameter_mm": 2 * shape.radius,
        "noise_sd_hu": geo.noise_sd,
        "mask_voxels": int(mask.sum()),
        "geometry": geo,
    }
    return hu, mask, info
