"""Download the real NSCLC Radiogenomics cohort: the RNA-seq patients that have a TCIA tumour SEG.

Selection is offline: the list of the 130 RNA-seq samples of GEO GSE103584 ships with the package
(``gse103584_samples.txt``) and the NCI Imaging Data Commons series index ships with the
``idc-index-data`` package (a parquet file read here with a row filter, so the 1 M-row index never
sits in memory). A *TCIA SEG* is a SEG series whose source DOI is the collection's TCIA DOI; the
IDC also holds AI segmentations (source DOI on zenodo), which are not used.

:func:`fetch` downloads, with the IDC client (s5cmd), each selected patient's SEG series, then the
CT series that each SEG references (read from the downloaded SEG header), into the layout
``OUT/nsclc_radiogenomics/<PatientID>/<StudyInstanceUID>/<Modality>_<SeriesInstanceUID>/``, and
the GEO expression table into ``OUT/``. The result is a cohort folder for
:func:`radiolib.data.nsclc.open_cohort` (the TCIA clinical CSV and AIM files are separate TCIA
downloads and are not fetched).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom

from radiolib.errors import CohortError
from radiolib.io import atomic_write, write_json

COLLECTION_ID = "nsclc_radiogenomics"
TCIA_DOI = "10.7937/k9/tcia.2017.7hs46erv"
GEO_EXPRESSION_URL = (
    "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE103nnn/GSE103584/suppl/"
    "GSE103584_R01_NSCLC_RNAseq.txt.gz"
)
DIR_TEMPLATE = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
INDEX_COLUMNS = [
    "collection_id",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "source_DOI",
    "instanceCount",
    "series_size_MB",
]


def rnaseq_samples() -> pd.DataFrame:
    """The 130 RNA-seq samples of GSE103584: index ``patient_id`` (R01-xxx), ``geo_accession``."""
    text = resources.files("radiolib.data").joinpath("gse103584_samples.txt")
    with text.open() as fh:
        df = pd.read_csv(fh, sep="\t", comment="#", dtype=str)
    return df.set_index("patient_id")


def read_idc_index(collection_id: str = COLLECTION_ID) -> pd.DataFrame:
    """The series of one collection from the IDC index shipped by ``idc-index-data`` (offline).

    One row per series with the columns of :data:`INDEX_COLUMNS`.
    """
    import idc_index_data
    import pyarrow.parquet as pq

    table = pq.read_table(
        idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
        columns=INDEX_COLUMNS,
        filters=[("collection_id", "=", collection_id)],
    )
    return table.to_pandas()


def tcia_seg_series(index_df: pd.DataFrame) -> pd.DataFrame:
    """SEG series of the index whose source DOI is the TCIA collection DOI (not AI results)."""
    missing = {"PatientID", "SeriesInstanceUID", "Modality", "source_DOI"} - set(index_df.columns)
    if missing:
        raise CohortError(f"IDC index table lacks columns {sorted(missing)}")
    df = index_df
    if "collection_id" in df.columns:
        df = df[df["collection_id"] == COLLECTION_ID]
    doi = df["source_DOI"].astype("string").str.strip().str.lower()
    return df[(df["Modality"] == "SEG") & (doi == TCIA_DOI)]


def select_patients(index_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """RNA-seq patients of GSE103584 that have a TCIA SEG in the IDC index.

    ``index_df``: an IDC series table (e.g. ``IDCClient().index``); default: the index shipped with
    idc-index-data, read offline. Returns one row per patient (index ``patient_id``, sorted) with
    ``geo_accession``, ``study_uid``, ``seg_series_uid`` (list), ``seg_description``,
    ``n_tcia_seg``; ``attrs['without_seg']`` lists the RNA-seq patients left out.
    """
    samples = rnaseq_samples()
    index_df = read_idc_index() if index_df is None else index_df
    segs = tcia_seg_series(index_df)
    segs = segs[segs["PatientID"].isin(samples.index)]
    rows = []
    for pid, grp in segs.sort_values("SeriesInstanceUID").groupby("PatientID", sort=True):
        rows.append(
            {
                "patient_id": pid,
                "geo_accession": samples.at[pid, "geo_accession"],
                "study_uid": ";".join(sorted(set(grp["StudyInstanceUID"].astype(str))))
                if "StudyInstanceUID" in grp.columns
                else "",
                "seg_series_uid": list(grp["SeriesInstanceUID"]),
                "seg_description": "; ".join(sorted(set(grp["SeriesDescription"].astype(str))))
                if "SeriesDescription" in grp.columns
                else "",
                "n_tcia_seg": len(grp),
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "patient_id",
            "geo_accession",
            "study_uid",
            "seg_series_uid",
            "seg_description",
            "n_tcia_seg",
        ],
    ).set_index("patient_id")
    out.attrs["without_seg"] = sorted(set(samples.index) - set(out.index))
    return out


def _download_url(url: str, dest: Path, timeout: float = 120.0) -> None:
    """Stream ``url`` to ``dest`` atomically."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_write(dest, "wb") as fh:
        shutil.copyfileobj(resp, fh, length=1 << 20)


def _referenced_ct_series(seg_files: Sequence[Path]) -> dict[str, set[str]]:
    """SEG file -> the series UIDs named in its ReferencedSeriesSequence."""
    out: dict[str, set[str]] = {}
    for f in seg_files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001
            raise CohortError(f"downloaded SEG {f} is not readable: {exc}") from exc
        uids = {str(it.SeriesInstanceUID) for it in ds.get("ReferencedSeriesSequence", [])}
        if not uids:
            raise CohortError(f"downloaded SEG {f} has no ReferencedSeriesSequence")
        out[str(f)] = uids
    return out


def fetch(
    out: str | os.PathLike,
    patients: Sequence[str] | None = None,
    dry_run: bool = False,
    client: Any = None,
    download_url: Callable[[str, Path], None] = _download_url,
    progress: bool = True,
) -> dict:
    """Download the selected patients' TCIA SEG and referenced CT series, and the GEO table.

    ``patients``: ids among :func:`select_patients` (default: all 117). ``dry_run``: only report
    what would be downloaded (SEG series, and as an upper bound the CT series of their studies).
    ``client``: an ``idc_index.IDCClient`` (created when None). Writes ``OUT/fetch_manifest.json``
    and returns the same dict. Files already present are not downloaded again.
    """
    out = Path(out)
    sel = select_patients()
    if patients is not None:
        unknown = sorted(set(patients) - set(sel.index))
        if unknown:
            raise CohortError(
                f"patients {unknown} are not RNA-seq patients with a TCIA SEG "
                f"(choose among the {len(sel)} of select_patients())"
            )
        sel = sel.loc[sorted(set(patients))]
    seg_uids = [u for lst in sel["seg_series_uid"] for u in lst]
    index = read_idc_index()
    manifest: dict[str, Any] = {
        "collection_id": COLLECTION_ID,
        "tcia_doi": TCIA_DOI,
        "patients": list(sel.index),
        "seg_series": seg_uids,
        "expression_url": GEO_EXPRESSION_URL,
        "dir_template": DIR_TEMPLATE,
        "dry_run": dry_run,
    }
    if dry_run:
        studies = set(index[index["SeriesInstanceUID"].isin(seg_uids)]["StudyInstanceUID"])
        ct = index[(index["Modality"] == "CT") & index["StudyInstanceUID"].isin(studies)]
        seg = index[index["SeriesInstanceUID"].isin(seg_uids)]
        manifest["ct_series_upper_bound"] = list(ct["SeriesInstanceUID"])
        manifest["size_mb_upper_bound"] = float(
            ct["series_size_MB"].sum() + seg["series_size_MB"].sum()
        )
        return manifest

    if client is None:
        from idc_index import index as idc_index

        client = idc_index.IDCClient()
    out.mkdir(parents=True, exist_ok=True)
    client.download_from_selection(
        downloadDir=str(out),
        seriesInstanceUID=seg_uids,
        dirTemplate=DIR_TEMPLATE,
        quiet=True,
        show_progress_bar=progress,
    )
    seg_files = sorted(
        p for uid in seg_uids for p in out.glob(f"{COLLECTION_ID}/*/*/SEG_{uid}/*") if p.is_file()
    )
    missing = sorted({u for u in seg_uids if not any(f"SEG_{u}" in str(p) for p in seg_files)})
    if missing:
        raise CohortError(f"SEG series {missing[:3]} were not downloaded into {out}")
    refs = _referenced_ct_series(seg_files)
    ct_uids = sorted(set().union(*refs.values()))
    known = set(index["SeriesInstanceUID"])
    absent = sorted(set(ct_uids) - known)
    if absent:
        raise CohortError(
            f"SEG files reference CT series absent from the IDC index: {absent[:3]} "
            f"(e.g. {next(f for f, u in refs.items() if u & set(absent))})"
        )
    client.download_from_selection(
        downloadDir=str(out),
        seriesInstanceUID=ct_uids,
        dirTemplate=DIR_TEMPLATE,
        quiet=True,
        show_progress_bar=progress,
    )
    expr = out / GEO_EXPRESSION_URL.rsplit("/", 1)[1]
    if not expr.is_file() or expr.stat().st_size == 0:
        download_url(GEO_EXPRESSION_URL, expr)
    manifest["ct_series"] = ct_uids
    manifest["expression_file"] = expr.name
    write_json(out / "fetch_manifest.json", manifest)
    return manifest
