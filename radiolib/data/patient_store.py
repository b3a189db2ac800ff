"""Each patient's curation kept beside a curated folder, so that a re-run curates only the
patients whose inputs or parameters changed.

The store of ``OUT`` is the hidden folder ``.OUT-patients`` next to it: one ``<key>.npz`` per
curated patient. The key is a hash of everything a patient's slices depend on: the curation
code (:func:`~radiolib.data.curated.code_hash`), the curation parameters that act on single
patients (all but :data:`NOT_PER_PATIENT`), the raw folder, the patient id and the path, size
and modification time of each of its CT and SEG files. A file is written under a name of its
own process and renamed into place, so a run that dies never leaves half an entry; an entry
that cannot be read back whole counts as absent and is curated again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from radiolib.io import remove_leftovers

if TYPE_CHECKING:
    from radiolib.data.curate import PatientCuration

#: Bumped whenever an entry's content changes meaning.
STORE_FORMAT = 1
#: Curation parameters that change no patient's slices.
NOT_PER_PATIENT = ("test_fraction", "workers")
_ARRAYS = (
    "tumour_images",
    "tumour_masks",
    "tumour_z_mm",
    "tumour_voi_slice",
    "tumour_centre_mm",
    "background_images",
)


def _native(value: object) -> object:
    """A numpy scalar as the Python number JSON writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def store_folder(out: Path) -> Path:
    """The store of the curated folder ``out``."""
    return out.parent / f".{out.name}-patients"


class PatientStore:
    """The finished patients of curations of ``root`` into ``out`` with ``parameters``
    (``dataclasses.asdict`` of the curation config) by code of hash ``code``."""

    def __init__(self, out: Path, root: Path, parameters: dict, code: str) -> None:
        self.folder = store_folder(out)
        self._root = root.resolve()
        self._common = {
            "format": STORE_FORMAT,
            "code": code,
            "root": str(self._root),
            "parameters": {k: v for k, v in parameters.items() if k not in NOT_PER_PATIENT},
        }

    def key(self, patient_id: str, files: Sequence[Path]) -> str | None:
        """The key of a patient curated from ``files``; None when one of them cannot be
        found (the patient is then curated, and fails, as usual)."""
        stats = []
        for f in files:
            try:
                st = Path(f).stat()
            except OSError:
                return None
            path = Path(f).resolve()
            shown = path.relative_to(self._root) if path.is_relative_to(self._root) else path
            stats.append([str(shown), st.st_size, st.st_mtime_ns])
        identity = {**self._common, "patient": patient_id, "files": stats}
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str | None) -> PatientCuration | None:
        """The patient stored under ``key``, or None (absent, unreadable or not this key's)."""
        from radiolib.data.curate import PatientCuration

        if key is None or not self._path(key).is_file():
            return None
        try:
            with np.load(self._path(key), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in _ARRAYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None
        if meta.get("key") != key:
            return None
        return PatientCuration(
            patient_id=meta["patient_id"],
            background_info=pd.DataFrame(meta["background_info"]),
            info=meta["info"],
            warnings=meta["warnings"],
            background_skip=meta["background_skip"],
            **arrays,
        )

    def put(self, key: str | None, result: PatientCuration) -> None:
        """Store ``result`` under ``key`` (nothing when ``key`` is None)."""
        if key is None:
            return
        meta = {
            "key": key,
            "patient_id": result.patient_id,
            "background_info": result.background_info.to_dict("records"),
            "info": result.info,
            "warnings": result.warnings,
            "background_skip": result.background_skip,
        }
        text = json.dumps(meta, default=_native)
        tmp = self.folder / f".tmp-{os.getpid()}"  # this process's: a killed run's is removed
        tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp / f"{key}.npz", "wb") as fh:
            np.savez_compressed(fh, meta=np.array(text), **{k: getattr(result, k) for k in _ARRAYS})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp / f"{key}.npz", self._path(key))

    def keep_only(self, keys: Iterable[str | None]) -> None:
        """Remove every entry but those of ``keys``, and what killed runs left half-written."""
        if not self.folder.is_dir():
            return
        keep = {f"{k}.npz" for k in keys if k is not None}
        for p in self.folder.glob("*.npz"):
            if p.name not in keep:
                p.unlink(missing_ok=True)
        remove_leftovers(self.folder, ".tmp-")
        with contextlib.suppress(OSError):  # this process's own temporary folder, if empty
            (self.folder / f".tmp-{os.getpid()}").rmdir()
        with contextlib.suppress(OSError):  # an empty store goes
            self.folder.rmdir()
