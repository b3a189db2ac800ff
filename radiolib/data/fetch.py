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

Downloads resume: a series whose folder already holds as many files and bytes as the index lists
is not requested again, and the rest are synced file by file (``s5cmd sync``), so an interrupted
fetch picks up where it stopped. The citations the data's licences ask for are written beside the
data (``OUT/CITATIONS.md``).
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
GEO_SERIES = "GSE103584"
# The data descriptor of the collection, which the GEO series and the TCIA collection share
DATA_DESCRIPTOR = (
    "Bakr, S. et al. A radiogenomic dataset of non-small cell lung cancer. Scientific Data 5, "
    "180202 (2018). https://doi.org/10.1038/sdata.2018.202"
)
CITATIONS_FILE = "CITATIONS.md"
DIR_TEMPLATE = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
# bytes a complete series may differ from the index's series_size_MB (given to 1e-6 MB)
_SIZE_TOLERANCE_BYTES = 1000
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


def series_folder(out: Path, row: Any) -> Path:
    """Where :data:`DIR_TEMPLATE` puts one series of the index under ``out``."""
    return (
        out
        / COLLECTION_ID
        / str(row.PatientID)
        / str(row.StudyInstanceUID)
        / f"{row.Modality}_{row.SeriesInstanceUID}"
    )


def _series_files(folder: Path) -> list[Path]:
    """The downloaded files of a series folder (not the hidden temporary files of a download)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def series_complete(out: Path, row: Any) -> bool:
    """Whether the series' folder holds the index's number of files and bytes."""
    files = _series_files(series_folder(out, row))
    size = sum(p.stat().st_size for p in files)
    return (
        len(files) == int(row.instanceCount)
        and abs(size - float(row.series_size_MB) * 1e6) <= _SIZE_TOLERANCE_BYTES
    )


def _series_table(index: pd.DataFrame, uids: Sequence[str], out: Path) -> pd.DataFrame:
    """Rows of ``index`` for ``uids`` (in that order), with ``complete`` (already here)."""
    rows = index.drop_duplicates("SeriesInstanceUID").set_index("SeriesInstanceUID")
    rows = rows.loc[list(uids)].reset_index()
    rows["complete"] = [series_complete(out, r) for r in rows.itertuples(index=False)]
    return rows


def _series_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "patient": r.PatientID,
            "modality": r.Modality,
            "series_uid": r.SeriesInstanceUID,
            "files": int(r.instanceCount),
            "size_mb": round(float(r.series_size_MB), 3),
            "complete": bool(r.complete),
        }
        for r in table.itertuples(index=False)
    ]


def _download_series(client: Any, out: Path, table: pd.DataFrame, progress: bool) -> None:
    """Download the series of ``table`` not yet complete under ``out``, then check each."""
    todo = table[~table["complete"]]
    if len(todo):
        client.download_from_selection(
            downloadDir=str(out),
            seriesInstanceUID=list(todo["SeriesInstanceUID"]),
            dirTemplate=DIR_TEMPLATE,
            quiet=True,
            show_progress_bar=progress,
            use_s5cmd_sync=True,
        )
    for r in todo.itertuples(index=False):
        folder = series_folder(out, r)
        found = len(_series_files(folder))
        if found < int(r.instanceCount):
            raise CohortError(
                f"patient {r.PatientID}: {r.Modality} series {r.SeriesInstanceUID} has {found} "
                f"of {int(r.instanceCount)} files in {folder} after the download; run fetch "
                "again to resume"
            )


def write_citations(out: Path, index: pd.DataFrame, uids: Sequence[str], client: Any) -> Path:
    """``OUT/CITATIONS.md``: what to cite for the downloaded series and the expression table.

    The DOIs come from the index (offline); the formatted references from the IDC client
    (``citations_from_selection``, which asks doi.org) when it answers."""
    dois = sorted(set(index[index["SeriesInstanceUID"].isin(uids)]["source_DOI"].str.lower()))
    lines = [
        "# Citations for this download",
        "",
        "The licences of these data ask you to cite them. Imaging (via the NCI Imaging Data "
        "Commons, collection `nsclc_radiogenomics`):",
        "",
        *[f"- https://doi.org/{d}" for d in dois],
        "",
        f"Gene expression (GEO {GEO_SERIES}) and the collection's data descriptor:",
        "",
        f"- https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc={GEO_SERIES}",
        f"- {DATA_DESCRIPTOR}",
        "",
        "## References (APA, from doi.org via idc-index)",
        "",
    ]
    try:
        formatted = client.citations_from_selection(seriesInstanceUID=list(uids))
    except Exception as exc:  # noqa: BLE001 - offline or doi.org down: the DOIs above remain
        formatted = []
        lines.append(f"doi.org could not be reached ({type(exc).__name__}); cite the DOIs above.")
    lines += [f"- {str(c).strip()}" for c in formatted]
    path = out / CITATIONS_FILE
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def fetch(
    out: str | os.PathLike,
    patients: Sequence[str] | None = None,
    dry_run: bool = False,
    client: Any = None,
    download_url: Callable[[str, Path], None] = _download_url,
    progress: bool = True,
    index: pd.DataFrame | None = None,
) -> dict:
    """Download the selected patients' TCIA SEG and referenced CT series, and the GEO table.

    ``patients``: ids among :func:`select_patients` (default: all 117). ``dry_run``: only report
    what would be downloaded (SEG series, and as an upper bound the CT series of their studies),
    and what of it is already complete in ``out``. ``client``: an ``idc_index.IDCClient``
    (created when None). ``index``: the IDC series table (default: :func:`read_idc_index`).
    Writes ``OUT/fetch_manifest.json`` and ``OUT/CITATIONS.md`` and returns the manifest: its
    ``series`` lists every series with patient, modality, files, size_mb and whether it was
    already complete. Series and files already complete are not downloaded again.
    """
    out = Path(out)
    index = read_idc_index() if index is None else index
    sel = select_patients(index)
    if patients is not None:
        unknown = sorted(set(patients) - set(sel.index))
        if unknown:
            raise CohortError(
                f"patients {unknown} are not RNA-seq patients with a TCIA SEG "
                f"(choose among the {len(sel)} of select_patients())"
            )
        sel = sel.loc[sorted(set(patients))]
    seg_uids = [u for lst in sel["seg_series_uid"] for u in lst]
    manifest: dict[str, Any] = {
        "collection_id": COLLECTION_ID,
        "tcia_doi": TCIA_DOI,
        "patients": list(sel.index),
        "seg_series": seg_uids,
        "expression_url": GEO_EXPRESSION_URL,
        "dir_template": DIR_TEMPLATE,
        "dry_run": dry_run,
    }
    segs = _series_table(index, seg_uids, out)
    if dry_run:
        studies = set(segs["StudyInstanceUID"])
        ct_uids = index[(index["Modality"] == "CT") & index["StudyInstanceUID"].isin(studies)]
        cts = _series_table(index, list(ct_uids["SeriesInstanceUID"]), out)
        manifest["ct_series_upper_bound"] = list(cts["SeriesInstanceUID"])
        manifest["size_mb_upper_bound"] = float(
            cts["series_size_MB"].sum() + segs["series_size_MB"].sum()
        )
        manifest["series"] = _series_records(pd.concat([segs, cts]))
        return manifest

    if client is None:
        from idc_index import index as idc_index

        client = idc_index.IDCClient()
    out.mkdir(parents=True, exist_ok=True)
    _download_series(client, out, segs, progress)
    seg_files = [
        p for r in segs.itertuples(index=False) for p in _series_files(series_folder(out, r))
    ]
    refs = _referenced_ct_series(seg_files)
    ct_uids = sorted(set().union(*refs.values()))
    known = set(index["SeriesInstanceUID"])
    absent = sorted(set(ct_uids) - known)
    if absent:
        raise CohortError(
            f"SEG files reference CT series absent from the IDC index: {absent[:3]} "
            f"(e.g. {next(f for f, u in refs.items() if u & set(absent))})"
        )
    cts = _series_table(index, ct_uids, out)
    _download_series(client, out, cts, progress)
    expr = out / GEO_EXPRESSION_URL.rsplit("/", 1)[1]
    if not expr.is_file() or expr.stat().st_size == 0:
        download_url(GEO_EXPRESSION_URL, expr)
    manifest["ct_series"] = ct_uids
    manifest["expression_file"] = expr.name
    manifest["series"] = _series_records(pd.concat([segs, cts]))
    manifest["citations"] = write_citations(out, index, seg_uids + ct_uids, client).name
    write_json(out / "fetch_manifest.json", manifest)
    return manifest


def describe(manifest: dict) -> str:
    """The selection of a :func:`fetch` manifest as text: one line per patient, then totals."""
    series = pd.DataFrame(
        manifest["series"],
        columns=["patient", "modality", "series_uid", "files", "size_mb", "complete"],
    )
    ct_word = "CT (upper bound)" if manifest["dry_run"] else "CT"
    lines = [f"{'patient':<10} {'SEG':>4} {ct_word:>17} {'files':>7} {'MB':>9}  already here"]
    for patient, grp in series.groupby("patient", sort=True):
        done = int(grp["complete"].sum())
        lines.append(
            f"{patient:<10} {(grp.modality == 'SEG').sum():>4} {(grp.modality == 'CT').sum():>17} "
            f"{int(grp['files'].sum()):>7} {grp['size_mb'].sum():>9.1f}  "
            f"{done} of {len(grp)} series"
        )
    left = series[~series["complete"]]
    lines += [
        "",
        f"{len(manifest['patients'])} patients, {(series.modality == 'SEG').sum()} SEG series, "
        + ("up to " if manifest["dry_run"] else "")
        + f"{(series.modality == 'CT').sum()} CT series: {int(series['files'].sum())} files, "
        f"{series['size_mb'].sum() / 1000:.1f} GB",
        f"already complete here: {len(series) - len(left)} series; left to download: "
        f"{left['size_mb'].sum() / 1000:.1f} GB and the GEO expression table",
    ]
    return "\n".join(lines)
