"""Synthetic nodules for other pipelines: a trained GAN paints a tumour from a gene vector into a
CT slice, written as NIfTI and as DICOM (a CT image and a DICOM SEG of its mask).

This is how synthetic nodules reach a segmentation or detection pipeline (Jin et al. trained a
segmenter on theirs). ``radiolib synthesize`` takes

- a run folder of ``radiolib train`` (its generator, the EMA one when it was kept);
- the genes: a patient id of the curated cohort the run was trained on, or a gene file
  (:func:`read_gene_file`: one row per gene, ``gene`` and ``value``, on the scale of the curated
  cohort's genes; every file this module writes holds one, ``genes.csv``);
- the background: the index of a curated background slice, or a CT series folder and a
  position (x, y, z in mm, patient coordinates LPS as DICOM viewers show them), around which an
  axial slice is cut exactly as curation cuts its backgrounds (isotropic resampling, a
  ``voi_mm`` square, the HU window, area resizing to the network's grid).

The network works on windowed images in [0, 1] (``to_net`` maps them to [-1, 1]); its output
is mapped back to HU by the curation's window, ``hu = lo + x (hi - lo)``, so values lie in the
window. The slice keeps the background's place: its geometry (position of pixel (0, 0), pixel
spacing ``voi_mm`` / ``image_size`` after the isotropic grid's rounding, identity orientation:
rows along +y, columns along +x) is that of the square it was cut from.

``DIR`` receives ``synthetic_ct.nii.gz`` (int16 HU), ``synthetic_mask.nii.gz`` (uint8),
``background_ct.nii.gz`` (the slice before painting), ``dicom/CT/*.dcm`` (one CT image, stored
``HU + 1024`` with RescaleIntercept -1024), ``dicom/SEG/*.dcm`` (a BINARY SEG, written with
highdicom, referencing that CT image), ``genes.csv`` and ``synthesis.json`` (what was used).
Everything is checked before anything is written, and ``DIR`` appears complete or not at all.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from radiolib.errors import SynthesisError
from radiolib.io import atomic_folder, make_temp_dir
from radiolib.synthesis_files import FILES, write_synthesis

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort
    from radiolib.models import GAN

# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SliceGeometry:
    """Where an axial slice of ``size`` x ``size`` pixels lies (patient coordinates, LPS, mm).

    ``origin`` is the centre of pixel (row 0, column 0); rows run along +y, columns along +x
    (identity direction, the grid curation resamples to); ``pixel_mm`` is the spacing of rows
    and columns, ``thickness_mm`` the isotropic voxel the slice was cut from.
    """

    origin: tuple[float, float, float]
    pixel_mm: float
    thickness_mm: float
    size: int


def patch_geometry(
    centre_mm: tuple[float, float, float], spacing_mm: float, voi_mm: float, image_size: int
) -> SliceGeometry:
    """Geometry of the slice that curation cuts around ``centre_mm`` (x, y, z).

    Curation crops ``n = round(voi_mm / spacing_mm)`` voxels with voxel ``n // 2`` at the centre
    (:func:`radiolib.data.geometry.crop_voi`) and area-resizes them to ``image_size`` pixels: the
    square's outer edge stays, each pixel spans ``n * spacing_mm / image_size``.
    """
    n = int(round(voi_mm / spacing_mm))
    pixel = n * spacing_mm / image_size
    x, y, z = (float(v) for v in centre_mm)
    edge = -(n // 2) * spacing_mm - spacing_mm / 2  # from the centre voxel to the outer edge
    return SliceGeometry(
        origin=(x + edge + pixel / 2, y + edge + pixel / 2, z),
        pixel_mm=pixel,
        thickness_mm=float(spacing_mm),
        size=int(image_size),
    )


# --------------------------------------------------------------------------- inputs


@dataclass
class Run:
    """A trained GAN with the curated cohort it learnt from."""

    path: Path
    gan: GAN  # in eval mode
    cohort: CuratedCohort
    curation: dict[str, Any]  # the cohort's curation parameters (spacing, VOI, window)


def load_run(
    checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, device: str = "cpu"
) -> Run:
    """The generator of the run folder ``checkpoint`` and its curated cohort (``data``, or the
    folder the run recorded). Raises :class:`SynthesisError` (or the loaders' own errors) when
    the run is missing, is the inpainting GAN (it paints no genes), or does not match the
    cohort's genes or image size."""
    from radiolib.data.curated import load_curated
    from radiolib.models.inpainting import InpaintingGAN
    from radiolib.runs import load_checkpoint, load_generator

    run = Path(checkpoint)
    if not run.is_dir():
        raise SynthesisError(f"--checkpoint {run}: no such run folder")
    ckpt = load_checkpoint(run)
    info, recorded = ckpt.get("gan", {}), ckpt.get("data", {}) or {}
    cohort_dir = Path(data) if data is not None else Path(recorded.get("cohort") or "")
    if data is None and not (cohort_dir / "manifest.json").is_file():
        where = recorded.get("cohort") or "not recorded"
        raise SynthesisError(
            f"--checkpoint {run}: the curated cohort it was trained on ({where}) is not "
            "there; pass its folder with --data"
        )
    cohort = load_curated(cohort_dir)
    names = recorded.get("gene_names") or []
    if names and list(names) != list(cohort.gene_names):
        raise SynthesisError(
            f"--data {cohort_dir}: its {cohort.n_genes} genes are not the {len(names)} genes "
            f"run {run} was trained on"
        )
    if cohort.n_genes != int(info.get("n_genes", -1)):
        raise SynthesisError(
            f"--data {cohort_dir}: {cohort.n_genes} genes, run {run} takes {info.get('n_genes')}"
        )
    if cohort.image_size != int(info.get("image_size", -1)):
        raise SynthesisError(
            f"--data {cohort_dir}: {cohort.image_size} px slices, run {run} paints "
            f"{info.get('image_size')} px"
        )
    params = cohort.manifest.get("parameters") or {}
    missing = [k for k in ("spacing_mm", "voi_mm", "hu_window") if k not in params]
    if missing:
        raise SynthesisError(
            f"--data {cohort_dir}: manifest.json records no curation parameters {missing}"
        )
    try:
        gan = load_generator(run, device)
    except RuntimeError as exc:  # torch: the weights do not fit the network built here
        first = str(exc).strip().splitlines()[0]
        raise SynthesisError(
            f"--checkpoint {run}: its weights do not fit the {info.get('name')} GAN of this "
            f"radiolib version (made by other code?): {first}"
        ) from None
    if isinstance(gan, InpaintingGAN):
        raise SynthesisError(
            f"--checkpoint {run}: the {gan.name} GAN fills a hole and takes no genes; use a "
            "run of the proposed or baseline GAN"
        )
    return Run(path=run, gan=gan, cohort=cohort, curation=params)


def read_gene_file(path: str | os.PathLike, gene_names: list[str]) -> np.ndarray:
    """A gene vector ``(G,)`` float32 in the order of ``gene_names`` from a CSV (a TSV when named
    ``.tsv`` or ``.txt``) with columns ``gene`` and ``value`` (values on the curated cohort's
    scale: log2(x + 1), z-scored by the training patients). Every gene of the model must appear
    once, with a finite value, and no other gene; otherwise :class:`SynthesisError` names the
    genes."""
    path = Path(path)
    try:
        sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        table = pd.read_csv(path, sep=sep, dtype={"gene": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SynthesisError(f"gene file {path}: unreadable ({exc})") from None
    if list(table.columns[:2]) != ["gene", "value"] or table.shape[1] != 2:
        raise SynthesisError(
            f"gene file {path}: expected two columns 'gene' and 'value', got {list(table.columns)}"
        )
    dup = sorted(set(table.gene[table.gene.duplicated()]))
    if dup:
        raise SynthesisError(f"gene file {path}: genes listed twice: {_show(dup)}")
    known, given = set(gene_names), set(table.gene)
    missing = [g for g in gene_names if g not in given]
    extra = [g for g in table.gene if g not in known]
    if missing or extra:
        raise SynthesisError(
            f"gene file {path}: not the model's {len(gene_names)} genes; missing "
            f"{_show(missing)}; unknown {_show(extra)}"
        )
    values = pd.to_numeric(table.set_index("gene")["value"], errors="coerce")
    bad = [g for g in gene_names if not np.isfinite(values[g])]
    if bad:
        raise SynthesisError(f"gene file {path}: no finite value for genes {_show(bad)}")
    return values[gene_names].to_numpy(np.float32)


def _show(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def gene_vector(spec: str, cohort: CuratedCohort) -> tuple[np.ndarray, str]:
    """``spec``: a patient id of ``cohort`` or a gene file. Returns ``(genes (G,), source)``."""
    if spec in cohort.patients:
        return cohort.genes[cohort.patients.index(spec)].astype(np.float32), f"patient {spec}"
    if Path(spec).is_file():
        return read_gene_file(spec, cohort.gene_names), f"file {Path(spec).resolve()}"
    raise SynthesisError(
        f"--genes {spec!r}: neither a patient of the curated cohort at {cohort.path} "
        f"({_show(cohort.patients)}) nor a gene file"
    )


@dataclass
class Background:
    """The slice a tumour is painted into."""

    image: np.ndarray  # (S, S) float32 in [0, 1] (the curation's HU window)
    geometry: SliceGeometry
    patient_id: str
    source: dict[str, Any]
    header: dict[str, Any] = field(default_factory=dict)  # patient/study of a source CT series


def curated_background(cohort: CuratedCohort, index: int, curation: dict[str, Any]) -> Background:
    """Background slice ``index`` of the curated cohort, with the geometry it was cut with."""
    n = len(cohort.background_images)
    if not 0 <= index < n:
        raise SynthesisError(
            f"--background {index}: the curated cohort at {cohort.path} has background slices "
            f"0 to {n - 1}"
        )
    table = cohort.slices
    rows = table[(table["kind"] == "background") & (table["index"] == index)]
    cols = ("centre_x_mm", "centre_y_mm", "z_mm")
    if len(rows) != 1 or any(c not in rows or not np.isfinite(rows[c].iloc[0]) for c in cols):
        raise SynthesisError(
            f"--background {index}: {cohort.path / 'slices.csv'} records no position for it"
        )
    row = rows.iloc[0]
    geometry = patch_geometry(
        tuple(float(row[c]) for c in cols),
        float(curation["spacing_mm"]),
        float(curation["voi_mm"]),
        cohort.image_size,
    )
    patient = cohort.patients[int(cohort.background_patient[index])]
    return Background(
        image=cohort.background_images[index].astype(np.float32),
        geometry=geometry,
        patient_id=patient,
        source={"kind": "curated", "cohort": str(cohort.path), "index": int(index)},
    )


def _ct_files(folder: Path) -> list[Path]:
    from radiolib.data.dicom import scan_dicom

    if not folder.is_dir():
        raise SynthesisError(f"--background {folder}: no such CT series folder")
    files, problems = scan_dicom(folder)
    ct = files[files.modality == "CT"]
    if ct.empty:
        why = f" ({problems.reason.iloc[0]}: {problems.file.iloc[0]})" if len(problems) else ""
        raise SynthesisError(f"--background {folder}: no CT series in this folder{why}")
    series = sorted(set(ct.series_uid))
    if len(series) > 1:
        raise SynthesisError(
            f"--background {folder}: {len(series)} CT series ({_show(series)}); give the folder "
            "of one"
        )
    return [Path(p) for p in ct.path]


def ct_background(
    folder: str | os.PathLike,
    position_mm: tuple[float, float, float],
    curation: dict[str, Any],
    image_size: int,
) -> Background:
    """The axial slice of the CT series in ``folder`` centred on ``position_mm`` (x, y, z),
    cut as curation cuts backgrounds: isotropic resampling, a ``voi_mm`` square with voxel
    ``n // 2`` at the position (air beyond the scan), HU window, area resize."""
    import pydicom

    from radiolib.data.dicom import load_ct
    from radiolib.data.geometry import AIR_HU, crop_voi, resample_isotropic, resize_stack, window

    folder = Path(folder)
    files = _ct_files(folder)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    patient = str(first.get("PatientID", "") or "")
    ct = load_ct(files, patient or "?")
    spacing = float(curation["spacing_mm"])
    iso = resample_isotropic(ct, spacing)
    index = np.rint(iso.TransformPhysicalPointToContinuousIndex(position_mm)).astype(int)
    if np.any(index < 0) or np.any(index >= np.array(iso.GetSize())):
        lo = np.array(iso.GetOrigin()) - spacing / 2
        hi = lo + np.array(iso.GetSize()) * spacing
        extent = ", ".join(f"{a} {u:.1f} to {v:.1f}" for a, u, v in zip("xyz", lo, hi, strict=True))
        raise SynthesisError(
            f"--position {', '.join(f'{v:g}' for v in position_mm)} mm lies outside the CT "
            f"series in {folder} ({extent} mm)"
        )
    n = int(round(float(curation["voi_mm"]) / spacing))
    hu = sitk.GetArrayViewFromImage(iso)  # (z, y, x)
    square = crop_voi(np.asarray(hu[index[2]]), (index[1], index[0]), n, AIR_HU)
    image = resize_stack(window(square[None], curation["hu_window"]), image_size)[0]
    centre = iso.TransformIndexToPhysicalPoint([int(i) for i in index])
    header = {
        k: str(first.get(k, "") or "")
        for k in (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "StudyID",
            "AccessionNumber",
            "ReferringPhysicianName",
            "FrameOfReferenceUID",
        )
    }
    return Background(
        image=image,
        geometry=patch_geometry(centre, spacing, float(curation["voi_mm"]), image_size),
        patient_id=patient,
        source={
            "kind": "ct_series",
            "folder": str(folder.resolve()),
            "series_uid": str(first.SeriesInstanceUID),
            "position_mm": [float(v) for v in position_mm],
            "voxel_centre_mm": [float(v) for v in centre],
        },
        header=header,
    )


# --------------------------------------------------------------------------- synthesis


@torch.no_grad()
def paint(
    gan: GAN, background: np.ndarray, genes: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The GAN's synthesis on one background ``(S, S)`` in [0, 1] with ``genes`` ``(G,)`` and
    noise N(0, 1) drawn from ``seed``: image ``(S, S)`` float32 in [0, 1] and mask ``(S, S)``
    uint8 (predicted mask ``>= 0.5``)."""
    from radiolib.data.dataset import from_net, to_net
    from radiolib.models import eval_mode

    device = next(gan.parameters()).device
    noise = torch.randn(1, gan.noise_dim, generator=torch.Generator().manual_seed(int(seed)))
    bg = to_net(torch.from_numpy(np.asarray(background, np.float32))[None, None])
    with eval_mode(gan):  # running statistics, every gene
        fake = gan.synthesize(
            bg.to(device),
            torch.from_numpy(np.asarray(genes, np.float32))[None].to(device),
            noise.to(device),
        )
    image = from_net(fake.image).clamp(0, 1).float().cpu().numpy()[0, 0]
    mask = (fake.mask.float().cpu().numpy()[0, 0] >= 0.5).astype(np.uint8)
    return image.astype(np.float32), mask


def to_hu(image: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """[0, 1] -> HU by the curation's window (``lo + x (hi - lo)``), rounded to int16."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    return np.rint(lo + np.asarray(image, np.float64) * (hi - lo)).astype(np.int16)


@dataclass
class SynthesisResult:
    """What :func:`synthesize` wrote."""

    out: Path
    hu: np.ndarray  # (S, S) int16: the synthetic slice
    mask: np.ndarray  # (S, S) uint8
    background_hu: np.ndarray  # (S, S) int16: the slice before painting
    geometry: SliceGeometry
    files: dict[str, Path]


def _check_out(out: Path) -> None:
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / FILES["record"]).is_file())
    ):
        raise SynthesisError(
            f"--out {out} exists and holds no earlier synthesis ({FILES['record']}); "
            "refusing to replace it"
        )


def synthesize(
    checkpoint: str | os.PathLike,
    genes: str,
    background: int | str | os.PathLike,
    out: str | os.PathLike,
    position_mm: tuple[float, float, float] | None = None,
    data: str | os.PathLike | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> SynthesisResult:
    """Paint a tumour with ``genes`` into ``background`` with the run ``checkpoint``; write
    ``out`` (see the module docstring). ``background`` is a curated background index, or a CT
    series folder when ``position_mm`` is given. An earlier synthesis in ``out`` is replaced
    whole; any other content of ``out`` is refused."""
    out = Path(out)
    _check_out(out)
    run = load_run(checkpoint, data, device)
    vector, genes_source = gene_vector(str(genes), run.cohort)
    window_hu = tuple(float(v) for v in run.curation["hu_window"])
    if position_mm is None:
        try:
            index = int(str(background))
        except ValueError:
            raise SynthesisError(
                f"--background {background}: not a curated background index; a CT series "
                "folder needs --position X,Y,Z"
            ) from None
        bg = curated_background(run.cohort, index, run.curation)
    else:
        bg = ct_background(Path(background), position_mm, run.curation, run.cohort.image_size)
    image, mask = paint(run.gan, bg.image, vector, seed)
    hu, background_hu = to_hu(image, window_hu), to_hu(bg.image, window_hu)
    record = {
        "checkpoint": str(run.path.resolve()),
        "model": run.gan.name,
        "cohort": str(run.cohort.path),
        "genes": genes_source,
        "background": bg.source,
        "patient_id": bg.patient_id,
        "seed": int(seed),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.")
    with atomic_folder(out, tmp):
        files = write_synthesis(
            tmp, hu, mask, background_hu, bg, vector, run.cohort.gene_names, window_hu, record
        )
    return SynthesisResult(
        out=out,
        hu=hu,
        mask=mask,
        background_hu=background_hu,
        geometry=bg.geometry,
        files={k: out / v for k, v in files.items()},
    )


def parse_position(text: str) -> tuple[float, float, float]:
    """``"x,y,z"`` (mm) -> a tuple of three floats; :class:`SynthesisError` otherwise."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise SynthesisError(f"--position {text!r}: expected three numbers x,y,z in mm")
    return values  # type: ignore[return-value]


__all__ = [
    "SliceGeometry",
    "SynthesisError",
    "SynthesisResult",
    "ct_background",
    "curated_background",
    "load_run",
    "paint",
    "parse_position",
    "patch_geometry",
    "read_gene_file",
    "synthesize",
]
