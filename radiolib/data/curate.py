"""Curation of the cohort into 2D training slices, as in the paper's section 3.

For every patient with a CT, a tumour segmentation and an expression profile:

1. the CT (linear) and the tumour mask (linear, then ``>= 0.5``) are resampled to an isotropic
   grid of ``spacing_mm`` with identity direction (LPS axes, array order ``(z, y, x)``);
2. a cube volume of interest (VOI) of edge ``voi_mm`` is cropped around the centre of mass of the
   largest connected tumour component, padded with air (-1000 HU, mask 0) beyond the scan;
3. every axial slice of that VOI showing tumour becomes a training slice: HU window
   ``hu_window`` mapped to [0, 1] and clipped, resized to ``image_size`` x ``image_size`` by area
   averaging (masks: area average ``>= 0.5``);
4. backgrounds: the lungs are segmented, the tumour (dilated by ``TUMOUR_MARGIN_MM``) is removed
   from the lung mask, a Euclidean distance transform (mm) is taken inside it, and
   ``background_vois`` centres are drawn among voxels ``background_min_mm`` to
   ``background_max_mm`` from the mask boundary; ``background_slices`` random axial slices of the
   ``voi_mm`` VOI around each centre become background slices (same window and resize);
5. the patients are split into train and test (patient level, seeded, stable);
6. expression: genes with any missing value are dropped, ``log2(x + 1)``, then a per-gene z-score
   whose mean and standard deviation come from the training patients.

Steps 1-3 use :mod:`radiolib.data.geometry`, step 4 :mod:`radiolib.data.lungs`, step 6
:mod:`radiolib.data.expression`. The result is a folder (:mod:`radiolib.data.curated`) written
atomically and reused by a re-run with the same inputs and parameters. Patients are curated in
parallel processes, each kept as it finishes (:mod:`radiolib.data.patient_store`) for re-runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiolib.config import CurationConfig, check_curation
from radiolib.data import nsclc
from radiolib.data.curated import (
    CuratedCohort,
    assemble,
    build_manifest,
    code_hash,
    input_hashes,
    load_curated,
    patients_table,
    prepare_out,
    reusable,
    write_curated,
)
from radiolib.data.expression import preprocess_expression
from radiolib.data.geometry import (
    AIR_HU,
    crop_voi,
    resample_isotropic,
    tumour_centre,
    tumour_slices,
    voi_bounds,
    voi_outside_fraction,
    window,
)
from radiolib.data.lungs import (
    background_slices,
    lung_boundary_distance,
    sample_background_centres,
    segment_lungs,
)
from radiolib.data.patient_store import PatientStore
from radiolib.data.tables import EXPRESSION_NAMES, find_inputs
from radiolib.errors import CohortError
from radiolib.io import check_folder_path
from radiolib.progress import progress_bar

MAX_OUTSIDE_FRACTION = 0.5  # a VOI more than half outside the scan is kept with a warning


# --------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------


@dataclass
class PatientCuration:
    """What one patient contributes: tumour slices, background slices and notes."""

    patient_id: str
    tumour_images: np.ndarray  # (n, S, S) float32 [0, 1]
    tumour_masks: np.ndarray  # (n, S, S) uint8
    tumour_z_mm: np.ndarray  # (n,) physical z (LPS) of each slice
    tumour_voi_slice: np.ndarray  # (n,) slice index within the VOI
    tumour_centre_mm: np.ndarray  # (3,) x, y, z (LPS) of the VOI centre
    background_images: np.ndarray  # (m, S, S) float32 [0, 1]
    background_info: pd.DataFrame  # (m rows) voi, slice, z_mm, centre_*_mm, distance_mm, tumour_px
    info: dict[str, str | float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    background_skip: str = ""


def _patient_rng(seed: int, patient_id: str) -> np.random.Generator:
    # a patient's draws depend on the seed and its id only, not on who else is curated
    word = int.from_bytes(hashlib.sha256(str(patient_id).encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), word])


def _check_grids(ct: sitk.Image, mask: sitk.Image, patient_id: str) -> None:
    if ct.GetDimension() != 3:
        raise CohortError(f"patient {patient_id}: expected a 3D CT, got {ct.GetDimension()}D")
    same = (
        ct.GetSize() == mask.GetSize()
        and np.allclose(ct.GetSpacing(), mask.GetSpacing(), atol=1e-4)
        and np.allclose(ct.GetOrigin(), mask.GetOrigin(), atol=1e-3)
        and np.allclose(ct.GetDirection(), mask.GetDirection(), atol=1e-4)
    )
    if not same:
        raise CohortError(
            f"patient {patient_id}: tumour mask grid (size {mask.GetSize()}, spacing "
            f"{mask.GetSpacing()}) differs from the CT grid (size {ct.GetSize()}, spacing "
            f"{ct.GetSpacing()}); expected the same grid"
        )


@dataclass
class _Grid:
    """One patient's scan on the isotropic grid, where its VOIs are cut."""

    hu: np.ndarray  # (Z, Y, X) CT in HU
    tumour: np.ndarray  # (Z, Y, X) bool
    origin: np.ndarray  # (3,) x, y, z (LPS) of voxel (0, 0, 0)
    spacing: float  # mm
    voi: int  # VOI edge in voxels

    def mm(self, index: np.ndarray) -> np.ndarray:
        """Physical x, y, z (LPS) of a voxel index ``(z, y, x)``."""
        return self.origin + np.asarray(index)[::-1] * self.spacing


def _on_grid(ct: sitk.Image, mask: sitk.Image, cfg: CurationConfig) -> _Grid:
    """Step 1: the CT and the tumour mask resampled to the isotropic grid of ``cfg``."""
    ct_iso = resample_isotropic(ct, cfg.spacing_mm)
    tumour = sitk.GetArrayFromImage(resample_isotropic(mask, cfg.spacing_mm, is_mask=True))
    return _Grid(
        hu=sitk.GetArrayFromImage(ct_iso),
        tumour=tumour.astype(bool),
        origin=np.array(ct_iso.GetOrigin()),
        spacing=float(cfg.spacing_mm),
        voi=int(round(cfg.voi_mm / cfg.spacing_mm)),
    )


def _touches_edge(mask: sitk.Image) -> bool:
    """Whether the tumour mask reaches a face of its (native) grid."""
    native = sitk.GetArrayViewFromImage(mask) > 0
    return bool(
        native[0].any()
        or native[-1].any()
        or native[:, 0].any()
        or native[:, -1].any()
        or native[:, :, 0].any()
        or native[:, :, -1].any()
    )


@dataclass
class _TumourSlices:
    images: np.ndarray  # (n, S, S)
    masks: np.ndarray  # (n, S, S)
    voi_slice: np.ndarray  # (n,)
    z_mm: np.ndarray  # (n,)
    centre_mm: np.ndarray  # (3,)
    outside: float  # share of the VOI outside the scan


def _tumour_part(
    g: _Grid, cfg: CurationConfig, touches_edge: bool, notes: list[str]
) -> _TumourSlices:
    """Steps 2-3: the tumour VOI and its slices; what is unusual goes to ``notes``."""
    centre = tumour_centre(g.tumour)
    outside = voi_outside_fraction(g.hu.shape, centre, g.voi)
    if outside > MAX_OUTSIDE_FRACTION:
        notes.append(f"tumour VOI {outside:.0%} outside the scan (padded with air)")
    if touches_edge:
        notes.append("tumour touches the edge of the scan")
    ct_voi = crop_voi(g.hu, centre, g.voi, AIR_HU)
    mask_voi = crop_voi(g.tumour, centre, g.voi, False)
    cut = int(g.tumour.sum() - mask_voi.sum())
    if cut:
        notes.append(
            f"tumour extends beyond the {cfg.voi_mm:g} mm VOI ({cut} voxels, "
            f"{cut / g.tumour.sum():.1%} of it, cut)"
        )
    images, masks, idx = tumour_slices(ct_voi, mask_voi, cfg.image_size, cfg.hu_window)
    start, _ = voi_bounds(centre, g.voi)
    return _TumourSlices(
        images=images,
        masks=masks,
        voi_slice=idx,
        z_mm=g.origin[2] + (start[0] + idx) * g.spacing,
        centre_mm=g.mm(centre),
        outside=outside,
    )


def _background_voi(
    g: _Grid,
    centre: np.ndarray,
    distance: float,
    v: int,
    cfg: CurationConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict[str, float | int]]]:
    """The background slices of the VOI ``v`` around ``centre`` and their rows."""
    b_start, _ = voi_bounds(centre, g.voi)
    z = b_start[0] + np.arange(g.voi)
    images, sl, px = background_slices(
        crop_voi(g.hu, centre, g.voi, AIR_HU),
        crop_voi(g.tumour, centre, g.voi, False),
        cfg.background_slices,
        cfg.image_size,
        cfg.hu_window,
        rng,
        inside=(z >= 0) & (z < g.hu.shape[0]),
    )
    c_mm = g.mm(centre)
    rows = [
        {
            "voi": v,
            "slice": int(s),
            "z_mm": float(g.origin[2] + (b_start[0] + s) * g.spacing),
            "centre_x_mm": c_mm[0],
            "centre_y_mm": c_mm[1],
            "centre_z_mm": c_mm[2],
            "distance_mm": float(distance),
            "tumour_px": int(p),
        }
        for s, p in zip(sl, px, strict=True)
    ]
    return images, rows


def _background_part(
    g: _Grid, cfg: CurationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, float | int]], str]:
    """Step 4: background slices, their rows, and why there are none (or "")."""
    images = np.zeros((0, cfg.image_size, cfg.image_size), np.float32)
    if cfg.background_vois <= 0 or cfg.background_slices <= 0:
        return images, [], ""
    lungs = segment_lungs(g.hu, g.spacing)
    centres, dists = sample_background_centres(
        lungs,
        g.tumour,
        g.spacing,
        cfg.background_vois,
        cfg.background_min_mm,
        cfg.background_max_mm,
        rng,
    )
    skip = ""
    if not lungs.any():
        skip = "no lung found (no air component inside the body)"
    elif len(centres) == 0:
        skip = (
            f"no lung voxel {cfg.background_min_mm:g}-{cfg.background_max_mm:g} mm from the "
            "lung boundary and the tumour"
        )
    stacks, rows = [], []
    for v, (c, d) in enumerate(zip(centres, dists, strict=True)):
        imgs, voi_rows = _background_voi(g, c, d, v, cfg, rng)
        stacks.append(imgs)
        rows += voi_rows
    if stacks:
        images = np.concatenate(stacks).astype(np.float32)
    return images, rows, skip


def curate_scan(
    ct: sitk.Image, mask: sitk.Image, cfg: CurationConfig, seed: int, patient_id: str = "?"
) -> PatientCuration:
    """Tumour and background slices of one patient (steps 1-4 of the module docstring).

    ``ct`` float HU and ``mask`` {0, 1} on the same 3D grid. Raises :class:`CohortError` for an
    empty mask, a grid mismatch or non-finite CT values; a patient without lung voxels at the
    wanted distance keeps its tumour slices and gets ``background_skip`` set.
    """
    _check_grids(ct, mask, patient_id)
    g = _on_grid(ct, mask, cfg)
    if not np.isfinite(g.hu).all():
        raise CohortError(f"patient {patient_id}: CT holds non-finite values")
    if not g.tumour.any():
        raise CohortError(f"patient {patient_id}: empty tumour mask (after resampling)")
    notes: list[str] = []
    tumour = _tumour_part(g, cfg, _touches_edge(mask), notes)
    bg_images, rows, skip = _background_part(g, cfg, _patient_rng(seed, patient_id))
    zs = np.flatnonzero(g.tumour.any(axis=(1, 2)))
    info = {
        "ct_size": "x".join(str(s) for s in ct.GetSize()),
        "ct_spacing_mm": "x".join(f"{s:.4g}" for s in ct.GetSpacing()),
        "tumour_volume_ml": float(g.tumour.sum() * g.spacing**3 / 1000.0),
        "tumour_extent_z_mm": float((zs.max() - zs.min() + 1) * g.spacing),
        "voi_outside_fraction": tumour.outside,
    }
    return PatientCuration(
        patient_id=patient_id,
        tumour_images=tumour.images,
        tumour_masks=tumour.masks,
        tumour_z_mm=tumour.z_mm,
        tumour_voi_slice=tumour.voi_slice,
        tumour_centre_mm=tumour.centre_mm,
        background_images=bg_images,
        background_info=pd.DataFrame(rows),
        info=info,
        warnings=notes,
        background_skip=skip,
    )


# --------------------------------------------------------------------------------------------
# Views of one patient and the split
# --------------------------------------------------------------------------------------------


@dataclass
class BackgroundSampling:
    """One axial slice through a background centre, to show how backgrounds are chosen."""

    patient_id: str
    ct: np.ndarray  # (Y, X) windowed to [0, 1]
    lungs: np.ndarray  # (Y, X) bool lung mask, tumour excluded
    band: np.ndarray  # (Y, X) bool: lung voxels min_mm..max_mm from the boundary
    tumour: np.ndarray  # (Y, X) bool
    centres: np.ndarray  # (k, 2) (y, x) of the centres drawn in this slice
    spacing_mm: float


def explain_background_sampling(
    ct: sitk.Image, mask: sitk.Image, cfg: CurationConfig, seed: int, patient_id: str = "?"
) -> BackgroundSampling:
    """The lung mask, the distance band and the drawn centres on the axial slice of the first
    centre, computed exactly as :func:`curate_scan` computes them for this patient."""
    g = _on_grid(ct, mask, cfg)
    hu, tum, sp = g.hu, g.tumour, g.spacing
    lungs = segment_lungs(hu, sp)
    dist, region = lung_boundary_distance(lungs, tum, sp)
    centres, _ = sample_background_centres(
        lungs,
        tum,
        sp,
        max(cfg.background_vois, 1),
        cfg.background_min_mm,
        cfg.background_max_mm,
        _patient_rng(seed, patient_id),
    )
    if len(centres) == 0:
        raise CohortError(f"patient {patient_id}: no background centre could be drawn")
    z = int(centres[0][0])
    band = region[z] & (dist[z] >= cfg.background_min_mm) & (dist[z] <= cfg.background_max_mm)
    return BackgroundSampling(
        patient_id=patient_id,
        ct=window(hu[z], cfg.hu_window),
        lungs=region[z],
        band=band,
        tumour=tum[z],
        centres=centres[centres[:, 0] == z][:, 1:],
        spacing_mm=sp,
    )


def split_patients(patients: Sequence[str], test_fraction: float, seed: int) -> np.ndarray:
    """Patient-level split: ``(P,)`` array of ``'train'`` / ``'test'`` in the order given.

    Each patient is ranked by ``sha256(seed, patient id)``; the ``max(1, round(P *
    test_fraction))`` first are test. The split depends only on the set of ids and the seed (not
    their order), and adding a patient moves at most one other. Needs >= 1 test and >= 2 train
    patients.
    """
    ids = [str(p) for p in patients]
    if len(set(ids)) != len(ids):
        raise CohortError(f"duplicated patient ids in the split: {sorted(ids)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"curation.test_fraction must be in (0, 1) (got {test_fraction})")
    n_test = max(1, int(round(len(ids) * test_fraction)))
    if len(ids) - n_test < 2:
        raise CohortError(
            f"cannot split {len(ids)} patients with test_fraction={test_fraction}: need >= 1 "
            f"test and >= 2 train patients (would give {n_test} test, {len(ids) - n_test} train)"
        )
    key = {p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest() for p in ids}
    test = set(sorted(ids, key=lambda p: key[p])[:n_test])
    return np.array(["test" if p in test else "train" for p in ids])


# --------------------------------------------------------------------------------------------
# The cohort
# --------------------------------------------------------------------------------------------


def _patient_files(cohort: nsclc.Cohort, patient_id: str) -> list[Path]:
    """The CT and SEG files of a kept patient (none when the cohort does not say)."""
    try:
        row = cohort.series.loc[patient_id]
        return [*(Path(f) for f in row["ct_files"]), Path(row["seg_file"])]
    except (KeyError, AttributeError, TypeError):
        return []


def _patient_file(cohort: nsclc.Cohort, patient_id: str) -> str:
    try:
        row = cohort.series.loc[patient_id]
        files = row["ct_files"]
        return str(Path(files[0]).parent) if len(files) else str(row["seg_file"])
    except (KeyError, AttributeError, TypeError, IndexError):
        return str(cohort.root)


Outcome = PatientCuration | dict[str, str]  # a patient's slices, or why it was skipped


def _curate_one(cohort: nsclc.Cohort, cfg: CurationConfig, patient_id: str) -> Outcome:
    """One patient's scan loaded and curated; whatever fails, the patient is skipped."""
    try:
        scan = cohort.load_scan(patient_id)
        return curate_scan(scan.ct, scan.mask, cfg, cfg.seed, patient_id)
    except Exception as exc:  # noqa: BLE001 - one patient's bad file must not stop the rest
        return {
            "patient": patient_id,
            "file": _patient_file(cohort, patient_id),
            "reason": f"{type(exc).__name__}: {exc}",
        }


_IN_WORKER: dict[str, object] = {}  # the cohort and config of a worker process


def _start_worker(cohort: nsclc.Cohort, cfg: CurationConfig, threads: int) -> None:
    _IN_WORKER.update(cohort=cohort, cfg=cfg)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # the cores are shared out


def _curate_in_worker(patient_id: str) -> Outcome:
    return _curate_one(_IN_WORKER["cohort"], _IN_WORKER["cfg"], patient_id)


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _outcomes(
    cohort: nsclc.Cohort, cfg: CurationConfig, patients: list[str]
) -> Iterator[tuple[str, Outcome]]:
    """``(patient, outcome)`` of each of ``patients`` as it finishes: one at a time in this
    process with one worker, else in ``cfg.workers`` processes (0: one per core)."""
    workers = min(cfg.workers or _cores(), len(patients))
    if workers <= 1:
        for pid in patients:
            yield pid, _curate_one(cohort, cfg, pid)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a process with threads
        initializer=_start_worker,
        initargs=(cohort, cfg, max(1, _cores() // workers)),
    )
    try:
        futures = {pool.submit(_curate_in_worker, pid): pid for pid in patients}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool:
                raise CohortError(
                    f"a curation worker process died while curating patient {futures[future]}: "
                    "out of memory, or a script that curates outside an `if __name__ == "
                    "'__main__':` block (worker processes import the main script); the patients "
                    "finished so far are kept for the next run, which may use fewer workers "
                    "(--workers, curation.workers; 1 curates in this process)"
                ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _curate_patients(
    cohort: nsclc.Cohort,
    cfg: CurationConfig,
    expression_file: str,
    progress: bool,
    store: PatientStore,
) -> tuple[list[PatientCuration], list[dict[str, str]], list[str | None]]:
    """Every patient of ``cohort`` curated, in its order: ``(results, skipped, keys)``, keys
    of the results in ``store``. A patient without an expression sample, or whose files fail
    in any way, is skipped with the reason; a patient finished before is taken from ``store``,
    and every one finished now is put there as soon as it is."""
    done: dict[str, Outcome] = {}
    keys: dict[str, str | None] = {}
    for pid in cohort.patients:
        if pid not in cohort.expression.columns:
            done[pid] = {"patient": pid, "file": expression_file, "reason": "no expression sample"}
            continue
        keys[pid] = store.key(pid, _patient_files(cohort, pid))
        stored = store.get(keys[pid])
        if stored is not None:
            done[pid] = stored
    todo = [p for p in cohort.patients if p not in done]
    with progress_bar(len(cohort.patients), "curating", "patient", progress, len(done)) as bar:
        for pid, outcome in _outcomes(cohort, cfg, todo):
            if isinstance(outcome, PatientCuration):
                store.put(keys[pid], outcome)
            done[pid] = outcome
            bar.update()
    results = [done[p] for p in cohort.patients if isinstance(done[p], PatientCuration)]
    skipped = [done[p] for p in cohort.patients if not isinstance(done[p], PatientCuration)]
    return results, skipped, [keys[r.patient_id] for r in results]


def _split_and_genes(
    cohort: nsclc.Cohort,
    results: list[PatientCuration],
    skipped: list[dict[str, str]],
    cfg: CurationConfig,
    expression_file: str,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, object]]:
    """Steps 5-6: the split of the curated patients and their standardised genes
    ``(split, genes, gene_names, expression report)``."""
    patients = [r.patient_id for r in results]
    try:
        split = split_patients(patients, cfg.test_fraction, cfg.seed)
    except CohortError as exc:
        why = "; ".join(f"{s['patient']}: {s['reason']}" for s in skipped[:5])
        raise CohortError(f"{exc}. Skipped patients: {why or 'none'}") from None
    train_ids = [p for p, s in zip(patients, split, strict=True) if s == "train"]
    genes, _, gene_names, report = preprocess_expression(
        cohort.expression[patients], reference=train_ids, source=expression_file
    )
    return split, genes, gene_names, report


def _expression_file(cohort: nsclc.Cohort, root: Path) -> str:
    """The expression table's path as the manifest names it."""
    files = getattr(cohort, "files", None) or {}
    found = find_inputs(root, EXPRESSION_NAMES)
    return str(files.get("expression") or (found[0] if found else "expression"))


def curate_cohort(
    root: str | os.PathLike,
    out: str | os.PathLike,
    cfg: CurationConfig,
    progress: bool = True,
    replace: bool = False,
    open_cohort: Callable[[Path], nsclc.Cohort] = nsclc.open_cohort,
) -> CuratedCohort:
    """Curate the raw cohort at ``root`` into the folder ``out`` and return it.

    A previous result in ``out`` with the same parameters and input fingerprint
    (:func:`~radiolib.data.curated.input_hashes`) is returned as is. Otherwise every patient of
    ``open_cohort(root)`` (by default :func:`radiolib.data.nsclc.open_cohort`) is curated
    (:func:`curate_scan`, with the scan its ``load_scan`` reads); a patient whose scan cannot
    be loaded or has no usable tumour is skipped and listed in ``manifest['skipped']``
    (patient, file, reason), whatever went wrong with its files. The new folder is built next
    to ``out`` and renamed into place only once complete, so a run that dies leaves any
    previous result intact. A result in ``out`` curated from another raw folder is replaced
    only with ``replace``; a folder that is no curated cohort never is.

    Patients are curated in ``cfg.workers`` processes (0: one per core; 1: one at a time in
    this process); the result is the same whatever their number. Each finished patient is kept
    in a :class:`~radiolib.data.patient_store.PatientStore` beside ``out``, so a re-run after a
    change of some inputs, or after a run that died, curates only the patients it lacks.
    ``progress`` shows a bar of the patients done (a line every few seconds off a terminal).
    """
    check_curation(cfg)
    root, out = Path(root), check_folder_path(out, "curated cohort folder")
    prepare_out(out, root, replace)
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}
    store = PatientStore(out, root, params, code_hash())
    hashes = input_hashes(root, exclude=[out, store.folder])
    reused = reusable(out, params, hashes)
    if reused is not None:
        return reused
    cohort = open_cohort(root)
    expression_file = _expression_file(cohort, root)
    results, skipped, keys = _curate_patients(cohort, cfg, expression_file, progress, store)
    split, genes, gene_names, expression = _split_and_genes(
        cohort, results, skipped, cfg, expression_file
    )
    curated = assemble(out, results, split, genes, gene_names)
    curated.manifest = build_manifest(
        root, cohort, params, hashes, results, skipped, curated, expression
    )
    write_curated(out, curated, patients_table(results, split))
    store.keep_only(keys)
    return load_curated(out)  # the same object a re-run returns
