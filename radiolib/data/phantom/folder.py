"""The phantom's folder on disk: writing the cohort whole, its completion marker, its truth.

:func:`write_phantom` writes the biology's tables and every patient's CT and SEG into ``ROOT``
(layout in :mod:`radiolib.data.phantom`). ``radiolib_phantom.json`` (:data:`MARKER_FILE`) marks
the folder as a phantom: written first with ``"complete": false`` and rewritten with
``"complete": true`` after everything else, so a phantom killed midway is recognisable
(:func:`phantom_status`), and :func:`write_phantom` never writes into a folder that is neither
empty nor a phantom (a real download has the same layout).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radiolib.config import PhantomConfig
from radiolib.errors import CohortError, OutputError
from radiolib.io import check_folder_path, read_json, write_json

from .anatomy import render_patient
from .biology import TRAITS, PhantomTruth, check_parameters, simulate_biology
from .dicom import COLLECTION, write_patient
from .streams import VERSION
from .tables import (
    CLINICAL_FILE,
    EXPRESSION_FILE,
    TRUTH_FILE,
    clinical_table,
    read_truth,
    write_clinical,
    write_expression,
    write_truth,
)

MARKER_FILE = "radiolib_phantom.json"
_DEFAULT = PhantomConfig()  # the profiles' phantom defaults


@dataclass
class PhantomSummary:
    """What :func:`write_phantom` wrote, and how long it took."""

    path: Path
    patients: int
    seconds: float
    files: int
    ct_series: int
    seg_series: int
    expression_samples: int
    genes: int
    complete_genes: int


def phantom_status(root: str | os.PathLike) -> dict | None:
    """What ``ROOT``'s phantom marker says (``complete``, ``params``), or None without one.

    A phantom written before the marker existed counts as complete when its truth file (written
    last then) names the phantom's version. An unreadable marker reads as incomplete.
    """
    root = Path(root)
    marker = root / MARKER_FILE
    if marker.is_file():
        try:
            status = read_json(marker)
        except (OSError, ValueError):
            return {"complete": False, "params": {}}
        return status if isinstance(status, dict) else {"complete": False, "params": {}}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        params = read_json(root / TRUTH_FILE)["params"]
        if str(params.get("version", "")).startswith("radiolib-phantom"):
            return {"complete": True, "params": params}
    return None


def check_phantom_complete(root: str | os.PathLike) -> None:
    """:class:`CohortError` when ``ROOT`` holds a phantom whose writing was interrupted."""
    status = phantom_status(root)
    if status is not None and not status.get("complete"):
        raise CohortError(
            f"{Path(root)} holds an incomplete phantom ({MARKER_FILE} says its writing was "
            "interrupted); write it again with radiolib phantom --out on the same folder"
        )


def load_truth(root: str | os.PathLike) -> PhantomTruth:
    """Read ``ROOT/ground_truth/truth.json`` written by :func:`write_phantom`."""
    check_phantom_complete(root)
    return read_truth(root)


def _claim(root: Path) -> None:
    """Refuse to write into a folder that is neither empty nor a phantom (a real download)."""
    check_folder_path(root, "phantom folder")
    if not root.is_dir() or phantom_status(root) is not None:
        return
    entries = sorted(p.name for p in root.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (
            f" ... ({len(entries)} entries)" if len(entries) > 4 else ""
        )
        raise OutputError(
            f"refusing to write a phantom into {root}: it is not empty ({shown}) and holds no "
            f"{MARKER_FILE}, so it is not a phantom written by radiolib (a real download has "
            "the same layout); choose an empty or new folder"
        )


def _remove_stale(coll: Path, keep: set[str]) -> None:
    """Patient folders of an earlier phantom that this one lacks, and interrupted writes."""
    if not coll.is_dir():
        return
    for old in coll.iterdir():
        if old.is_dir() and re.fullmatch(r"R01-\d+", old.name) and old.name not in keep:
            shutil.rmtree(old)
        elif old.is_dir() and old.name.startswith(".") and old.name.endswith(".tmp"):
            shutil.rmtree(old)  # left by an interrupted run


def _write_images(
    root: Path, pat: pd.DataFrame, seed: int, matrix: int, progress: bool
) -> tuple[pd.DataFrame, int]:
    """Render and write every patient's CT (and SEG); returns the geometry columns of the
    truth (with the UIDs) and the number of files written."""
    from tqdm.auto import tqdm

    geo_rows, files = [], 0
    for i, pid in enumerate(
        tqdm(list(pat.index), desc="phantom", unit="patient", disable=not progress)
    ):
        hu, mask, info = render_patient(pat.loc[pid, list(TRAITS)], seed, i, matrix)
        geo = info.pop("geometry")
        has_seg = pat.loc[pid, "has_seg"]
        sex = str(pat.loc[pid, "sex"])
        uids, n = write_patient(root, pid, sex, hu, mask if has_seg else None, geo, seed, i)
        files += n
        info.update(
            study_uid=uids["study"],
            ct_series_uid=uids["ct"],
            seg_series_uid=uids["seg"] if has_seg else "",
        )
        geo_rows.append(info)
    return pd.DataFrame(geo_rows, index=pat.index), files


def _mark(root: Path, params: dict, complete: bool) -> None:
    """Write the marker; marking complete first syncs, so the marker never reaches the disk
    before the files it vouches for (one sync, not an fsync per DICOM file)."""
    if complete and hasattr(os, "sync"):
        os.sync()
    write_json(root / MARKER_FILE, {"complete": complete, "version": VERSION, "params": params})


def write_phantom(
    out: str | os.PathLike,
    patients: int = _DEFAULT.patients,
    seed: int = _DEFAULT.seed,
    subtypes: int = _DEFAULT.subtypes,
    signal: float = _DEFAULT.signal,
    matrix: int = _DEFAULT.matrix,
    progress: bool = True,
) -> PhantomSummary:
    """Write the synthetic cohort to ``out`` (layout in :mod:`radiolib.data.phantom`).

    The parameters are the fields of :class:`radiolib.config.PhantomConfig`, with its defaults.
    ``out`` must be empty, new or a phantom (see the module docstring): anything else raises
    :class:`~radiolib.errors.OutputError` before a file is touched. Patient folders are written
    to a temporary folder and renamed; tables with :func:`radiolib.io.atomic_write`. Patient
    folders of an earlier phantom in ``out`` that are not part of this one are removed so
    loaders see one cohort. The marker is rewritten as complete last, after a sync.
    """
    check_parameters(patients, subtypes, signal, matrix)
    t0 = time.perf_counter()
    root = Path(out)
    _claim(root)
    params = {
        "patients": int(patients),
        "seed": int(seed),
        "subtypes": int(subtypes),
        "signal": float(signal),
        "matrix": int(matrix),
    }
    _mark(root, params, complete=False)
    truth, expr = simulate_biology(patients, seed, subtypes, signal)
    pat = truth.patients
    write_expression(root / EXPRESSION_FILE, expr)
    _remove_stale(root / COLLECTION, set(pat.index))
    geo_df, files = _write_images(root, pat, seed, matrix, progress)
    truth.patients = pat.join(geo_df)
    truth.params.update(matrix=int(matrix))
    write_clinical(root / CLINICAL_FILE, clinical_table(truth.patients, seed))
    write_truth(root / TRUTH_FILE, truth)
    _mark(root, params, complete=True)
    return PhantomSummary(
        path=root,
        patients=patients,
        seconds=time.perf_counter() - t0,
        files=files + 4,
        ct_series=patients,
        seg_series=int(pat["has_seg"].sum()),
        expression_samples=expr.shape[1],
        genes=expr.shape[0],
        complete_genes=int(expr.notna().all(axis=1).sum()),
    )
