"""Loaders for the NSCLC Radiogenomics cohort (or any folder written in the same formats).

A cohort folder ROOT holds DICOM files anywhere below it (CT series, one file per slice, and DICOM
SEG objects that reference them), the GEO RNA-seq table ``GSE103584_R01_NSCLC_RNAseq.txt[.gz]``,
the clinical table ``NSCLCR01Radiogenomic_DATA_LABELS_*.csv`` and optionally AIM v4 XML files with
the radiologists' semantic features. Nothing here depends on the folder layout: DICOM files are
grouped by their headers (PatientID, Modality, SeriesInstanceUID).

:func:`open_cohort` indexes ROOT and decides which patients are usable (CT + SEG + expression);
:func:`load_scan` reads one patient's CT in HU and its tumour mask on the CT grid.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from radiolib.errors import CohortError

EXPRESSION_NAMES = ("GSE103584_R01_NSCLC_RNAseq.txt", "GSE103584_R01_NSCLC_RNAseq.txt.gz")
CLINICAL_GLOB = "NSCLCR01Radiogenomic_DATA_LABELS_*.csv"
# Sample / patient ids of the cohort: R01-001, AMC-049, and phantom ids of the same shape.
PATIENT_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*-\d+$")
# SEG series made by algorithms (IDC's AIMI analysis results), as opposed to the TCIA annotations.
_AI_SEG_RE = re.compile(r"\bAI\b|AIMI|automat|nnu-?net|totalsegmentator|deep ?learning", re.I)


# --------------------------------------------------------------------------------------------
# Data classes of the public interface


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


@dataclass
class Scan:
    """One patient's CT (float32 HU) and tumour mask (uint8 {0, 1}) on the same grid."""

    patient_id: str
    ct: sitk.Image
    mask: sitk.Image
    ct_files: list[Path] = field(default_factory=list)
    seg_file: Path | None = None


# --------------------------------------------------------------------------------------------
# DICOM discovery


_HEADER_COLUMNS = [
    "path",
    "patient_id",
    "modality",
    "study_uid",
    "series_uid",
    "sop_uid",
    "frame_of_reference_uid",
    "series_description",
    "manufacturer",
    "series_date",
    "ref_series",
    "ref_sops",
    "geometry",
]


def _pixel_bytes_missing(ds: pydicom.Dataset, path: Path, pixel_tag_pos: int) -> str | None:
    """Why the pixel data of an uncompressed file is cut short, or None when it is whole."""
    if "Rows" not in ds or "Columns" not in ds:
        return None
    size = os.path.getsize(path)
    if pixel_tag_pos >= size:
        return f"no pixel data (file ends at byte {size}, expected Rows x Columns pixels)"
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is not None and tsuid.is_compressed:
        return None
    bits = int(ds.get("BitsAllocated", 16))
    n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    n *= int(ds.get("NumberOfFrames", 1) or 1)
    expected = (n * bits + 7) // 8
    # explicit VR OB/OW headers take 12 bytes, implicit VR 8: allow the smaller one
    available = size - pixel_tag_pos - 8
    if available < expected:
        return f"truncated: pixel data needs {expected} bytes, only {max(available, 0)} present"
    return None


def _walk_references(ds: pydicom.Dataset) -> tuple[set[str], set[str]]:
    """All referenced series UIDs and SOP instance UIDs found anywhere inside ``ds``'s sequences.

    Covers ReferencedSeriesSequence (SEG common instance reference), RT-style
    ReferencedFrameOfReferenceSequence/RTReferencedSeriesSequence and the per-frame
    DerivationImageSequence/SourceImageSequence.
    """
    series: set[str] = set()
    sops: set[str] = set()

    def visit(d: pydicom.Dataset, inside_ref: bool) -> None:
        for elem in d:
            if elem.VR != "SQ":
                continue
            kw = elem.keyword or ""
            ref_series = kw.endswith("ReferencedSeriesSequence")
            for item in elem.value:
                if ref_series and "SeriesInstanceUID" in item:
                    series.add(str(item.SeriesInstanceUID))
                if "ReferencedSOPInstanceUID" in item:
                    sops.add(str(item.ReferencedSOPInstanceUID))
                visit(item, inside_ref or ref_series)

    visit(ds, False)
    return series, sops


def scan_dicom(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the header of every DICOM file under ``root`` (any layout).

    Returns ``(files, problems)``: ``files`` one row per readable DICOM file with columns
    path, patient_id, modality, study_uid, series_uid, sop_uid, frame_of_reference_uid,
    series_description, manufacturer, series_date, ref_series (tuple), ref_sops (frozenset; SEG
    only); ``problems`` rows patient_id ('' when unknown), reason, file for corrupt or truncated
    DICOM files. Files that are not DICOM at all are skipped quietly, except ``*.dcm`` files.
    """
    root = Path(root)
    rows: list[dict] = []
    problems: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                with open(path, "rb") as fh:
                    ds = pydicom.dcmread(fh, stop_before_pixels=True)
                    pixel_pos = fh.tell()
            except OSError as exc:
                problems.append(
                    {"patient_id": "", "reason": f"unreadable file ({exc})", "file": path}
                )
                continue
            except InvalidDicomError:
                if name.lower().endswith(".dcm"):
                    problems.append(
                        {"patient_id": "", "reason": "not a readable DICOM file", "file": path}
                    )
                continue
            except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file
                problems.append(
                    {"patient_id": "", "reason": f"corrupt DICOM header ({exc})", "file": path}
                )
                continue
            pid = str(ds.get("PatientID", "") or "")
            missing = [k for k in ("PatientID", "Modality", "SeriesInstanceUID") if k not in ds]
            if missing:
                problems.append(
                    {
                        "patient_id": pid,
                        "reason": f"corrupt or truncated DICOM header (no {', '.join(missing)})",
                        "file": path,
                    }
                )
                continue
            modality = str(ds.Modality)
            if modality in ("CT", "SEG", "PT", "MR"):
                why = _pixel_bytes_missing(ds, path, pixel_pos)
                if why is not None:
                    problems.append({"patient_id": pid, "reason": why, "file": path})
                    continue
            ref_series: tuple[str, ...] = ()
            ref_sops: frozenset[str] = frozenset()
            geometry = None
            if modality == "CT":
                try:
                    geometry = _slice_from_ds(ds, path, pid)
                except CohortError as exc:
                    problems.append({"patient_id": pid, "reason": str(exc), "file": path})
                    continue
            if modality == "SEG":
                s, o = _walk_references(ds)
                ref_series, ref_sops = tuple(sorted(s)), frozenset(o)
            rows.append(
                {
                    "path": path,
                    "patient_id": pid,
                    "modality": modality,
                    "study_uid": str(ds.get("StudyInstanceUID", "")),
                    "series_uid": str(ds.SeriesInstanceUID),
                    "sop_uid": str(ds.get("SOPInstanceUID", "")),
                    "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
                    "series_description": str(ds.get("SeriesDescription", "") or ""),
                    "manufacturer": " ".join(
                        str(ds.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")
                    ).strip(),
                    "series_date": str(ds.get("SeriesDate", "") or ""),
                    "ref_series": ref_series,
                    "ref_sops": ref_sops,
                    "geometry": geometry,
                }
            )
    files = pd.DataFrame(rows, columns=_HEADER_COLUMNS)
    return files, pd.DataFrame(problems, columns=["patient_id", "reason", "file"])


def is_ai_segmentation(description: str, manufacturer: str = "") -> bool:
    """True for SEG series made by an algorithm (e.g. IDC's 'AIMI lung and nodule AI ...')."""
    return bool(_AI_SEG_RE.search(description or "") or _AI_SEG_RE.search(manufacturer or ""))


@dataclass
class _SegMatch:
    seg: pd.Series
    ct_series_uid: str | None
    missing: tuple[str, ...]
    how: str


def _match_seg(seg: pd.Series, ct: pd.DataFrame) -> _SegMatch:
    """Find the CT series (among ``ct``, one patient's CT files) that a SEG instance references."""
    present = set(ct["series_uid"])
    named = [s for s in seg["ref_series"] if s in present]
    if named:
        # several referenced series present: take the one most of its referenced SOPs lie in
        counts = {
            s: int(ct.loc[ct.series_uid == s, "sop_uid"].isin(seg["ref_sops"]).sum()) for s in named
        }
        best = max(sorted(named), key=lambda s: counts[s])
        return _SegMatch(seg, best, (), "ReferencedSeriesSequence")
    if seg["ref_sops"]:
        hit = ct[ct["sop_uid"].isin(seg["ref_sops"])]
        if len(hit):
            best = hit["series_uid"].value_counts().sort_index().idxmax()
            return _SegMatch(seg, str(best), (), "referenced SOP instances")
    if seg["ref_series"] or seg["ref_sops"]:
        missing = seg["ref_series"] or tuple(sorted(seg["ref_sops"]))[:3]
        return _SegMatch(seg, None, tuple(missing), "")
    same_for = ct[ct["frame_of_reference_uid"] == seg["frame_of_reference_uid"]]
    if seg["frame_of_reference_uid"] and len(same_for):
        best = same_for["series_uid"].value_counts().sort_index().idxmax()
        return _SegMatch(seg, str(best), (), "FrameOfReferenceUID (no explicit reference)")
    return _SegMatch(seg, None, ("<no reference and no CT with its FrameOfReferenceUID>",), "")


# --------------------------------------------------------------------------------------------
# CT geometry and loading


@dataclass
class _SliceInfo:
    path: Path
    sop_uid: str
    series_uid: str
    position: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,)
    rows: int
    columns: int
    spacing: tuple[float, float]
    thickness: float


def _folder_of(files: Sequence[Path]) -> Path:
    parents = {str(Path(f).parent) for f in files}
    return Path(os.path.commonpath(sorted(parents))) if parents else Path(".")


def _slice_from_ds(ds: pydicom.Dataset, path: Path, patient_id: str) -> _SliceInfo:
    try:
        return _SliceInfo(
            path=path,
            sop_uid=str(ds.SOPInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            position=np.asarray([float(v) for v in ds.ImagePositionPatient]),
            orientation=np.asarray([float(v) for v in ds.ImageOrientationPatient]),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
            thickness=float(ds.get("SliceThickness", 0) or 0),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CohortError(
            f"patient {patient_id}: CT file {path} lacks geometry (ImagePositionPatient, "
            f"ImageOrientationPatient, PixelSpacing, Rows, Columns): {exc}"
        ) from exc


def _read_slices(files: Sequence[Path], patient_id: str) -> list[_SliceInfo]:
    """Headers of CT files, checked for truncation. Raises CohortError naming the file."""
    out = []
    for f in files:
        f = Path(f)
        try:
            with open(f, "rb") as fh:
                ds = pydicom.dcmread(fh, stop_before_pixels=True)
                pos = fh.tell()
        except Exception as exc:  # noqa: BLE001
            raise CohortError(f"patient {patient_id}: cannot read DICOM file {f}: {exc}") from exc
        why = _pixel_bytes_missing(ds, f, pos)
        if why is not None:
            raise CohortError(f"patient {patient_id}: corrupt CT file {f}: {why}")
        out.append(_slice_from_ds(ds, f, patient_id))
    series = sorted({s.series_uid for s in out})
    if len(series) > 1:
        raise CohortError(
            f"patient {patient_id}: CT files in {_folder_of(list(files))} belong to "
            f"{len(series)} series ({', '.join(series)}), expected one"
        )
    return out


def _sorted_geometry(
    slices: list[_SliceInfo], patient_id: str, regular: bool = True
) -> tuple[list[_SliceInfo], np.ndarray, float]:
    """Sort slices along the normal and check one regular grid (spacing only if ``regular``).

    Returns (sorted slices, positions along the normal (Z,), slice spacing in mm).
    """
    if not slices:
        raise CohortError(f"patient {patient_id}: the CT series has no files")
    folder = _folder_of([s.path for s in slices])
    ref = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, ref.orientation, atol=1e-4):
            raise CohortError(
                f"patient {patient_id}: CT series in {folder} mixes slice orientations "
                f"({s.path.name} differs from {ref.path.name})"
            )
        if (s.rows, s.columns) != (ref.rows, ref.columns) or not np.allclose(
            s.spacing, ref.spacing, rtol=1e-4
        ):
            raise CohortError(
                f"patient {patient_id}: CT series in {folder} mixes slice sizes or pixel spacing "
                f"({s.path.name} differs from {ref.path.name})"
            )
    normal = np.cross(ref.orientation[:3], ref.orientation[3:])
    z = np.asarray([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(z, kind="stable")
    slices = [slices[i] for i in order]
    z = z[order]
    if len(slices) == 1:
        return slices, z, ref.thickness if ref.thickness > 0 else 1.0
    d = np.diff(z)
    if np.any(d < 1e-3):
        i = int(np.argmin(d))
        raise CohortError(
            f"patient {patient_id}: CT series in {folder} has two slices at the same position "
            f"({slices[i].path.name}, {slices[i + 1].path.name})"
        )
    step = float(np.min(d))
    if not regular:
        return slices, z, step
    tol = 0.01 * step + 0.01
    bad = np.abs(d - step) > tol
    if np.any(bad):
        i = int(np.argmax(bad))
        ratio = d[i] / step
        kind = (
            f"missing slice(s) ({int(round(ratio)) - 1} absent)"
            if abs(ratio - round(ratio)) * step <= tol
            else "inconsistent slice spacing"
        )
        raise CohortError(
            f"patient {patient_id}: CT series in {folder} has {kind}: gap of {d[i]:.3f} mm "
            f"between {slices[i].path.name} and {slices[i + 1].path.name}, expected {step:.3f} mm"
        )
    return slices, z, float(np.mean(d))


def load_ct(files: Sequence[str | os.PathLike], patient_id: str = "?") -> sitk.Image:
    """Read one CT series as a float32 HU image (x, y, z), slices sorted along the normal.

    SimpleITK applies RescaleSlope/RescaleIntercept. Raises CohortError for corrupt or truncated
    files, missing slices or irregular slice spacing, naming the patient and the file/folder.
    """
    slices, _, spacing = _sorted_geometry(
        _read_slices([Path(f) for f in files], patient_id), patient_id
    )
    names = [str(s.path) for s in slices]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    # spacing was checked above (1 % tolerance); ITK's own sub-micron warning would only be noise
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        # find the file ITK could not read to name it
        for n in names:
            try:
                sitk.ReadImage(n)
            except RuntimeError:
                raise CohortError(f"patient {patient_id}: cannot decode CT file {n}") from exc
        raise CohortError(
            f"patient {patient_id}: cannot read CT series in {_folder_of(names)}: {exc}"
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    img = sitk.Cast(img, sitk.sitkFloat32)
    if img.GetSize()[2] != len(names):
        raise CohortError(
            f"patient {patient_id}: CT series in {_folder_of([s.path for s in slices])} read "
            f"{img.GetSize()[2]} slices from {len(names)} files"
        )
    sx, sy, _ = img.GetSpacing()
    img.SetSpacing((sx, sy, spacing))
    return img


# --------------------------------------------------------------------------------------------
# SEG decoding


def _ct_positions_on(geometry: Any, slices: list[_SliceInfo]) -> np.ndarray:
    """Where the first and the last pixel of each CT slice fall on a SEG's frame grid: (Z, 2, 3)
    (slice, row, column) indices of ``geometry`` (a highdicom volume geometry)."""
    ref = slices[0]
    row_dir, col_dir = ref.orientation[:3], ref.orientation[3:]
    # PixelSpacing is (between rows, between columns); a row runs along row_dir
    last = (ref.columns - 1) * ref.spacing[1] * row_dir + (ref.rows - 1) * ref.spacing[0] * col_dir
    first = np.stack([s.position for s in slices])
    points = np.concatenate([first, first + last])
    idx = geometry.map_reference_to_indices(points, round_output=False)
    return np.stack([idx[: len(slices)], idx[len(slices) :]], axis=1)


def _frames_by_position(volume: Any, slices: list[_SliceInfo]) -> np.ndarray | None:
    """A SEG volume (highdicom) resampled by nearest slice onto the CT slices: (Z, Y, X, S), or
    None when a frame with tumour falls on no CT slice."""
    index = _ct_positions_on(volume, slices)[:, 0, 0]
    at = np.rint(index).astype(int)
    # a CT slice between two frames (another slice spacing) takes neither
    inside = (at >= 0) & (at < volume.spatial_shape[0]) & (np.abs(index - at) < 0.1)
    out = np.zeros((len(slices), *volume.array.shape[1:]), volume.array.dtype)
    out[inside] = volume.array[at[inside]]
    unused = np.setdiff1d(np.arange(volume.spatial_shape[0]), at[inside])
    return None if volume.array[unused].any() else out


def decode_seg(
    seg_file: str | os.PathLike,
    ct_files: Sequence[str | os.PathLike],
    segments: int | Sequence[int] | None = None,
    patient_id: str = "?",
) -> np.ndarray:
    """Decode a DICOM SEG into a mask on the grid of the CT series ``ct_files`` (highdicom).

    Frames are placed at the CT slice of their ReferencedSOPInstanceUID
    (``Segmentation.get_pixels_by_source_instance``) or, when they reference no source instance,
    by their position (``Segmentation.get_volume`` mapped onto the CT slices). ``segments``:
    None for the union of all segments, or segment number(s). FRACTIONAL SEGs are thresholded at
    0.5; LABELMAP pixel values are segment numbers. Slices without a frame stay 0. Frames must
    lie on the CT's in-plane grid (no shifted, cropped or flipped frames).

    Returns uint8 {0, 1} of shape (Z, Y, X), Z in the order of increasing position along the CT
    slice normal (the order :func:`load_ct` uses).
    """
    import highdicom as hd

    seg_file = Path(seg_file)
    # the mask only needs each slice's position; load_ct checks the spacing
    slices, _, _ = _sorted_geometry(
        _read_slices([Path(f) for f in ct_files], patient_id), patient_id, regular=False
    )
    folder = _folder_of([s.path for s in slices])
    try:
        ds = pydicom.dcmread(seg_file)
    except Exception as exc:  # noqa: BLE001
        raise CohortError(f"patient {patient_id}: cannot read SEG file {seg_file}: {exc}") from exc
    if str(ds.get("Modality", "")) != "SEG":
        raise CohortError(f"patient {patient_id}: {seg_file} is not a DICOM SEG")
    absent = [k for k in ("Rows", "Columns", "PixelData") if k not in ds]
    if absent:
        raise CohortError(
            f"patient {patient_id}: SEG file {seg_file} has no {', '.join(absent)} element; "
            "expected the frame size and the segmentation pixels"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise CohortError(
            f"patient {patient_id}: SEG file {seg_file} has unreadable Rows, Columns or "
            f"NumberOfFrames ({exc}); expected whole numbers"
        ) from exc
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        # BINARY frames are packed 1 bit per pixel; the element is padded to an even length
        expected, size = (n_frames * rows * cols * bits + 7) // 8, len(ds.PixelData)
        if not expected <= size <= expected + 1:
            raise CohortError(
                f"patient {patient_id}: SEG file {seg_file} holds {size} bytes of pixels; "
                f"expected NumberOfFrames x Rows x Columns = {n_frames} x {rows} x {cols} at "
                f"{bits} bit(s) ({expected} bytes)"
            )
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # noqa: BLE001 - highdicom refuses malformed SEGs in many ways
        raise CohortError(f"patient {patient_id}: cannot read SEG file {seg_file}: {exc}") from exc
    ct_series = {slices[0].series_uid}
    ref_series = {str(series) for _, series, _ in seg.get_source_image_uids()}
    if ref_series and not (ref_series & ct_series):
        raise CohortError(
            f"patient {patient_id}: SEG file {seg_file} references series "
            f"{', '.join(sorted(ref_series))}, which is absent (CT series given: "
            f"{', '.join(sorted(ct_series))})"
        )
    ref = slices[0]
    if (rows, cols) != (ref.rows, ref.columns):
        raise CohortError(
            f"patient {patient_id}: SEG {seg_file} frames are {rows}x{cols}, CT slices "
            f"{ref.rows}x{ref.columns}"
        )
    numbers = list(seg.segment_numbers)
    if segments is None:
        wanted = numbers
    else:
        wanted = [int(segments)] if isinstance(segments, (int, np.integer)) else list(segments)
        unknown = sorted(set(wanted) - set(numbers))
        if unknown:
            raise CohortError(
                f"patient {patient_id}: SEG {seg_file} has segments {numbers}, not {unknown}"
            )
    # Overlapping segments are allowed (their union is taken); FRACTIONAL values come in [0, 1].
    options = {"segment_numbers": sorted(set(wanted)), "skip_overlap_checks": True}
    sops = [s.sop_uid for s in slices]
    geometry = seg.get_volume_geometry()  # None when the frames form no regular stack
    try:
        try:
            # SpatialLocationsPreserved is optional and often absent: the grid is checked below
            pixels = seg.get_pixels_by_source_instance(
                sops, assert_missing_frames_are_empty=True, ignore_spatial_locations=True, **options
            )
        except RuntimeError:  # the frames name no source instance: place them by position
            if geometry is None:
                raise
            pixels = _frames_by_position(seg.get_volume(**options), slices)
            if pixels is None:
                raise CohortError(
                    f"patient {patient_id}: SEG {seg_file} has tumour on a frame that matches no "
                    f"slice of the CT series in {folder}"
                ) from None
    except CohortError:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom reports undecodable frames variously
        raise CohortError(
            f"patient {patient_id}: cannot decode SEG pixels of {seg_file}: {exc}"
        ) from exc
    frames = np.asarray(pixels) > (0.5 if seg.segmentation_type.value == "FRACTIONAL" else 0)
    mask = frames.any(axis=-1).astype(np.uint8)
    if geometry is not None and mask.any():
        # every CT slice with tumour must sit on the SEG's grid: its first pixel at frame pixel
        # (0, 0) and its last at (rows - 1, cols - 1), whichever way it was placed
        corners = _ct_positions_on(geometry, slices)[:, :, 1:]
        expect = np.array([[0.0, 0.0], [rows - 1.0, cols - 1.0]])
        off = np.abs(corners - expect).max(axis=(1, 2))
        bad = np.flatnonzero(mask.any(axis=(1, 2)) & (off > 0.5))
        if len(bad):
            k = int(bad[0])
            raise CohortError(
                f"patient {patient_id}: SEG {seg_file} frames are shifted by {off[k]:.1f} "
                f"pixels from CT slice {slices[k].path.name}"
            )
    return mask


# --------------------------------------------------------------------------------------------
# GEO expression table and series matrix


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_expression(path: str | os.PathLike) -> pd.DataFrame:
    """Read the GEO RNA-seq table: genes (rows) x samples (columns ``R01-xxx``), float, NaN for NA.

    Accepts ``.txt`` and ``.txt.gz``. The first header cell must be empty, every other header
    cell a patient id, every value a number or ``NA``; otherwise CohortError naming the file and
    the line/column.
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
    dup = pd.Index(cells[1:])[pd.Index(cells[1:]).duplicated()]
    if len(dup):
        raise CohortError(f"expression table {path}: sample {dup[0]!r} appears twice in line 1")
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
    values = values.astype(np.float64)
    if values.shape[0] == 0 or not np.isfinite(values.to_numpy()).any():
        raise CohortError(f"expression table {path} holds no numeric value (all NA or empty)")
    if (values.to_numpy() < 0).any():
        i, j = np.argwhere(values.to_numpy() < 0)[0]
        raise CohortError(
            f"expression table {path}: line {i + 2}, column {j + 2}: negative value "
            f"{values.iat[i, j]} (expected linear FPKM >= 0)"
        )
    return values


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


# --------------------------------------------------------------------------------------------
# The cohort


def _find(root: Path, names: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for n in names:
        found += list(root.rglob(n))
    return sorted(set(found), key=lambda p: (len(p.relative_to(root).parts), str(p)))


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
    expr_paths = _find(root, EXPRESSION_NAMES)
    if not expr_paths:
        raise CohortError(
            f"cohort folder {root}: no expression table ({' or '.join(EXPRESSION_NAMES)})"
        )
    expr_path = expr_paths[0]
    expression = read_expression(expr_path)
    # the clinical table and the AIM files are optional: one that cannot be read is skipped
    skipped_inputs: list[dict] = []
    clin_paths = _find(root, [CLINICAL_GLOB])
    clinical = pd.DataFrame(index=pd.Index([], name="patient_id"))
    if clin_paths:
        try:
            clinical = read_clinical(clin_paths[0])
        except CohortError as exc:
            skipped_inputs.append(
                {"file": clin_paths[0], "reason": f"clinical table skipped: {exc}"}
            )
            clin_paths = []
    aim_paths = [p for p in sorted(root.rglob("*.xml")) if _is_aim(p)]
    semantic = read_aim_folder(aim_paths, problems=skipped_inputs)

    files, problems = scan_dicom(root)
    if files.empty:
        extra = (
            f" ({len(problems)} unreadable DICOM files, e.g. {problems.file.iloc[0]})"
            if len(problems)
            else ""
        )
        raise CohortError(f"cohort folder {root}: no DICOM file found{extra}")

    dropped: list[dict] = []
    notes: list[dict] = []
    series_rows: list[dict] = []
    bad_by_patient = {pid: grp for pid, grp in problems.groupby("patient_id") if pid}
    for _, p in problems[problems.patient_id == ""].iterrows():
        dropped.append({"patient_id": "", "reason": p.reason, "file": p.file})

    expr_ids = set(expression.columns)
    all_na = {c for c in expression.columns if expression[c].isna().all()}
    ids = sorted(set(files.patient_id) | expr_ids | set(clinical.index) | set(bad_by_patient))
    for pid in ids:
        pf = files[files.patient_id == pid]
        ct = pf[pf.modality == "CT"]
        segs = pf[pf.modality == "SEG"]
        bad = bad_by_patient.get(pid)

        def drop(reason: str, file: Path | str, pid: str = pid) -> None:
            dropped.append({"patient_id": pid, "reason": reason, "file": Path(file)})

        if pf.empty and bad is None:
            if pid in expr_ids:
                drop("no CT (no DICOM file of this patient)", expr_path)
            else:
                drop(
                    "no CT and no expression (clinical table only)",
                    clin_paths[0] if clin_paths else root,
                )
            continue
        if pid not in expr_ids:
            first = pf.path.iloc[0] if len(pf) else bad.file.iloc[0]
            drop(f"no expression (not a sample column of {expr_path.name})", _folder_of([first]))
            continue
        if pid in all_na:
            drop(f"expression all NA in {expr_path.name}", expr_path)
            continue
        if ct.empty:
            if bad is not None:
                drop(f"corrupt file: {bad.reason.iloc[0]}", bad.file.iloc[0])
            else:
                found = ", ".join(sorted(set(pf.modality)))
                drop(
                    f"no CT series (DICOM files of modality {found} only)",
                    _folder_of(list(pf.path)),
                )
            continue
        if segs.empty:
            if bad is not None:
                drop(f"corrupt file: {bad.reason.iloc[0]}", bad.file.iloc[0])
            else:
                drop("no SEG", _folder_of(list(ct.path)))
            continue
        # rank SEG candidates: human (TCIA) before AI, resolvable before not, then by uid
        matches = [_match_seg(s, ct) for _, s in segs.iterrows()]
        matches.sort(
            key=lambda m: (
                is_ai_segmentation(m.seg.series_description, m.seg.manufacturer),
                m.ct_series_uid is None,
                m.seg.series_uid,
                str(m.seg.path),
            )
        )
        best = matches[0]
        if best.ct_series_uid is None:
            drop(f"SEG references missing series {', '.join(best.missing)}", best.seg.path)
            continue
        ct_files = ct[ct.series_uid == best.ct_series_uid]
        bad_here = None
        if bad is not None:
            folders = {p.parent for p in ct_files.path} | {best.seg.path.parent}
            in_series = bad[bad.file.apply(lambda f, fo=folders: Path(f).parent in fo)]
            bad_here = in_series if len(in_series) else None
            for _, b in bad.iterrows():
                if bad_here is None or b.file not in set(bad_here.file):
                    notes.append(
                        {"patient_id": pid, "note": f"ignored: {b.reason}", "file": b.file}
                    )
        if bad_here is not None:
            drop(f"corrupt file: {bad_here.reason.iloc[0]}", bad_here.file.iloc[0])
            continue
        try:
            slices, _, _ = _sorted_geometry(list(ct_files.geometry), pid)
        except CohortError as exc:
            drop(f"CT series unusable: {exc}", _folder_of(list(ct_files.path)))
            continue
        ai = is_ai_segmentation(best.seg.series_description, best.seg.manufacturer)
        note = f"chosen from {len(matches)} SEG instance(s); reference via {best.how}"
        if len(matches) > 1:
            others = ", ".join(
                sorted({m.seg.series_description or m.seg.series_uid for m in matches[1:]})
            )
            note += f"; others: {others}"
        if ai:
            note += "; only AI segmentations available"
        series_rows.append(
            {
                "patient_id": pid,
                "ct_series_uid": best.ct_series_uid,
                "ct_files": [s.path for s in slices],
                "seg_file": best.seg.path,
                "seg_series_uid": best.seg.series_uid,
                "seg_description": best.seg.series_description,
                "seg_candidates": len(matches),
                "seg_note": note,
                "ct_folder": _folder_of([s.path for s in slices]),
            }
        )
    series = (
        pd.DataFrame(
            series_rows,
            columns=[
                "patient_id",
                "ct_series_uid",
                "ct_files",
                "seg_file",
                "seg_series_uid",
                "seg_description",
                "seg_candidates",
                "seg_note",
                "ct_folder",
            ],
        )
        .set_index("patient_id")
        .sort_index()
    )
    dropped_df = pd.DataFrame(dropped, columns=["patient_id", "reason", "file"])
    patients = sorted(series.index)
    if not patients:
        listing = "; ".join(
            f"{r.patient_id or '?'}: {r.reason} ({r.file})" for r in dropped_df.head(8).itertuples()
        )
        dicom_ids = sorted(set(files.patient_id))
        raise CohortError(
            f"cohort folder {root}: no patient has a CT series, a SEG and expression values. "
            f"Expression samples in {expr_path}: {_show(sorted(expr_ids))}; DICOM patients: "
            f"{_show(dicom_ids)}. Dropped: {listing}"
        )
    return Cohort(
        root=root,
        patients=patients,
        series=series,
        expression=expression,
        clinical=clinical,
        semantic=semantic,
        dropped=dropped_df,
        files={"expression": expr_path, **({"clinical": clin_paths[0]} if clin_paths else {})},
        notes=pd.DataFrame(notes, columns=["patient_id", "note", "file"]),
        skipped_inputs=pd.DataFrame(skipped_inputs, columns=["file", "reason"]),
    )


def _show(ids: Sequence[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "") or "none"


def load_scan(cohort: Cohort, patient_id: str, segments: int | Sequence[int] | None = None) -> Scan:
    """Read one kept patient's CT (float32 HU) and SEG mask (uint8, union of ``segments``; all
    by default) on the CT's own grid. Raises CohortError naming the patient and the file.
    """
    if patient_id not in cohort.series.index:
        why = cohort.dropped[cohort.dropped.patient_id == patient_id]
        detail = (
            f"dropped: {why.reason.iloc[0]} ({why.file.iloc[0]})"
            if len(why)
            else "unknown patient id"
        )
        raise CohortError(f"patient {patient_id} is not in the cohort at {cohort.root}: {detail}")
    row = cohort.series.loc[patient_id]
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
