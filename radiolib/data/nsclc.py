"""The NSCLC Radiogenomics cohort (or any folder written in the same formats) and the verdict
on each of its patients.

A cohort folder ROOT holds DICOM files anywhere below it (CT series, one file per slice, and DICOM
SEG objects that reference them), the GEO RNA-seq table ``GSE103584_R01_NSCLC_RNAseq.txt[.gz]``,
the clinical table ``NSCLCR01Radiogenomic_DATA_LABELS_*.csv`` and optionally AIM v4 XML files with
the radiologists' semantic features. Nothing here depends on the folder layout: DICOM files are
grouped by their headers (PatientID, Modality, SeriesInstanceUID).

:func:`open_cohort` indexes ROOT and decides which patients are usable (CT + SEG + expression);
:meth:`Cohort.load_scan` reads one patient's CT in HU and its tumour mask on the CT grid. The
DICOM files are read by :mod:`radiolib.data.dicom`, the tables by :mod:`radiolib.data.tables`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from radiolib.data.dicom import (
    SegMatch,
    decode_seg,
    folder_of,
    is_ai_segmentation,
    load_ct,
    match_seg,
    scan_dicom,
    sorted_geometry,
)
from radiolib.data.tables import (
    CLINICAL_GLOB,
    EXPRESSION_NAMES,
    find_inputs,
    read_aim_folder,
    read_clinical,
    read_expression,
)
from radiolib.errors import CohortError

# --------------------------------------------------------------------------------------------
# Data classes of the public interface


@dataclass
class Scan:
    """One patient's CT (float32 HU) and tumour mask (uint8 {0, 1}) on the same grid."""

    patient_id: str
    ct: sitk.Image
    mask: sitk.Image
    ct_files: list[Path] = field(default_factory=list)
    seg_file: Path | None = None


@dataclass
class Cohort:
    """An indexed cohort folder.

    ``series`` has one row per kept patient (index ``patient_id``) with columns ``ct_series_uid``,
    ``ct_files`` (list of Path, sorted along the slice normal), ``seg_file`` (Path) and
    ``seg_series_uid``, ``seg_description``, ``seg_candidates``, ``seg_note``, ``ct_folder``.
    ``expression`` is the whole raw table as read (all samples); select ``expression[patients]``.
    ``dropped`` has one row per patient (or unreadable file) left out: patient_id, reason, file.
    ``notes`` records harmless findings of kept patients (e.g. an ignored corrupt PET file).
    ``skipped_inputs`` lists optional files (clinical table, AIM annotations) that could not be
    read and were left out: file, reason.
    """

    root: Path
    patients: list[str]
    series: pd.DataFrame
    expression: pd.DataFrame
    clinical: pd.DataFrame
    semantic: pd.DataFrame
    dropped: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    notes: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["patient_id", "note", "file"])
    )
    skipped_inputs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["file", "reason"])
    )

    def load_scan(self, patient_id: str, segments: int | Sequence[int] | None = None) -> Scan:
        """Read one kept patient's CT (float32 HU) and SEG mask (uint8, union of ``segments``;
        all by default) on the CT's own grid. Raises CohortError naming the patient and the
        file.
        """
        if patient_id not in self.series.index:
            why = self.dropped[self.dropped.patient_id == patient_id]
            detail = (
                f"dropped: {why.reason.iloc[0]} ({why.file.iloc[0]})"
                if len(why)
                else "unknown patient id"
            )
            raise CohortError(f"patient {patient_id} is not in the cohort at {self.root}: {detail}")
        row = self.series.loc[patient_id]
        ct_files = [Path(p) for p in row["ct_files"]]
        seg_file = Path(row["seg_file"])
        ct = load_ct(ct_files, patient_id)
        mask_arr = decode_seg(seg_file, ct_files, segments=segments, patient_id=patient_id)
        if mask_arr.shape != sitk.GetArrayViewFromImage(ct).shape:
            raise CohortError(
                f"patient {patient_id}: SEG {seg_file} decodes to {mask_arr.shape}, CT is "
                f"{sitk.GetArrayViewFromImage(ct).shape}"
            )
        if not mask_arr.any():
            raise CohortError(
                f"patient {patient_id}: SEG {seg_file} has an empty mask "
                f"(segments {segments if segments is not None else 'all'})"
            )
        mask = sitk.GetImageFromArray(mask_arr)
        mask.CopyInformation(ct)
        return Scan(patient_id=patient_id, ct=ct, mask=mask, ct_files=ct_files, seg_file=seg_file)


_SERIES_COLUMNS = [
    "patient_id",
    "ct_series_uid",
    "ct_files",
    "seg_file",
    "seg_series_uid",
    "seg_description",
    "seg_candidates",
    "seg_note",
    "ct_folder",
]


# --------------------------------------------------------------------------------------------
# The tables


@dataclass
class _Tables:
    """The cohort's tables as read, with the files they came from."""

    expression: pd.DataFrame
    expression_path: Path
    clinical: pd.DataFrame
    clinical_path: Path | None
    semantic: pd.DataFrame
    skipped_inputs: list[dict]


def _read_tables(root: Path) -> _Tables:
    """The expression table (required), the clinical table and the AIM files (optional: one
    that cannot be read is skipped and listed in ``skipped_inputs``)."""
    expr_paths = find_inputs(root, EXPRESSION_NAMES)
    if not expr_paths:
        raise CohortError(
            f"cohort folder {root}: no expression table ({' or '.join(EXPRESSION_NAMES)})"
        )
    expression = read_expression(expr_paths[0])
    skipped_inputs: list[dict] = []
    clin_paths = find_inputs(root, [CLINICAL_GLOB])
    clinical = pd.DataFrame(index=pd.Index([], name="patient_id"))
    clinical_path = clin_paths[0] if clin_paths else None
    if clinical_path is not None:
        try:
            clinical = read_clinical(clinical_path)
        except CohortError as exc:
            skipped_inputs.append(
                {"file": clinical_path, "reason": f"clinical table skipped: {exc}"}
            )
            clinical_path = None
    semantic = read_aim_folder(sorted(root.rglob("*.xml")), problems=skipped_inputs)
    return _Tables(expression, expr_paths[0], clinical, clinical_path, semantic, skipped_inputs)


# --------------------------------------------------------------------------------------------
# The verdict on one patient


_Drop = tuple[str, Path]  # (reason, file) of a patient left out


def _missing_input(
    pid: str, pf: pd.DataFrame, bad: pd.DataFrame | None, tables: _Tables, root: Path
) -> _Drop | None:
    """Why a patient lacks a DICOM file, expression values, a CT series or a SEG, if it does."""
    expression, expr_path = tables.expression, tables.expression_path
    if pf.empty and bad is None:
        if pid in expression.columns:
            return "no CT (no DICOM file of this patient)", expr_path
        return "no CT and no expression (clinical table only)", tables.clinical_path or root
    if pid not in expression.columns:
        first = pf.path.iloc[0] if len(pf) else bad.file.iloc[0]
        return f"no expression (not a sample column of {expr_path.name})", folder_of([first])
    if expression[pid].isna().all():
        return f"expression all NA in {expr_path.name}", expr_path
    ct = pf[pf.modality == "CT"]
    if ct.empty or pf[pf.modality == "SEG"].empty:
        if bad is not None:
            return f"corrupt file: {bad.reason.iloc[0]}", Path(bad.file.iloc[0])
        if ct.empty:
            found = ", ".join(sorted(set(pf.modality)))
            return f"no CT series (DICOM files of modality {found} only)", folder_of(list(pf.path))
        return "no SEG", folder_of(list(ct.path))
    return None


def _ranked_segs(segs: pd.DataFrame, ct: pd.DataFrame) -> list[SegMatch]:
    """A patient's SEG instances with the CT series each references, best first: human (TCIA)
    before AI, resolvable before not, then by uid."""
    matches = [match_seg(s, ct) for _, s in segs.iterrows()]
    matches.sort(
        key=lambda m: (
            is_ai_segmentation(m.seg.series_description, m.seg.manufacturer),
            m.ct_series_uid is None,
            m.seg.series_uid,
            str(m.seg.path),
        )
    )
    return matches


def _bad_in_series(
    pid: str, bad: pd.DataFrame | None, folders: set[Path], notes: list[dict]
) -> pd.DataFrame | None:
    """The corrupt files of a patient that lie in the chosen CT or SEG series' ``folders``;
    the others are harmless and recorded in ``notes``."""
    if bad is None:
        return None
    in_series = bad[bad.file.apply(lambda f: Path(f).parent in folders)]
    bad_here = in_series if len(in_series) else None
    for _, b in bad.iterrows():
        if bad_here is None or b.file not in set(bad_here.file):
            notes.append({"patient_id": pid, "note": f"ignored: {b.reason}", "file": b.file})
    return bad_here


def _patient_verdict(
    pid: str,
    pf: pd.DataFrame,
    bad: pd.DataFrame | None,
    tables: _Tables,
    root: Path,
    notes: list[dict],
) -> dict | _Drop:
    """One patient's row of :attr:`Cohort.series`, or why it is left out.

    ``pf`` are the patient's readable DICOM files (:func:`scan_dicom`), ``bad`` its corrupt
    ones (or None); harmless findings go to ``notes``.
    """
    missing = _missing_input(pid, pf, bad, tables, root)
    if missing is not None:
        return missing
    ct = pf[pf.modality == "CT"]
    matches = _ranked_segs(pf[pf.modality == "SEG"], ct)
    best = matches[0]
    if best.ct_series_uid is None:
        return f"SEG references missing series {', '.join(best.missing)}", best.seg.path
    ct_files = ct[ct.series_uid == best.ct_series_uid]
    folders = {p.parent for p in ct_files.path} | {best.seg.path.parent}
    bad_here = _bad_in_series(pid, bad, folders, notes)
    if bad_here is not None:
        return f"corrupt file: {bad_here.reason.iloc[0]}", Path(bad_here.file.iloc[0])
    try:
        slices, _, _ = sorted_geometry(list(ct_files.geometry), pid)
    except CohortError as exc:
        return f"CT series unusable: {exc}", folder_of(list(ct_files.path))
    note = f"chosen from {len(matches)} SEG instance(s); reference via {best.how}"
    if len(matches) > 1:
        others = ", ".join(
            sorted({m.seg.series_description or m.seg.series_uid for m in matches[1:]})
        )
        note += f"; others: {others}"
    if is_ai_segmentation(best.seg.series_description, best.seg.manufacturer):
        note += "; only AI segmentations available"
    return {
        "patient_id": pid,
        "ct_series_uid": best.ct_series_uid,
        "ct_files": [s.path for s in slices],
        "seg_file": best.seg.path,
        "seg_series_uid": best.seg.series_uid,
        "seg_description": best.seg.series_description,
        "seg_candidates": len(matches),
        "seg_note": note,
        "ct_folder": folder_of([s.path for s in slices]),
    }


# --------------------------------------------------------------------------------------------
# The cohort


def _scan_files(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`scan_dicom` of ROOT; CohortError when it holds no readable DICOM file."""
    files, problems = scan_dicom(root)
    if files.empty:
        extra = (
            f" ({len(problems)} unreadable DICOM files, e.g. {problems.file.iloc[0]})"
            if len(problems)
            else ""
        )
        raise CohortError(f"cohort folder {root}: no DICOM file found{extra}")
    return files, problems


def _judge_patients(
    root: Path, tables: _Tables, files: pd.DataFrame, problems: pd.DataFrame
) -> tuple[list[dict], list[dict], list[dict]]:
    """The verdict on every patient id seen (DICOM, expression columns, clinical rows):
    ``(series rows, dropped, notes)``; unreadable files that name no patient are dropped too."""
    dropped: list[dict] = []
    notes: list[dict] = []
    rows: list[dict] = []
    bad_by_patient = {pid: grp for pid, grp in problems.groupby("patient_id") if pid}
    for _, p in problems[problems.patient_id == ""].iterrows():
        dropped.append({"patient_id": "", "reason": p.reason, "file": p.file})
    ids = sorted(
        set(files.patient_id)
        | set(tables.expression.columns)
        | set(tables.clinical.index)
        | set(bad_by_patient)
    )
    for pid in ids:
        pf = files[files.patient_id == pid]
        verdict = _patient_verdict(pid, pf, bad_by_patient.get(pid), tables, root, notes)
        if isinstance(verdict, dict):
            rows.append(verdict)
        else:
            reason, file = verdict
            dropped.append({"patient_id": pid, "reason": reason, "file": Path(file)})
    return rows, dropped, notes


def open_cohort(root: str | os.PathLike) -> Cohort:
    """Index a cohort folder; keep the patients with a CT series, a SEG referencing it and
    expression values.

    Every other patient id seen (DICOM, expression columns, clinical rows) is listed in
    ``dropped`` with the reason and the file concerned; an unreadable clinical table or AIM file
    is left out and listed in ``skipped_inputs``. Raises CohortError if ROOT does not exist,
    holds an incomplete phantom, has no expression table, has no DICOM file, or no patient
    qualifies.
    """
    from radiolib.data.phantom import check_phantom_complete

    root = Path(root)
    if not root.is_dir():
        raise CohortError(f"cohort folder {root} does not exist")
    check_phantom_complete(root)
    tables = _read_tables(root)
    files, problems = _scan_files(root)
    rows, dropped, notes = _judge_patients(root, tables, files, problems)
    series = pd.DataFrame(rows, columns=_SERIES_COLUMNS).set_index("patient_id").sort_index()
    dropped_df = pd.DataFrame(dropped, columns=["patient_id", "reason", "file"])
    patients = sorted(series.index)
    if not patients:
        listing = "; ".join(
            f"{r.patient_id or '?'}: {r.reason} ({r.file})" for r in dropped_df.head(8).itertuples()
        )
        raise CohortError(
            f"cohort folder {root}: no patient has a CT series, a SEG and expression values. "
            f"Expression samples in {tables.expression_path}: "
            f"{_show(sorted(tables.expression.columns))}; DICOM patients: "
            f"{_show(sorted(set(files.patient_id)))}. Dropped: {listing}"
        )
    files_used = {"expression": tables.expression_path}
    if tables.clinical_path is not None:
        files_used["clinical"] = tables.clinical_path
    return Cohort(
        root=root,
        patients=patients,
        series=series,
        expression=tables.expression,
        clinical=tables.clinical,
        semantic=tables.semantic,
        dropped=dropped_df,
        files=files_used,
        notes=pd.DataFrame(notes, columns=["patient_id", "note", "file"]),
        skipped_inputs=pd.DataFrame(tables.skipped_inputs, columns=["file", "reason"]),
    )


def _show(ids: Sequence[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "") or "none"
