"""The cohort's tables: the GEO expression table and series matrix, the TCIA clinical table and
the radiologists' AIM v4 semantic annotations, each read into a DataFrame.

Every reader raises :class:`CohortError` naming the file (and the line or column) it cannot read.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from radiolib.data.expression import check_values
from radiolib.errors import CohortError

EXPRESSION_NAMES = ("GSE103584_R01_NSCLC_RNAseq.txt", "GSE103584_R01_NSCLC_RNAseq.txt.gz")
CLINICAL_GLOB = "NSCLCR01Radiogenomic_DATA_LABELS_*.csv"
# Sample / patient ids of the cohort: R01-001, AMC-049, and phantom ids of the same shape.
PATIENT_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*-\d+$")


def find_inputs(root: Path, names: Iterable[str]) -> list[Path]:
    """Files under ``root`` matching any of ``names`` (glob patterns), shallowest first."""
    found: list[Path] = []
    for n in names:
        found += list(root.rglob(n))
    return sorted(set(found), key=lambda p: (len(p.relative_to(root).parts), str(p)))


# --------------------------------------------------------------------------------------------
# GEO expression table and series matrix


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_expression(path: str | os.PathLike) -> pd.DataFrame:
    """Read the GEO RNA-seq table: genes (rows) x samples (columns ``R01-xxx``), float, NaN for NA.

    Accepts ``.txt`` and ``.txt.gz``. The first header cell must be empty, every other header
    cell a patient id, every value a number or ``NA`` that
    :func:`radiolib.data.expression.check_values` accepts; otherwise CohortError naming the
    file and the line/column.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"expression table {path} does not exist")
    try:
        with _open_text(path) as fh:
            header = fh.readline().rstrip("\r\n")
    except (OSError, EOFError) as exc:
        raise CohortError(f"cannot read expression table {path}: {exc}") from exc
    cells = [c.strip().strip('"') for c in header.split("\t")]
    if len(cells) < 2:
        raise CohortError(f"expression table {path}: line 1 is not a tab-separated header")
    if cells[0] != "":
        raise CohortError(
            f"expression table {path}: line 1, column 1 should be empty (gene column), "
            f"found {cells[0]!r}"
        )
    for j, c in enumerate(cells[1:], start=2):
        if not PATIENT_ID_RE.match(c):
            raise CohortError(
                f"expression table {path}: line 1, column {j}: {c!r} is not a patient id "
                "like 'R01-001'"
            )
    try:
        raw = pd.read_csv(
            path,
            sep="\t",
            header=0,
            index_col=0,
            dtype=str,
            na_values=["NA", "NaN", "nan", ""],
            keep_default_na=False,
            quotechar='"',
        )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise CohortError(f"expression table {path}: cannot parse: {exc}") from exc
    raw.columns = cells[1:]
    raw.index = raw.index.astype(str)
    raw.index.name = None
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.to_numpy().any():
        i, j = np.argwhere(bad.to_numpy())[0]
        raise CohortError(
            f"expression table {path}: line {i + 2}, column {j + 2} (gene {raw.index[i]!r}, "
            f"sample {raw.columns[j]}): {raw.iat[i, j]!r} is not a number or NA"
        )
    check_values(values, f"expression table {path}", as_read=True)
    return values.astype(np.float64)


def read_series_matrix(path: str | os.PathLike) -> pd.DataFrame:
    """Read a GEO series matrix's sample header: one row per sample, index ``patient_id`` (title).

    Columns: ``geo_accession`` (GSM id), ``title``, ``source_name``, then one column per
    ``!Sample_characteristics_ch1`` key (e.g. ``histology``, ``histopathological grade``,
    ``gender``), with the value after ``key: ``.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"series matrix {path} does not exist")
    fields: dict[str, list[str]] = {}
    characteristics: list[list[str]] = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith("!series_matrix_table_begin"):
                break
            if not line.startswith("!Sample_"):
                continue
            key, *vals = line.rstrip("\r\n").split("\t")
            vals = [v.strip().strip('"') for v in vals]
            if fields and len(vals) != len(next(iter(fields.values()))):
                raise CohortError(
                    f"series matrix {path}: line {lineno} ({key}) has {len(vals)} samples, "
                    f"earlier lines {len(next(iter(fields.values())))}"
                )
            key = key[len("!Sample_") :]
            if key == "characteristics_ch1":
                characteristics.append(vals)
            elif key not in fields:
                fields[key] = vals
    if "title" not in fields or "geo_accession" not in fields:
        raise CohortError(f"series matrix {path} has no !Sample_title / !Sample_geo_accession")
    out = pd.DataFrame(
        {
            "geo_accession": fields["geo_accession"],
            "title": fields["title"],
            "source_name": fields.get("source_name_ch1", [""] * len(fields["title"])),
        }
    )
    for vals in characteristics:
        keys = {v.split(":", 1)[0].strip() for v in vals if ":" in v}
        if len(keys) != 1:
            raise CohortError(f"series matrix {path}: mixed characteristics keys {sorted(keys)}")
        key = keys.pop()
        out[key] = [v.split(":", 1)[1].strip() if ":" in v else np.nan for v in vals]
    out.index = pd.Index(out["title"], name="patient_id")
    if out.index.duplicated().any():
        raise CohortError(
            f"series matrix {path}: sample title {out.index[out.index.duplicated()][0]!r} twice"
        )
    return out


# --------------------------------------------------------------------------------------------
# Clinical table


def read_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """Read the TCIA clinical CSV; first column ``Case ID`` or ``Patient ID`` -> index patient_id.

    Column names are stripped of surrounding spaces; values stay as written (``N/A`` etc. -> NaN).
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"clinical table {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        raise CohortError(
            f"clinical table {path}: cannot parse ({exc}); expected a comma-separated text table"
        ) from exc
    df.columns = [str(c).strip() for c in df.columns]
    first = df.columns[0] if len(df.columns) else ""
    if first not in ("Case ID", "Patient ID"):
        raise CohortError(
            f"clinical table {path}: first column should be 'Case ID' or 'Patient ID', "
            f"found {first!r}"
        )
    ids = df[first].astype(str).str.strip()
    if df[first].isna().any():
        raise CohortError(
            f"clinical table {path}: line {int(df[first].isna().argmax()) + 2} has no patient id"
        )
    if ids.duplicated().any():
        raise CohortError(f"clinical table {path}: patient {ids[ids.duplicated()].iloc[0]} twice")
    df = df.drop(columns=[first])
    for c in df.columns:
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().sum() == df[c].notna().sum() and df[c].notna().any():
            df[c] = num
    df.index = pd.Index(ids, name="patient_id")
    return df


# --------------------------------------------------------------------------------------------
# AIM v4 semantic features

_AIM_NS = "{gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM}"
_ISO_NS = "{uri:iso.org:21090}"
# spelling slips of the AIM template labels, fixed so that column names read well
_LABEL_FIXES = {
    "Emmphysema": "Emphysema",
    "Emhysema": "Emphysema",
    "gretater": "greater",
    "Parencyma": "Parenchyma",
}

#: Ordinal semantic features -> numbers (values compared lower-case, stripped). Attenuation and
#: solidity go from ground glass 0 to solid 1; binary findings absent 0 / present 1; emphysema
#: severity is the midpoint of its percentage band (0 when emphysema is absent); satellite and
#: other nodules count as present (1) whatever their attenuation.
SEMANTIC_ORDINAL: dict[str, dict[str, float]] = {
    "nodule_attenuation": {"ground glass": 0.0, "partially solid": 0.5, "solid": 1.0},
    "axial_location": {"peripheral": 0.0, "central": 1.0},
    "nodule_calcification": {"none": 0.0, "peripheral": 1.0},
    "emphysema": {"absent": 0.0, "present": 1.0},
    "fibrosis": {"absent": 0.0, "present": 1.0},
    "centrilobular_nodules_diffuse": {"absent": 0.0, "present": 1.0},
    "overall_emphysema_severity": {
        "low severity (1-25%)": 0.13,
        "moderate severity (26-50%)": 0.38,
        "moderately high severity (51-75%)": 0.63,
        "high severity (greaterthan 75%)": 0.88,
    },
    **{
        k: {"absent": 0.0, "non-solid": 1.0, "partially solid": 1.0, "solid": 1.0}
        for k in (
            "satellite_nodules_in_primary_lesion_lobe",
            "nodules_in_non_lesion_lobe_same_lung",
            "nodules_in_contralateral_lung",
        )
    },
}


def _feature_name(label: str) -> str:
    for bad, good in _LABEL_FIXES.items():
        label = label.replace(bad, good)
    label = re.sub(r"\(.*?\)", "", label)
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _code_text(tc: ET.Element) -> str | None:
    # AIM files of this collection carry the value text either in typeCode@codeSystem or in
    # the iso:displayName child (both RadLex-coded in typeCode@code)
    text = tc.get("codeSystem")
    if not text:
        disp = tc.find(f"{_ISO_NS}displayName")
        text = disp.get("value") if disp is not None else None
    return text.strip() if text else None


def read_aim(path: str | os.PathLike) -> dict[str, str]:
    """Semantic features of one AIM v4 file: {'patient_id', 'aim_file', feature: value text}.

    Feature names are the snake-cased labels (``nodule_attenuation``,
    ``nodule_margins_primary_pattern``, ``anatomic_location``...). Several values of one label are
    joined with '; ' (sorted); extra typeCodes of one characteristic (qualifiers such as
    'Solid greaterThan 5mm') go to ``<feature>_detail``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeError) as exc:
        raise CohortError(f"AIM file {path}: not readable XML: {exc}") from exc
    if root.tag != f"{_AIM_NS}ImageAnnotationCollection":
        raise CohortError(
            f"AIM file {path}: root element is {root.tag}, not an AIM v4 ImageAnnotationCollection"
        )
    pid_el = root.find(f"{_AIM_NS}person/{_AIM_NS}id")
    pid = (pid_el.get("value") or "").strip() if pid_el is not None else ""
    if not pid:
        raise CohortError(f"AIM file {path}: no person/id (patient id)")
    ann = root.find(f".//{_AIM_NS}ImageAnnotation")
    if ann is None:
        raise CohortError(f"AIM file {path} (patient {pid}): no ImageAnnotation")
    values: dict[str, list[str]] = {}
    details: dict[str, list[str]] = {}

    def add(label_el: ET.Element | None, codes: list[ET.Element]) -> None:
        if label_el is None or not codes:
            return
        name = _feature_name(label_el.get("value") or "")
        texts = [t for t in (_code_text(tc) for tc in codes) if t]
        if not name or not texts:
            return
        values.setdefault(name, []).append(texts[0])
        if len(texts) > 1:
            details.setdefault(name, []).extend(texts[1:])

    for pe in ann.iter(f"{_AIM_NS}ImagingPhysicalEntity"):
        add(pe.find(f"{_AIM_NS}label"), pe.findall(f"{_AIM_NS}typeCode"))
    for ch in ann.iter(f"{_AIM_NS}ImagingObservationCharacteristic"):
        add(ch.find(f"{_AIM_NS}label"), ch.findall(f"{_AIM_NS}typeCode"))
    row: dict[str, str] = {"patient_id": pid, "aim_file": path.name}
    for k, v in values.items():
        row[k] = "; ".join(sorted(set(v)))
    for k, v in details.items():
        row[f"{k}_detail"] = "; ".join(sorted(set(v)))
    return row


def _is_aim(path: Path) -> bool:
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            return elem.tag == f"{_AIM_NS}ImageAnnotationCollection"
    except (ET.ParseError, OSError, UnicodeError):
        return True  # let read_aim report the broken file
    return False


def read_aim_folder(
    folder: str | os.PathLike | Iterable[Path], problems: list[dict] | None = None
) -> pd.DataFrame:
    """One row per patient (index ``patient_id``, sorted) from every AIM XML file in ``folder``.

    Non-AIM XML files are skipped; a second file of the same patient is ignored with a warning.
    An unreadable file raises :class:`CohortError`, or, given a ``problems`` list, is skipped
    and recorded there as ``{"file", "reason"}``.
    """
    paths = (
        sorted(Path(folder).glob("*.xml"))
        if isinstance(folder, (str, os.PathLike))
        else sorted(folder)
    )
    rows: dict[str, dict] = {}
    for p in paths:
        if not _is_aim(p):
            continue
        try:
            row = read_aim(p)
        except CohortError as exc:
            if problems is None:
                raise
            problems.append({"file": p, "reason": f"AIM annotation skipped: {exc}"})
            continue
        if row["patient_id"] in rows:
            warnings.warn(
                f"AIM file {p}: patient {row['patient_id']} already read from "
                f"{rows[row['patient_id']]['aim_file']}; ignored",
                stacklevel=2,
            )
            continue
        rows[row["patient_id"]] = row
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return pd.DataFrame(index=pd.Index([], name="patient_id"))
    df = df.set_index("patient_id").sort_index()
    return df


def semantic_numeric(df: pd.DataFrame) -> pd.DataFrame:
    """Semantic features as numbers, one row per patient (same index as ``df``).

    Ordinal features follow :data:`SEMANTIC_ORDINAL`; every other feature (nominal or several
    values, e.g. margins, shape, associated findings) becomes 0/1 indicator columns
    ``feature=value``. Missing features stay NaN, except emphysema severity, which is 0 when
    emphysema is absent. ``aim_file`` and ``*_detail`` columns are left out.
    """
    out: dict[str, pd.Series] = {}
    for col in df.columns:
        if col == "aim_file" or col.endswith("_detail"):
            continue
        s = df[col].astype("string").str.strip().str.lower()
        if col in SEMANTIC_ORDINAL:
            mapping = SEMANTIC_ORDINAL[col]
            unknown = s.notna() & ~s.isin(list(mapping))
            if unknown.any():
                pid = unknown.idxmax()
                raise CohortError(
                    f"semantic feature {col!r} of patient {pid}: value {df.at[pid, col]!r} is not "
                    f"one of {sorted(mapping)}"
                )
            out[col] = s.map(mapping).astype(float)
            continue
        present = s.notna()
        values = sorted({v for x in s.dropna() for v in x.split("; ")})
        for v in values:
            ind = s.fillna("").str.split("; ").apply(lambda xs, v=v: float(v in xs))
            out[f"{col}={v}"] = ind.where(present)
    res = pd.DataFrame(out, index=df.index)
    if "overall_emphysema_severity" in res and "emphysema" in res:
        absent = res["emphysema"].eq(0.0) & res["overall_emphysema_severity"].isna()
        res.loc[absent, "overall_emphysema_severity"] = 0.0
    return res
