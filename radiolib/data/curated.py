"""The curated cohort on disk: :class:`CuratedCohort`, its folder and the checks that let a
re-run reuse it.

A curated folder holds ``arrays.npz`` (:data:`ARRAY_KEYS`), ``slices.csv`` (one row per slice),
``patients.csv`` (one row per patient) and ``manifest.json`` (parameters, input fingerprint,
counts, every patient left out); it is built next to its place and renamed into it only once
complete, so a run that dies leaves any previous result intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radiolib.data.geometry import AIR_HU
from radiolib.data.lungs import LUNG_CLOSING_MM, LUNG_THRESHOLD_HU, TUMOUR_MARGIN_MM
from radiolib.data.tables import CLINICAL_GLOB, EXPRESSION_NAMES, find_inputs
from radiolib.errors import CohortError
from radiolib.io import (
    atomic_folder,
    fsync_tree,
    leftovers,
    read_json,
    remove_leftovers,
    sha256_file,
    write_json,
)

if TYPE_CHECKING:
    from radiolib.data.curate import PatientCuration
    from radiolib.data.nsclc import Cohort

#: Bumped whenever the curated folder's content changes meaning; part of the reuse check.
CURATION_FORMAT = 1
#: The modules whose code makes a curated cohort: a result made by other code is not reused.
CURATION_CODE = ("curate.py", "geometry.py", "lungs.py", "expression.py", "curated.py")

ARRAY_KEYS = (
    "patients",
    "split",
    "genes",
    "gene_names",
    "tumour_images",
    "tumour_masks",
    "tumour_patient",
    "background_images",
    "background_patient",
)


@dataclass
class CuratedCohort:
    """The curated cohort every later step uses (see the module docstring)."""

    path: Path
    patients: list[str]  # (P,) index order used everywhere
    split: np.ndarray  # (P,) str 'train' | 'test'
    genes: np.ndarray  # (P, G) float32 standardised expression
    gene_names: list[str]  # (G,)
    tumour_images: np.ndarray  # (N, S, S) float32 [0, 1]
    tumour_masks: np.ndarray  # (N, S, S) uint8 {0, 1}
    tumour_patient: np.ndarray  # (N,) int index into patients
    background_images: np.ndarray  # (M, S, S) float32 [0, 1]
    background_patient: np.ndarray  # (M,) int index into patients
    slices: pd.DataFrame  # one row per slice (tumour rows first, then background rows)
    manifest: dict

    @property
    def image_size(self) -> int:
        return int(self.tumour_images.shape[-1])

    @property
    def n_genes(self) -> int:
        return int(self.genes.shape[1])

    def patient_indices(self, split: str) -> np.ndarray:
        """Indices ``(k,)`` of the patients of ``split`` ('train' or 'test')."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test' (got {split!r})")
        return np.flatnonzero(self.split == split)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def assemble(
    out: Path,
    results: list[PatientCuration],
    split: np.ndarray,
    genes: np.ndarray,
    gene_names: list[str],
) -> CuratedCohort:
    """One cohort of the patients' ``results`` in their order, with their ``split`` and their
    standardised ``genes`` ``(P, G)``; its manifest is left empty."""
    S = None
    t_img, t_mask, t_pat, b_img, b_pat, rows = [], [], [], [], [], []
    for i, r in enumerate(results):
        S = r.tumour_images.shape[-1]
        t_img.append(r.tumour_images)
        t_mask.append(r.tumour_masks)
        t_pat.append(np.full(len(r.tumour_images), i))
        for k in range(len(r.tumour_images)):
            rows.append(
                {
                    "kind": "tumour",
                    "patient_id": r.patient_id,
                    "patient": i,
                    "split": split[i],
                    "voi": 0,
                    "slice": int(r.tumour_voi_slice[k]),
                    "z_mm": float(r.tumour_z_mm[k]),
                    "area_px": int(r.tumour_masks[k].sum()),
                    "centre_x_mm": r.tumour_centre_mm[0],
                    "centre_y_mm": r.tumour_centre_mm[1],
                    "centre_z_mm": r.tumour_centre_mm[2],
                }
            )
    for i, r in enumerate(results):
        b_img.append(r.background_images)
        b_pat.append(np.full(len(r.background_images), i))
        for rec in r.background_info.to_dict("records"):
            rows.append(
                {
                    "kind": "background",
                    "patient_id": r.patient_id,
                    "patient": i,
                    "split": split[i],
                    "area_px": 0,
                    **rec,
                }
            )
    if S is None:
        raise CohortError("no patient could be curated (see the skipped list)")
    table = pd.DataFrame(rows)
    table.insert(1, "index", table.groupby("kind").cumcount())
    return CuratedCohort(
        path=out,
        patients=[r.patient_id for r in results],
        split=np.asarray(split).astype(str),
        genes=genes.astype(np.float32),
        gene_names=list(gene_names),
        tumour_images=np.concatenate(t_img).astype(np.float32),
        tumour_masks=np.concatenate(t_mask).astype(np.uint8),
        tumour_patient=np.concatenate(t_pat).astype(np.int64),
        background_images=np.concatenate(b_img).astype(np.float32).reshape(-1, S, S),
        background_patient=np.concatenate(b_pat).astype(np.int64),
        slices=table,
        manifest={},
    )


def patients_table(results: list[PatientCuration], split: np.ndarray) -> pd.DataFrame:
    """``patients.csv``: one row per curated patient, in the cohort's order."""
    rows = []
    for i, r in enumerate(results):
        rows.append(
            {
                "patient_id": r.patient_id,
                "split": split[i],
                "tumour_slices": len(r.tumour_images),
                "background_slices": len(r.background_images),
                "centre_x_mm": r.tumour_centre_mm[0],
                "centre_y_mm": r.tumour_centre_mm[1],
                "centre_z_mm": r.tumour_centre_mm[2],
                **r.info,
                "background_skip": r.background_skip,
                "warnings": "; ".join(r.warnings),
            }
        )
    return pd.DataFrame(rows)


def _write_folder(folder: Path, c: CuratedCohort, patients_table: pd.DataFrame) -> None:
    folder.mkdir(parents=True)
    np.savez_compressed(
        folder / "arrays.npz",
        patients=np.array(c.patients, dtype=str),
        split=c.split.astype(str),
        genes=c.genes,
        gene_names=np.array(c.gene_names, dtype=str),
        tumour_images=c.tumour_images,
        tumour_masks=c.tumour_masks,
        tumour_patient=c.tumour_patient,
        background_images=c.background_images,
        background_patient=c.background_patient,
    )
    c.slices.to_csv(folder / "slices.csv", index=False)
    patients_table.to_csv(folder / "patients.csv", index=False)
    write_json(folder / "manifest.json", c.manifest)  # last: marks the folder complete
    fsync_tree(folder)


def write_curated(out: Path, c: CuratedCohort, patients_table: pd.DataFrame) -> None:
    """Write ``c`` (with its manifest) into the folder ``out``, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):  # left by runs that were killed
        remove_leftovers(out.parent, f".{out.name}.{kind}-")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with atomic_folder(out, tmp):
        _write_folder(tmp, c, patients_table)
        load_curated(tmp)  # never move an unreadable result into place


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _check_arrays(a: dict[str, np.ndarray], path: Path) -> None:
    """Shapes, ranges and cross-references of a curated folder's arrays."""

    def bad(msg: str) -> CohortError:
        return CohortError(f"{path}: {msg}")

    P = a["patients"].shape[0]
    if a["split"].shape != (P,) or not np.isin(a["split"], ["train", "test"]).all():
        raise bad(f"split must be (P,)={P} of 'train'/'test'")
    if a["genes"].ndim != 2 or a["genes"].shape[0] != P:
        raise bad(f"genes {a['genes'].shape} must be (P={P}, G)")
    if a["gene_names"].shape != (a["genes"].shape[1],):
        raise bad(f"gene_names {a['gene_names'].shape} must be (G={a['genes'].shape[1]},)")
    if not np.isfinite(a["genes"]).all():
        raise bad("genes hold non-finite values")
    ti, tm = a["tumour_images"], a["tumour_masks"]
    if ti.ndim != 3 or ti.shape[1] != ti.shape[2] or tm.shape != ti.shape:
        raise bad(f"tumour_images {ti.shape} / tumour_masks {tm.shape} must both be (N, S, S)")
    S = ti.shape[1]
    bi = a["background_images"]
    if bi.ndim != 3 or bi.shape[1:] != (S, S):
        raise bad(f"background_images {bi.shape} must be (M, {S}, {S})")
    for key, n in (("tumour_patient", len(ti)), ("background_patient", len(bi))):
        v = a[key]
        if v.shape != (n,) or (n and (v.min() < 0 or v.max() >= P)):
            raise bad(f"{key} must be ({n},) indices in [0, {P})")
    for key in ("tumour_images", "background_images"):
        v = a[key]
        if v.size and (not np.isfinite(v).all() or v.min() < 0 or v.max() > 1):
            raise bad(f"{key} must lie in [0, 1]")
    if tm.size and not np.isin(tm, [0, 1]).all():
        raise bad("tumour_masks must be 0/1")


def load_curated(out: str | os.PathLike) -> CuratedCohort:
    """Read a curated folder, checking every array's shape, dtype range and cross-reference.

    Raises :class:`CohortError` naming the file when the folder is incomplete or corrupt.
    """
    out = Path(out)
    for name in ("manifest.json", "arrays.npz", "slices.csv", "patients.csv"):
        if not (out / name).is_file():
            raise CohortError(f"curated cohort {out} is incomplete: {out / name} is missing")
    try:
        manifest = read_json(out / "manifest.json")
    except (OSError, ValueError) as exc:
        raise CohortError(f"unreadable manifest {out / 'manifest.json'}: {exc}") from None
    path = out / "arrays.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ARRAY_KEYS if k not in z.files]
            if missing:
                raise CohortError(f"{path}: arrays {missing} missing")
            a = {k: z[k] for k in ARRAY_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CohortError(f"corrupt array file {path}: {exc}") from None
    try:
        slices = pd.read_csv(out / "slices.csv")
        patients_table = pd.read_csv(out / "patients.csv")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CohortError(f"unreadable table in {out}: {exc}") from None

    _check_arrays(a, path)
    ti, bi = a["tumour_images"], a["background_images"]
    P = len(a["patients"])
    if len(slices) != len(ti) + len(bi):
        raise CohortError(
            f"{out / 'slices.csv'}: {len(slices)} rows, expected {len(ti) + len(bi)} (N + M)"
        )
    if len(patients_table) != P:
        raise CohortError(f"{out / 'patients.csv'}: {len(patients_table)} rows, expected {P}")
    return CuratedCohort(
        path=out,
        patients=[str(p) for p in a["patients"]],
        split=a["split"].astype(str),
        genes=a["genes"].astype(np.float32),
        gene_names=[str(g) for g in a["gene_names"]],
        tumour_images=ti.astype(np.float32),
        tumour_masks=a["tumour_masks"].astype(np.uint8),
        tumour_patient=a["tumour_patient"].astype(np.int64),
        background_images=bi.astype(np.float32),
        background_patient=a["background_patient"].astype(np.int64),
        slices=slices,
        manifest=manifest,
    )


# --------------------------------------------------------------------------------------------
# Reuse and replacement
# --------------------------------------------------------------------------------------------


def code_hash() -> str:
    """One hash over the source of :data:`CURATION_CODE`."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in CURATION_CODE:
        h.update(f"{name}\0{sha256_file(here / name)}\n".encode())
    return h.hexdigest()


def json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, default=str))


def input_hashes(root: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> dict:
    """Cheap fingerprint of a raw cohort folder: sha256 of the expression file(s) and of the
    tables, and one hash over every file's relative path, size and mtime (DICOM included,
    without reading it). Paths under ``exclude`` are left out."""
    root = Path(root)
    if not root.is_dir():
        raise CohortError(f"cohort folder {root} does not exist")
    skip = [Path(e).resolve() for e in exclude]
    # the temporary folders of a result being written count as that result
    prefixes = tuple(f".{e.name}.{kind}-" for e in skip for kind in ("tmp", "old"))
    h = hashlib.sha256()
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(
            x
            for x in dirnames
            if (d / x).resolve() not in skip and not (prefixes and x.startswith(prefixes))
        )
        for name in sorted(filenames):
            p = d / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
    tables = {}
    for p in find_inputs(root, [*EXPRESSION_NAMES, CLINICAL_GLOB]):
        if p.is_file():
            tables[str(p.relative_to(root))] = sha256_file(p)
    return {"files": n, "files_stat_sha256": h.hexdigest(), "tables_sha256": tables}


def reusable(out: Path, params: dict, hashes: dict) -> CuratedCohort | None:
    """The cohort in ``out`` if this code curated it with ``params`` from inputs of
    fingerprint ``hashes`` (:func:`input_hashes`) and it reads back whole, else None."""
    if not (out / "manifest.json").is_file():
        return None
    try:
        manifest = read_json(out / "manifest.json")
    except (OSError, ValueError):
        return None
    same = (
        manifest.get("format") == CURATION_FORMAT
        and manifest.get("code_sha256") == code_hash()
        and manifest.get("parameters") == json_normal(params)
        and manifest.get("input_hashes") == json_normal(hashes)
    )
    if not same:
        return None
    try:
        return load_curated(out)
    except CohortError:
        return None


def _restore_interrupted(out: Path) -> None:
    """A run killed between its two renames left the previous result as ``.old-PID`` and no
    ``out``: put the newest such result back."""
    for old in reversed(leftovers(out.parent, f".{out.name}.old-")):
        if not out.exists() and (old / "manifest.json").is_file():
            os.replace(old, out)


def _check_source(out: Path, root: Path, replace: bool) -> None:
    """Refuse to replace a curated cohort made from another raw folder unless ``replace``."""
    if replace or not (out / "manifest.json").is_file():
        return
    try:
        made_from = read_json(out / "manifest.json").get("root")
    except (OSError, ValueError, AttributeError):
        return  # a broken result is rebuilt (load_curated names what is wrong)
    if made_from and Path(made_from).resolve() != root.resolve():
        raise CohortError(
            f"{out} holds a cohort curated from {made_from}, not from {root}; refusing to "
            "replace it (pass --replace, or replace=True, to do so, or choose another --out)"
        )


def prepare_out(out: Path, root: Path, replace: bool) -> None:
    """Make ``out`` ready for a curation of ``root``: put back a result a killed run left
    aside, and refuse a folder that is no curated cohort, or one curated from another raw
    folder unless ``replace``."""
    _restore_interrupted(out)
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise CohortError(
            f"{out} exists and is not a curated cohort (no manifest.json); refusing to replace it"
        )
    if not root.is_dir():
        raise CohortError(f"cohort folder {root} does not exist")
    _check_source(out, root, replace)


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


def _counts(
    cohort: Cohort,
    curated: CuratedCohort,
    skipped: list[dict[str, str]],
    expression: dict[str, object],
) -> dict[str, object]:
    """The manifest's counts: subjects found, curated, left out; genes; slices per split."""
    dropped = getattr(cohort, "dropped", pd.DataFrame())
    dropped_ids = set(dropped.get("patient_id", pd.Series(dtype=str))) - {""}  # "": no patient
    counts: dict[str, object] = {
        "subjects_found": len(set(cohort.patients) | dropped_ids),
        "subjects_with_expression": int(
            sum(p in cohort.expression.columns for p in cohort.patients)
        ),
        "expression_samples": int(cohort.expression.shape[1]),
        "subjects_curated": len(curated.patients),
        "subjects_skipped": len(skipped),
        "subjects_dropped": len(dropped_ids - set(cohort.patients)),
        "genes_in": expression["genes_in"],
        "genes_kept": expression["genes_kept"],
        "genes_with_missing": expression["genes_with_missing"],
        "genes_constant": expression["genes_constant"],
        "tumour_slices": int(len(curated.tumour_images)),
        "background_slices": int(len(curated.background_images)),
    }
    for s in ("train", "test"):
        idx = set(np.flatnonzero(curated.split == s).tolist())
        counts[s] = {
            "patients": len(idx),
            "tumour_slices": int(sum(int(p) in idx for p in curated.tumour_patient)),
            "background_slices": int(sum(int(p) in idx for p in curated.background_patient)),
        }
    return counts


def _versions() -> dict[str, str]:
    import scipy
    import SimpleITK as sitk
    import skimage

    import radiolib

    return {
        "radiolib": radiolib.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "SimpleITK": sitk.Version_VersionString(),
        "scikit-image": skimage.__version__,
    }


def _records(frame: pd.DataFrame | None) -> list[dict]:
    return json_normal(frame.to_dict("records")) if frame is not None and len(frame) else []


def build_manifest(
    root: Path,
    cohort: Cohort,
    params: dict[str, object],
    hashes: dict[str, object],
    results: list[PatientCuration],
    skipped: list[dict[str, str]],
    curated: CuratedCohort,
    expression: dict[str, object],
) -> dict[str, object]:
    """What a curation of ``root`` did and from what: read back by the reuse check
    (:func:`reusable`) and the report (:func:`curation_report`)."""
    dropped = getattr(cohort, "dropped", pd.DataFrame())
    return {
        "format": CURATION_FORMAT,
        "code_sha256": code_hash(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": str(root.resolve()),
        "parameters": json_normal(params),
        "input_hashes": json_normal(hashes),
        "expression": expression,
        "counts": _counts(cohort, curated, skipped, expression),
        "skipped": skipped,
        "dropped_by_loader": json_normal(dropped.to_dict("records")) if len(dropped) else [],
        "loader_notes": _records(getattr(cohort, "notes", None)),
        "skipped_inputs": _records(getattr(cohort, "skipped_inputs", None)),
        "background_skipped": [
            {"patient": r.patient_id, "reason": r.background_skip}
            for r in results
            if r.background_skip
        ],
        "warnings": [{"patient": r.patient_id, "warning": w} for r in results for w in r.warnings],
        "versions": _versions(),
        "constants": {
            "lung_threshold_hu": LUNG_THRESHOLD_HU,
            "lung_closing_mm": LUNG_CLOSING_MM,
            "tumour_margin_mm": TUMOUR_MARGIN_MM,
            "air_hu": AIR_HU,
        },
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def curation_report(cohort: CuratedCohort) -> list[str]:
    """What a curation did, as console lines: the counts, then every patient left out and why
    (with the file), optional inputs skipped, unreadable files that name no patient, notes."""
    m = cohort.manifest

    def line(text: object) -> str:
        return " ".join(str(text).split())  # a reason may hold a parser's line breaks

    counts = {k: v for k, v in m.get("counts", {}).items() if not isinstance(v, dict)}
    lines = [
        f"curated cohort at {cohort.path}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    ]
    left_out = [(d["patient_id"], d["reason"], d["file"]) for d in m.get("dropped_by_loader", [])]
    left_out += [(s["patient"], s["reason"], s["file"]) for s in m.get("skipped", [])]
    by_patient = sorted(x for x in left_out if x[0])
    if by_patient:
        lines.append(f"{len(by_patient)} patient(s) left out:")
        lines += [f"  {p}: {line(r)} ({f})" for p, r, f in by_patient]
    ignored = [(f, r) for p, r, f in left_out if not p]
    ignored += [(s["file"], s["reason"]) for s in m.get("skipped_inputs", [])]
    lines += [f"ignored file {f}: {line(r)}" for f, r in ignored]
    lines += [
        f"note, patient {n['patient_id']}: {line(n['note'])} ({n['file']})"
        for n in m.get("loader_notes", [])
    ]
    lines += [
        f"note, patient {s['patient']}: no background slices ({line(s['reason'])})"
        for s in m.get("background_skipped", [])
    ]
    return lines
