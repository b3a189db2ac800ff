"""DICOM files of a cohort folder: headers, SEG-to-CT matching, CT and SEG loading.

:func:`scan_dicom` reads the header of every DICOM file below a folder (any layout);
:func:`match_seg` finds the CT series a SEG instance references; :func:`load_ct` reads one CT
series in HU and :func:`decode_seg` a SEG's mask on that CT's grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from radiolib.errors import CohortError

if TYPE_CHECKING:
    import highdicom as hd

# SEG series made by algorithms (IDC's AIMI analysis results), as opposed to the TCIA annotations.
_AI_SEG_RE = re.compile(r"\bAI\b|AIMI|automat|nnu-?net|totalsegmentator|deep ?learning", re.I)


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


def _header_row(path: Path) -> tuple[dict | None, dict | None]:
    """``(row, None)`` for a readable DICOM file, ``(None, problem)`` for a corrupt one and
    ``(None, None)`` for a file that is not DICOM (see :func:`scan_dicom`)."""
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_pos = fh.tell()
    except OSError as exc:
        return None, {"patient_id": "", "reason": f"unreadable file ({exc})", "file": path}
    except InvalidDicomError:
        if path.name.lower().endswith(".dcm"):
            return None, {"patient_id": "", "reason": "not a readable DICOM file", "file": path}
        return None, None
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file
        return None, {"patient_id": "", "reason": f"corrupt DICOM header ({exc})", "file": path}
    pid = str(ds.get("PatientID", "") or "")
    missing = [k for k in ("PatientID", "Modality", "SeriesInstanceUID") if k not in ds]
    if missing:
        reason = f"corrupt or truncated DICOM header (no {', '.join(missing)})"
        return None, {"patient_id": pid, "reason": reason, "file": path}
    modality = str(ds.Modality)
    if modality in ("CT", "SEG", "PT", "MR"):
        why = _pixel_bytes_missing(ds, path, pixel_pos)
        if why is not None:
            return None, {"patient_id": pid, "reason": why, "file": path}
    ref_series: tuple[str, ...] = ()
    ref_sops: frozenset[str] = frozenset()
    geometry = None
    if modality == "CT":
        try:
            geometry = _slice_from_ds(ds, path, pid)
        except CohortError as exc:
            return None, {"patient_id": pid, "reason": str(exc), "file": path}
    if modality == "SEG":
        s, o = _walk_references(ds)
        ref_series, ref_sops = tuple(sorted(s)), frozenset(o)
    row = {
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
    return row, None


def scan_dicom(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the header of every DICOM file under ``root`` (any layout).

    Returns ``(files, problems)``: ``files`` one row per readable DICOM file with columns
    path, patient_id, modality, study_uid, series_uid, sop_uid, frame_of_reference_uid,
    series_description, manufacturer, series_date, ref_series (tuple), ref_sops (frozenset; SEG
    only), geometry (:class:`SliceInfo`; CT only); ``problems`` rows patient_id ('' when
    unknown), reason, file for corrupt or truncated DICOM files. Files that are not DICOM at
    all are skipped quietly, except ``*.dcm`` files.
    """
    rows: list[dict] = []
    problems: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(Path(root)):
        dirnames.sort()
        for name in sorted(filenames):
            row, problem = _header_row(Path(dirpath) / name)
            if row is not None:
                rows.append(row)
            if problem is not None:
                problems.append(problem)
    files = pd.DataFrame(rows, columns=_HEADER_COLUMNS)
    return files, pd.DataFrame(problems, columns=["patient_id", "reason", "file"])


def is_ai_segmentation(description: str, manufacturer: str = "") -> bool:
    """True for SEG series made by an algorithm (e.g. IDC's 'AIMI lung and nodule AI ...')."""
    return bool(_AI_SEG_RE.search(description or "") or _AI_SEG_RE.search(manufacturer or ""))


@dataclass
class SegMatch:
    seg: pd.Series
    ct_series_uid: str | None
    missing: tuple[str, ...]
    how: str


def match_seg(seg: pd.Series, ct: pd.DataFrame) -> SegMatch:
    """Find the CT series (among ``ct``, one patient's CT files) that a SEG instance references."""
    present = set(ct["series_uid"])
    named = [s for s in seg["ref_series"] if s in present]
    if named:
        # several referenced series present: take the one most of its referenced SOPs lie in
        counts = {
            s: int(ct.loc[ct.series_uid == s, "sop_uid"].isin(seg["ref_sops"]).sum()) for s in named
        }
        best = max(sorted(named), key=lambda s: counts[s])
        return SegMatch(seg, best, (), "ReferencedSeriesSequence")
    if seg["ref_sops"]:
        hit = ct[ct["sop_uid"].isin(seg["ref_sops"])]
        if len(hit):
            best = hit["series_uid"].value_counts().sort_index().idxmax()
            return SegMatch(seg, str(best), (), "referenced SOP instances")
    if seg["ref_series"] or seg["ref_sops"]:
        missing = seg["ref_series"] or tuple(sorted(seg["ref_sops"]))[:3]
        return SegMatch(seg, None, tuple(missing), "")
    same_for = ct[ct["frame_of_reference_uid"] == seg["frame_of_reference_uid"]]
    if seg["frame_of_reference_uid"] and len(same_for):
        best = same_for["series_uid"].value_counts().sort_index().idxmax()
        return SegMatch(seg, str(best), (), "FrameOfReferenceUID (no explicit reference)")
    return SegMatch(seg, None, ("<no reference and no CT with its FrameOfReferenceUID>",), "")


# --------------------------------------------------------------------------------------------
# CT geometry and loading


@dataclass
class SliceInfo:
    path: Path
    sop_uid: str
    series_uid: str
    position: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,)
    rows: int
    columns: int
    spacing: tuple[float, float]
    thickness: float


def folder_of(files: Sequence[Path]) -> Path:
    parents = {str(Path(f).parent) for f in files}
    return Path(os.path.commonpath(sorted(parents))) if parents else Path(".")


def _slice_from_ds(ds: pydicom.Dataset, path: Path, patient_id: str) -> SliceInfo:
    try:
        return SliceInfo(
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


def _read_slices(files: Sequence[Path], patient_id: str) -> list[SliceInfo]:
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
            f"patient {patient_id}: CT files in {folder_of(list(files))} belong to "
            f"{len(series)} series ({', '.join(series)}), expected one"
        )
    return out


def sorted_geometry(
    slices: list[SliceInfo], patient_id: str, regular: bool = True
) -> tuple[list[SliceInfo], np.ndarray, float]:
    """Sort slices along the normal and check one regular grid (spacing only if ``regular``).

    Returns (sorted slices, positions along the normal (Z,), slice spacing in mm).
    """
    if not slices:
        raise CohortError(f"patient {patient_id}: the CT series has no files")
    folder = folder_of([s.path for s in slices])
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
    slices, _, spacing = sorted_geometry(
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
            f"patient {patient_id}: cannot read CT series in {folder_of(names)}: {exc}"
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    img = sitk.Cast(img, sitk.sitkFloat32)
    if img.GetSize()[2] != len(names):
        raise CohortError(
            f"patient {patient_id}: CT series in {folder_of([s.path for s in slices])} read "
            f"{img.GetSize()[2]} slices from {len(names)} files"
        )
    sx, sy, _ = img.GetSpacing()
    img.SetSpacing((sx, sy, spacing))
    return img


# --------------------------------------------------------------------------------------------
# SEG decoding


def _ct_positions_on(
    geometry: hd.VolumeGeometry | hd.Volume, slices: list[SliceInfo]
) -> np.ndarray:
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


def _frames_by_position(volume: hd.Volume, slices: list[SliceInfo]) -> np.ndarray | None:
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


def _read_seg(seg_file: Path, patient_id: str) -> tuple[pydicom.Dataset, int, int]:
    """A SEG file's dataset with its frame size ``(rows, columns)``, its pixel bytes checked
    against NumberOfFrames x Rows x Columns when uncompressed."""
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
    return ds, rows, cols


def _wanted_segments(
    numbers: list[int], segments: int | Sequence[int] | None, seg_file: Path, patient_id: str
) -> list[int]:
    """The segment numbers asked for (all by default), each checked to exist."""
    if segments is None:
        return sorted(set(numbers))
    wanted = [int(segments)] if isinstance(segments, (int, np.integer)) else list(segments)
    unknown = sorted(set(wanted) - set(numbers))
    if unknown:
        raise CohortError(
            f"patient {patient_id}: SEG {seg_file} has segments {numbers}, not {unknown}"
        )
    return sorted(set(wanted))


def _seg_pixels(
    seg: hd.seg.Segmentation,
    geometry: hd.VolumeGeometry | None,
    slices: list[SliceInfo],
    wanted: list[int],
    seg_file: Path,
    patient_id: str,
) -> np.ndarray:
    """The SEG's frames on the CT slices ``(Z, Y, X, S)``: by referenced source instance, or
    by position (on the SEG's volume ``geometry``) when the frames name none."""
    # Overlapping segments are allowed (their union is taken); FRACTIONAL values come in [0, 1].
    options = {"segment_numbers": wanted, "skip_overlap_checks": True}
    try:
        try:
            # SpatialLocationsPreserved is optional and often absent: the grid is checked later
            return seg.get_pixels_by_source_instance(
                [s.sop_uid for s in slices],
                assert_missing_frames_are_empty=True,
                ignore_spatial_locations=True,
                **options,
            )
        except RuntimeError:  # the frames name no source instance: place them by position
            if geometry is None:
                raise
            pixels = _frames_by_position(seg.get_volume(**options), slices)
            if pixels is None:
                raise CohortError(
                    f"patient {patient_id}: SEG {seg_file} has tumour on a frame that matches no "
                    f"slice of the CT series in {folder_of([s.path for s in slices])}"
                ) from None
            return pixels
    except CohortError:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom reports undecodable frames variously
        raise CohortError(
            f"patient {patient_id}: cannot decode SEG pixels of {seg_file}: {exc}"
        ) from exc


def _check_in_plane(
    mask: np.ndarray,
    geometry: hd.VolumeGeometry | None,
    slices: list[SliceInfo],
    frame: tuple[int, int],
    seg_file: Path,
    patient_id: str,
) -> None:
    """Every CT slice with tumour must sit on the SEG's grid: its first pixel at frame pixel
    (0, 0) and its last at (rows - 1, cols - 1), whichever way it was placed."""
    if geometry is None or not mask.any():
        return
    corners = _ct_positions_on(geometry, slices)[:, :, 1:]
    expect = np.array([[0.0, 0.0], [frame[0] - 1.0, frame[1] - 1.0]])
    off = np.abs(corners - expect).max(axis=(1, 2))
    bad = np.flatnonzero(mask.any(axis=(1, 2)) & (off > 0.5))
    if len(bad):
        k = int(bad[0])
        raise CohortError(
            f"patient {patient_id}: SEG {seg_file} frames are shifted by {off[k]:.1f} "
            f"pixels from CT slice {slices[k].path.name}"
        )


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
    slices, _, _ = sorted_geometry(
        _read_slices([Path(f) for f in ct_files], patient_id), patient_id, regular=False
    )
    ds, rows, cols = _read_seg(seg_file, patient_id)
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
    wanted = _wanted_segments(list(seg.segment_numbers), segments, seg_file, patient_id)
    geometry = seg.get_volume_geometry()  # None when the frames form no regular stack
    pixels = _seg_pixels(seg, geometry, slices, wanted, seg_file, patient_id)
    frames = np.asarray(pixels) > (0.5 if seg.segmentation_type.value == "FRACTIONAL" else 0)
    mask = frames.any(axis=-1).astype(np.uint8)
    _check_in_plane(mask, geometry, slices, (rows, cols), seg_file, patient_id)
    return mask
