"""The conventional map on real data: the NSCLC Radiogenomics files shipped with radiolib.

Without the imaging download, what exists of the real cohort ships in ``radiolib/data/reference``
(origin and licences in its ``PROVENANCE.md``): the GEO RNA-seq expression (log10, z-scored,
complete genes), the radiologists' AIM annotations and the TCIA clinical table
(:func:`load_reference`). :func:`real_reference_map` runs the three conventional steps of
:mod:`radiolib.radiogenomics.conventional` on them: metagenes over the RNA-seq patients, the
semantic features and the clinical labels (:func:`clinical_labels`) as two FDR families, each
restricted to informative columns (:func:`informative_features`). :func:`enrolment_check` asks
whether the links it finds are carried by the order of enrolment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from radiolib.data import tables
from radiolib.errors import CohortError
from radiolib.radiogenomics.conventional import (
    ALPHA,
    MIN_MODULE_SIZE,
    MODULE_CUT,
    ConventionalMap,
    correlate,
    module_metagenes,
)

MIN_MINORITY = 5  # a 0/1 feature needs this many patients in its rarer group

REFERENCE_EXPRESSION = "GSE103584_top1000_log10_zscore_complete.csv"
REFERENCE_CLINICAL = "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv"
REFERENCE_AIM = "aim"

# clinical label -> (column of the TCIA table, value (lower case) -> number); values in
# _MISSING become NaN, any other value is an error
_MISSING = {
    "",
    "unknown",
    "not collected",
    "not assessed",
    "not recorded in database",
    "n/a",
    "na",
    "nan",
}
CLINICAL_LABELS: dict[str, tuple[str, dict[str, float] | None]] = {
    "egfr_mutant": ("EGFR mutation status", {"wildtype": 0.0, "mutant": 1.0}),
    "kras_mutant": ("KRAS mutation status", {"wildtype": 0.0, "mutant": 1.0}),
    "alk_translocated": ("ALK translocation status", {"wildtype": 0.0, "translocated": 1.0}),
    "squamous_histology": (
        "Histology",
        {
            "adenocarcinoma": 0.0,
            "squamous cell carcinoma": 1.0,
            "nsclc nos (not otherwise specified)": np.nan,
        },
    ),
    # class midpoints; Spearman only uses their order
    "ground_glass_percent": (
        "%GG",
        {
            "0%": 0.0,
            ">0 - 25%": 12.5,
            "25 - 50%": 37.5,
            "50 - 75%": 62.5,
            "75 - < 100%": 87.5,
            "100%": 100.0,
        },
    ),
    "smoking": ("Smoking status", {"nonsmoker": 0.0, "former": 1.0, "current": 2.0}),
    "pack_years": ("Pack Years", None),
    "age": ("Age at Histological Diagnosis", None),
    "male": ("Gender", {"female": 0.0, "male": 1.0}),
    "t_stage": (
        "Pathological T stage",
        {"tis": 0.0, "t1a": 1.0, "t1b": 2.0, "t2a": 3.0, "t2b": 4.0, "t3": 5.0, "t4": 6.0},
    ),
    "n_stage": ("Pathological N stage", {"n0": 0.0, "n1": 1.0, "n2": 2.0}),
    "grade": (
        "Histopathological Grade",
        {
            "g1 well differentiated": 1.0,
            "other, type i: well to moderately differentiated": 1.5,
            "g2 moderately differentiated": 2.0,
            "other, type ii: moderately to poorly differentiated": 2.5,
            "g3 poorly differentiated": 3.0,
        },
    ),
    "lymphovascular_invasion": ("Lymphovascular invasion", {"absent": 0.0, "present": 1.0}),
    "pleural_invasion": (
        "Pleural invasion (elastic, visceral, or parietal)",
        {"no": 0.0, "yes": 1.0},
    ),
    "recurrence": ("Recurrence", {"no": 0.0, "yes": 1.0}),
}


# --------------------------------------------------------------------------- the reference data


def reference_dir() -> Path:
    """The real NSCLC Radiogenomics files shipped with radiolib (see PROVENANCE.md there)."""
    return Path(str(resources.files("radiolib.data") / "reference"))


@dataclass
class ReferenceData:
    """``expression`` genes (G rows) x samples (``R01-xxx``), log10 + z-scored, no NaN;
    ``semantic`` AIM annotations as read (index patient_id); ``clinical`` the TCIA table."""

    expression: pd.DataFrame
    semantic: pd.DataFrame
    clinical: pd.DataFrame
    folder: Path


def load_reference(folder: str | Path | None = None) -> ReferenceData:
    """Read the vendored real data (default :func:`reference_dir`)."""
    folder = Path(folder) if folder is not None else reference_dir()
    path = folder / REFERENCE_EXPRESSION
    if not path.is_file():
        raise CohortError(f"reference expression table {path} does not exist")
    expr = pd.read_csv(path, index_col=0)
    bad = [c for c in expr.columns if not tables.PATIENT_ID_RE.match(str(c))]
    if bad:
        raise CohortError(f"{path}: columns {bad[:3]} are not patient ids like 'R01-001'")
    if expr.isna().to_numpy().any():
        i, j = np.argwhere(expr.isna().to_numpy())[0]
        raise CohortError(
            f"{path}: gene {expr.index[i]!r}, sample {expr.columns[j]} is missing; the reference "
            "table holds only complete genes"
        )
    aim = folder / REFERENCE_AIM
    if not aim.is_dir():
        raise CohortError(f"reference AIM folder {aim} does not exist")
    semantic = tables.read_aim_folder(aim)
    clinical = tables.read_clinical(folder / REFERENCE_CLINICAL)
    return ReferenceData(expr.astype(np.float64), semantic, clinical, folder)


def clinical_labels(clinical: pd.DataFrame) -> pd.DataFrame:
    """Numeric clinical labels (:data:`CLINICAL_LABELS`), one row per patient (same index).

    Unknown / not collected values become NaN; a value the mapping does not know raises
    CohortError naming the patient and column.
    """
    out = {}
    for label, (col, mapping) in CLINICAL_LABELS.items():
        if col not in clinical.columns:
            raise CohortError(f"clinical table lacks column {col!r} (for label {label!r})")
        raw = clinical[col]
        text = raw.astype("string").str.strip().str.lower()
        missing = text.isna() | text.isin(list(_MISSING))
        if mapping is None:
            values = pd.to_numeric(raw.where(~missing), errors="coerce").astype(float)
            bad = values.isna() & ~missing
        else:
            values = text.map(mapping).astype(float)
            bad = ~missing & ~text.isin(list(mapping))
        if bad.any():
            pid = bad.idxmax()
            raise CohortError(
                f"clinical label {label!r} of patient {pid}: {col!r} = {raw[pid]!r} is not "
                f"{'a number' if mapping is None else 'one of ' + str(sorted(mapping))}"
            )
        out[label] = values.where(~missing)
    return pd.DataFrame(out, index=clinical.index)


def informative_features(df: pd.DataFrame, min_minority: int = MIN_MINORITY) -> pd.DataFrame:
    """Columns worth a test: at least two distinct values, a 0/1-like column (two values) with
    at least ``min_minority`` patients in its rarer group, any other at least
    ``2 * min_minority`` non-missing values."""
    keep = []
    for c in df.columns:
        v = df[c].dropna()
        counts = v.value_counts()
        if len(counts) < 2:
            continue
        if len(counts) == 2 and counts.min() < min_minority:
            continue
        if len(v) < 2 * min_minority:
            continue
        keep.append(c)
    return df[keep]


# --------------------------------------------------------------------------- the real-data map


@dataclass
class ReferenceMap(ConventionalMap):
    """The conventional map on real data.

    As :class:`radiolib.radiogenomics.conventional.ConventionalMap`, with ``metagenes`` (P, M)
    over the RNA-seq patients and ``features`` ``{"semantic": (P_aim, F_s), "clinical": (P,
    F_c)}`` restricted to RNA-seq patients and informative columns; ``counts`` of patients and
    genes.
    """

    counts: dict = field(default_factory=dict)


def real_reference_map(
    folder: str | Path | None = None,
    n_modules: int | None = None,
    alpha: float = ALPHA,
    cut: float = MODULE_CUT,
    min_module_size: int = MIN_MODULE_SIZE,
    min_minority: int = MIN_MINORITY,
) -> ReferenceMap:
    """The three conventional steps on the real reference data.

    Metagenes of the complete genes over all RNA-seq samples; features: the AIM semantic
    annotations (:func:`radiolib.data.tables.semantic_numeric`) and the clinical labels
    (:func:`clinical_labels`) of the RNA-seq patients, informative columns only
    (:func:`informative_features`); Spearman + BH, one family per source.
    """
    ref = load_reference(folder)
    samples = list(ref.expression.columns)
    mg, modules = module_metagenes(
        ref.expression.T.to_numpy(),
        list(ref.expression.index),
        samples,
        n_modules,
        cut,
        min_module_size,
    )
    semantic = tables.semantic_numeric(ref.semantic)
    semantic = semantic.loc[semantic.index.isin(samples)]
    clinical = clinical_labels(ref.clinical)
    clinical = clinical.loc[clinical.index.isin(samples)]
    features = {
        "semantic": informative_features(semantic, min_minority),
        "clinical": informative_features(clinical, min_minority),
    }
    map_df, sig = correlate(features, mg, alpha)
    counts = {
        "genes": int(ref.expression.shape[0]),
        "rna_seq_patients": len(samples),
        "aim_patients": len(ref.semantic),
        "rna_seq_and_aim": int(ref.semantic.index.isin(samples).sum()),
        "rna_seq_and_clinical": int(ref.clinical.index.isin(samples).sum()),
        "metagenes": int(mg.shape[1]),
        "genes_in_modules": int(sum(len(g) for g in modules.values())),
        "semantic_features": int(features["semantic"].shape[1]),
        "clinical_labels": int(features["clinical"].shape[1]),
    }
    return ReferenceMap(mg, modules, features, map_df, sig, alpha, counts=counts)


# --------------------------------------------------------------------------- confounding check


def partial_spearman(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Spearman correlation of ``a`` and ``b`` (n,) with ``c`` (n,) held fixed, and its p-value.

    The first-order partial correlation of the ranks: (r_ab - r_ac r_bc) /
    sqrt((1 - r_ac^2)(1 - r_bc^2)), tested with t = r sqrt((n - 3) / (1 - r^2)) on n - 3
    degrees of freedom. Rows where any of the three is NaN are left out; NaN when fewer than 5
    rows remain or a variable is constant.
    """
    x = np.column_stack([np.asarray(v, dtype=np.float64).ravel() for v in (a, b, c)])
    x = x[np.all(np.isfinite(x), axis=1)]
    n = len(x)
    if n < 5 or np.any(np.ptp(x, axis=0) == 0):
        return float("nan"), float("nan")
    r = np.corrcoef(stats.rankdata(x, axis=0), rowvar=False)
    r_ab, r_ac, r_bc = r[0, 1], r[0, 2], r[1, 2]
    denom = np.sqrt((1 - r_ac**2) * (1 - r_bc**2))
    if denom < 1e-12:
        return float("nan"), float("nan")
    rho = float(np.clip((r_ab - r_ac * r_bc) / denom, -1.0, 1.0))
    if abs(rho) >= 1.0:
        return rho, 0.0
    t = rho * np.sqrt((n - 3) / (1 - rho**2))
    return rho, float(2 * stats.t.sf(abs(t), n - 3))


def patient_number(ids: Sequence[str]) -> np.ndarray:
    """The number of each patient id (``R01-023`` -> 23): the order of enrolment. (P,) float"""
    out = []
    for pid in ids:
        if not tables.PATIENT_ID_RE.match(str(pid)):
            raise CohortError(f"patient id {pid!r} is not like 'R01-023'")
        out.append(float(str(pid).rsplit("-", 1)[1]))
    return np.array(out)


ENROLMENT_COLUMNS = (
    "feature_set",
    "feature",
    "metagene",
    "rho",
    "q",
    "feature_vs_order",
    "metagene_vs_order",
    "partial_rho",
    "partial_p",
)


def enrolment_check(rmap: ReferenceMap) -> pd.DataFrame:
    """Whether the significant links of ``rmap`` are carried by the order of enrolment.

    Patients were enrolled, annotated and sequenced over years; a metagene and a feature that
    both drift with the patient number correlate without any biology between them. For each
    significant (feature, metagene) link: Spearman rho of the feature and of the metagene with
    the patient number, and the partial Spearman rho of the link with the patient number held
    fixed (:func:`partial_spearman`) with its p-value. Columns :data:`ENROLMENT_COLUMNS`.
    """
    rows = []
    for r in rmap.significant.itertuples():
        feat = rmap.features[r.feature_set][r.feature]
        common = feat.index.intersection(rmap.metagenes.index)
        f = feat.loc[common].to_numpy(np.float64)
        m = rmap.metagenes.loc[common, r.metagene].to_numpy(np.float64)
        order = patient_number(list(common))
        ok = np.isfinite(f) & np.isfinite(m)
        pr, pp = partial_spearman(f, m, order)
        rows.append(
            {
                "feature_set": r.feature_set,
                "feature": r.feature,
                "metagene": r.metagene,
                "rho": r.rho,
                "q": r.q,
                "feature_vs_order": float(stats.spearmanr(f[ok], order[ok])[0]),
                "metagene_vs_order": float(stats.spearmanr(m[ok], order[ok])[0]),
                "partial_rho": pr,
                "partial_p": pp,
            }
        )
    return pd.DataFrame(rows, columns=list(ENROLMENT_COLUMNS))
