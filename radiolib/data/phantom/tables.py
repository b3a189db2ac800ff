"""The phantom's tables: the GEO-style expression table, the clinical table, the ground truth.

The expression table is written as GSE103584's (tab-separated, genes x samples, ``NA`` where
missing), the clinical table with the TCIA table's column names (image-related columns follow
the phantom: %GG from solidity, T stage from size, tumour location from the lobe), the ground
truth (:class:`~.biology.PhantomTruth`) as JSON for evaluation code only.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radiolib.io import atomic_write, read_json, write_json

from .anatomy import LOBE_COLUMNS
from .biology import PhantomTruth
from .dicom import study_date
from .streams import stream

EXPRESSION_FILE = "GSE103584_R01_NSCLC_RNAseq.txt"
CLINICAL_FILE = "NSCLCR01Radiogenomic_DATA_LABELS_phantom.csv"
TRUTH_FILE = Path("ground_truth") / "truth.json"

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
    *[f"Tumor Location (choice={c})" for c in (*LOBE_COLUMNS, "Unknown")],
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


@dataclass(frozen=True)
class _Course:
    """One patient's course after the CT: surgery, recurrence, death, follow-up."""

    ct_date: datetime.date
    surgery_days: int
    recurred: bool
    dead: bool
    follow_days: int


def clinical_table(pat: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The clinical table: columns of the TCIA table; image-related ones follow the phantom."""
    rows = [_clinical_row(str(pid), p, i, seed) for i, (pid, p) in enumerate(pat.iterrows())]
    return pd.DataFrame(rows, columns=_CLINICAL_COLUMNS)


def _clinical_row(pid: str, p: pd.Series, index: int, seed: int) -> dict[str, object]:
    """Patient ``index``'s row, drawn from its own stream in a fixed order."""
    rng = stream(seed, 5, index)
    smoking = _pick(rng, {"Former": 104, "Current": 33, "Nonsmoker": 25})
    surgery_days = int(np.clip(rng.gamma(1.5, 36.0), 1, 735))
    recurred = rng.random() < 46 / 162
    dead = rng.random() < 58 / 162
    follow_days = int(rng.uniform(300, 3000))
    course = _Course(study_date(index), surgery_days, recurred, dead, follow_days)
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
    row: dict[str, object] = {"Case ID": pid, **_person(rng, p, smoking)}
    lobe = p.get("lobe", "Unknown")
    for c in (*LOBE_COLUMNS, "Unknown"):
        row[f"Tumor Location (choice={c})"] = "Checked" if c == lobe else "Unchecked"
    row.update(_pathology(rng, p, histology))
    row.update(_treatment_and_outcome(rng, course))
    return row


def _person(rng: np.random.Generator, p: pd.Series, smoking: str) -> dict[str, object]:
    """Affiliation, age, weight, sex, ethnicity, smoking and the tumour's ground-glass share."""
    return {
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
        "Quit Smoking Year": (f"{int(rng.uniform(1960, 1996))}" if smoking == "Former" else "N/A"),
        "%GG": _gg_bin(float(p["solidity"])),
    }


def _pathology(rng: np.random.Generator, p: pd.Series, histology: str) -> dict[str, object]:
    """Histology, TNM stage, grade, invasion and the mutation statuses."""
    return {
        "Histology ": histology,
        "Pathological T stage": _t_stage(float(p["diameter_mm"]), float(p["solidity"]), rng),
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
        "Lymphovascular invasion": _pick(rng, {"Absent": 133, "Present": 21, "Not Collected": 8}),
        "Pleural invasion (elastic, visceral, or parietal)": _pick(rng, {"No": 120, "Yes": 42}),
        "EGFR mutation status": _pick(rng, {"Wildtype": 102, "Mutant": 25, "Unknown": 32}),
        "KRAS mutation status": _pick(rng, {"Wildtype": 94, "Mutant": 30, "Unknown": 34}),
        "ALK translocation status": _pick(rng, {"Wildtype": 118, "Translocated": 2, "Unknown": 38}),
    }


def _treatment_and_outcome(rng: np.random.Generator, course: _Course) -> dict[str, object]:
    """Adjuvant treatment, recurrence, survival and the dates of CT, PET and follow-up."""
    ct_date, follow = course.ct_date, course.follow_days
    last = ct_date + datetime.timedelta(days=follow)
    adj = rng.random() < 44 / 162
    return {
        "Adjuvant Treatment": "Yes" if adj else "No",
        "Chemotherapy": "Yes" if adj else "No",
        "Radiation": "Yes" if adj and rng.random() < 0.34 else "No",
        "Recurrence": "yes" if course.recurred else "no",
        "Recurrence Location": _pick(rng, {"local": 1, "regional": 1, "distant": 2})
        if course.recurred
        else "N/A",
        "Date of Recurrence": _mdy(ct_date + datetime.timedelta(days=follow // 2))
        if course.recurred
        else "N/A",
        "Date of Last Known Alive": _mdy(last),
        "Survival Status": "Dead" if course.dead else "Alive",
        "Date of Death": _mdy(last) if course.dead else "N/A",
        "Time to Death (days)": str(follow) if course.dead else "N/A",
        "CT Date": _mdy(ct_date),
        "Days between CT and surgery": course.surgery_days,
        "PET Date": _mdy(ct_date + datetime.timedelta(days=int(rng.integers(1, 30)))),
    }


def write_clinical(path: Path, clinical: pd.DataFrame) -> None:
    """Comma-separated with a header row, as the TCIA table."""
    with atomic_write(path, "w") as fh:
        clinical.to_csv(fh, index=False, lineterminator="\n")


def write_expression(path: Path, expr: pd.DataFrame) -> None:
    """Tab-separated, first header cell empty, 6 significant digits, ``NA`` for missing."""
    with atomic_write(path, "w") as fh:
        expr.to_csv(fh, sep="\t", na_rep="NA", float_format="%.6g", lineterminator="\n")


def _jsonable(v: object) -> object:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def write_truth(path: Path, truth: PhantomTruth) -> None:
    """The ground truth as JSON: params, one record per patient, one per linked gene."""
    pats = truth.patients.reset_index()
    obj = {
        "params": truth.params,
        "patients": [{k: _jsonable(v) for k, v in r.items()} for r in pats.to_dict("records")],
        "gene_links": [
            {k: _jsonable(v) for k, v in r.items()} for r in truth.gene_links.to_dict("records")
        ],
    }
    write_json(path, obj)


def read_truth(root: str | os.PathLike) -> PhantomTruth:
    """``ROOT/ground_truth/truth.json`` as :func:`write_truth` wrote it."""
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
