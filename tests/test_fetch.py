"""Selection of the real cohort from the IDC index shipped with idc-index-data (offline), and the
download plan of radiolib.data.fetch with a stand-in client (no network in tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from radiolib.data import fetch, nsclc
from radiolib.errors import CohortError
from radiolib.io import read_json

DATA = Path(__file__).parent / "data"
IDC_SEG_SLICE = DATA / "nsclc" / "idc_v25_seg_series.csv"
NO_SEG = [f"R01-{n}" for n in (147, 148, 149, 150, 151, 152, 153, 154, 156, 157, 158, 159, 160)]


@pytest.fixture(scope="module")
def selection() -> pd.DataFrame:
    return fetch.select_patients()


def test_rnaseq_samples_match_series_matrix():
    s = fetch.rnaseq_samples()
    m = nsclc.read_series_matrix(DATA / "nsclc" / "GSE103584_series_matrix.txt")
    assert len(s) == 130 and s.index.is_unique
    assert list(s.index) == list(m.index)
    assert (s["geo_accession"] == m["geo_accession"]).all()


def test_117_of_130_rnaseq_patients_have_a_tcia_seg(selection):
    assert len(selection) == 117
    assert selection.attrs["without_seg"] == NO_SEG
    assert selection.index.is_monotonic_increasing
    assert (selection["n_tcia_seg"] == 1).all()
    descriptions = set(selection["seg_description"])
    assert "3D Slicer segmentation result" in descriptions
    assert all(d == "3D Slicer segmentation result" or d.startswith("ePAD") for d in descriptions)


def test_selection_agrees_with_exported_idc_v25_table(selection):
    table = pd.read_csv(IDC_SEG_SLICE)
    tcia = fetch.tcia_seg_series(table)
    assert len(tcia) == 144 and set(tcia.PatientID) <= {p for p in table.PatientID}
    assert tcia.PatientID.str.startswith("R01-").all()
    assert (table.source_DOI.str.contains("zenodo")).sum() == 371  # AI SEGs, never chosen
    other = fetch.select_patients(table)
    assert list(other.index) == list(selection.index)
    assert list(other.seg_series_uid) == list(selection.seg_series_uid)


def test_index_without_columns_refused():
    with pytest.raises(CohortError, match="lacks columns"):
        fetch.select_patients(pd.DataFrame({"PatientID": ["R01-001"]}))


class FakeClient:
    """Records download requests; 'downloads' a SEG (a real highdicom SEG file) per SEG series,
    referencing a real CT series of the same study in the IDC index."""

    def __init__(self, index: pd.DataFrame):
        self.index = index
        self.calls: list[dict] = []

    def download_from_selection(self, downloadDir, seriesInstanceUID, dirTemplate, **kw):
        self.calls.append({"uids": list(seriesInstanceUID), "template": dirTemplate})
        for uid in seriesInstanceUID:
            row = self.index[self.index.SeriesInstanceUID == uid].iloc[0]
            if row.Modality != "SEG":
                continue
            ct = self.index[
                (self.index.StudyInstanceUID == row.StudyInstanceUID)
                & (self.index.Modality == "CT")
            ].sort_values("instanceCount")
            ds = pydicom.dcmread(DATA / "dicom_seg" / "seg_image_ct_binary.dcm")
            ds.ReferencedSeriesSequence[0].SeriesInstanceUID = ct.SeriesInstanceUID.iloc[-1]
            d = Path(downloadDir) / "nsclc_radiogenomics" / row.PatientID
            d = d / row.StudyInstanceUID / f"SEG_{uid}"
            d.mkdir(parents=True, exist_ok=True)
            ds.save_as(d / "1.dcm")


def test_fetch_downloads_seg_then_referenced_ct_then_geo(tmp_path, selection):
    index = fetch.read_idc_index()
    client = FakeClient(index)
    urls = []

    def fake_url(url, dest):
        urls.append(url)
        dest.write_bytes(b"gz")

    out = tmp_path / "raw"
    man = fetch.fetch(out, patients=["R01-004", "R01-003"], client=client, download_url=fake_url)
    seg_uids = selection.loc["R01-003"].seg_series_uid + selection.loc["R01-004"].seg_series_uid
    assert client.calls[0] == {"uids": seg_uids, "template": fetch.DIR_TEMPLATE}
    assert len(client.calls) == 2 and len(client.calls[1]["uids"]) == 2
    ct = index.set_index("SeriesInstanceUID").loc[client.calls[1]["uids"]]
    assert (ct.Modality == "CT").all() and sorted(ct.PatientID) == ["R01-003", "R01-004"]
    assert urls == [fetch.GEO_EXPRESSION_URL]
    assert (out / "GSE103584_R01_NSCLC_RNAseq.txt.gz").read_bytes() == b"gz"
    assert read_json(out / "fetch_manifest.json") == man
    assert man["patients"] == ["R01-003", "R01-004"]
    # a second run keeps the expression file already there
    fetch.fetch(out, patients=["R01-003"], client=FakeClient(index), download_url=fake_url)
    assert len(urls) == 1


def test_fetch_dry_run_and_unknown_patient(tmp_path):
    class NoClient:
        def download_from_selection(self, *a, **k):
            raise AssertionError("dry run must not download")

    man = fetch.fetch(tmp_path, patients=["R01-003"], dry_run=True, client=NoClient())
    assert len(man["seg_series"]) == 1 and len(man["ct_series_upper_bound"]) >= 1
    assert man["size_mb_upper_bound"] > 0
    assert not (tmp_path / "fetch_manifest.json").exists()
    with pytest.raises(CohortError, match=r"R01-147.*not RNA-seq patients with a TCIA SEG"):
        fetch.fetch(tmp_path, patients=["R01-147"], dry_run=True)
