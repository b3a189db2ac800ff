"""Selection of the real cohort from the IDC index shipped with idc-index-data (offline), and the
download plan of radiolib.data.fetch with a stand-in client (no network in tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from radiolib.data import fetch, tables
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
    m = tables.read_series_matrix(DATA / "nsclc" / "GSE103584_series_matrix.txt")
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


SEG_FILE = DATA / "dicom_seg" / "seg_image_ct_binary.dcm"
CT_FILES = 3  # instances per CT series in the test index (the real ones have hundreds)


@pytest.fixture(scope="module")
def test_index() -> pd.DataFrame:
    """The real index with sizes a stand-in client can write: each SEG is the test SEG file,
    each CT series three files of 10 bytes."""
    index = fetch.read_idc_index().copy()
    seg, ct = index.Modality == "SEG", index.Modality == "CT"
    index.loc[seg, "instanceCount"] = 1
    index.loc[seg, "series_size_MB"] = SEG_FILE.stat().st_size / 1e6
    index.loc[ct, "instanceCount"] = CT_FILES
    index.loc[ct, "series_size_MB"] = CT_FILES * 10 / 1e6
    return index


class FakeClient:
    """Records download requests; 'downloads' a SEG (a real highdicom SEG file) per SEG series,
    referencing a real CT series of the same study in the IDC index, and three small files per
    CT series. ``fail_after``: series written before the connection 'drops' (the next one is
    left half written)."""

    def __init__(self, index: pd.DataFrame, fail_after: int | None = None, doi_org: bool = True):
        self.index = index
        self.calls: list[dict] = []
        self.cited: list[str] = []
        self.fail_after = fail_after
        self.doi_org = doi_org
        self.written = 0

    def download_from_selection(self, downloadDir, seriesInstanceUID, dirTemplate, **kw):
        self.calls.append({"uids": list(seriesInstanceUID), "template": dirTemplate})
        assert kw.get("use_s5cmd_sync"), "a download must resume file by file"
        for uid in seriesInstanceUID:
            row = self.index[self.index.SeriesInstanceUID == uid].iloc[0]
            d = Path(downloadDir) / "nsclc_radiogenomics" / row.PatientID
            d = d / row.StudyInstanceUID / f"{row.Modality}_{uid}"
            d.mkdir(parents=True, exist_ok=True)
            if self.fail_after is not None and self.written == self.fail_after:
                (d / "0.dcm").write_bytes(b"x" * 10)  # one file of the series, then the drop
                raise ConnectionError("connection lost")
            self.written += 1
            if row.Modality == "CT":
                for i in range(CT_FILES):
                    (d / f"{i}.dcm").write_bytes(b"x" * 10)
                continue
            ct = self.index[
                (self.index.StudyInstanceUID == row.StudyInstanceUID)
                & (self.index.Modality == "CT")
            ].sort_values("SeriesInstanceUID")
            ds = pydicom.dcmread(SEG_FILE)
            ds.ReferencedSeriesSequence[0].SeriesInstanceUID = ct.SeriesInstanceUID.iloc[-1]
            ds.save_as(d / "1.dcm")

    def citations_from_selection(self, seriesInstanceUID):
        if not self.doi_org:
            raise ConnectionError("doi.org unreachable")
        self.cited = list(seriesInstanceUID)
        return ["Bakr, S. et al. (2017). Data for NSCLC Radiogenomics Collection [Data set].\n"]


def test_fetch_downloads_seg_then_referenced_ct_then_geo(tmp_path, selection, test_index):
    client = FakeClient(test_index)
    urls = []

    def fake_url(url, dest):
        urls.append(url)
        dest.write_bytes(b"gz")

    out = tmp_path / "raw"
    man = fetch.fetch(
        out,
        patients=["R01-004", "R01-003"],
        client=client,
        download_url=fake_url,
        index=test_index,
    )
    seg_uids = selection.loc["R01-003"].seg_series_uid + selection.loc["R01-004"].seg_series_uid
    assert client.calls[0] == {"uids": seg_uids, "template": fetch.DIR_TEMPLATE}
    assert len(client.calls) == 2 and len(client.calls[1]["uids"]) == 2
    ct = test_index.set_index("SeriesInstanceUID").loc[client.calls[1]["uids"]]
    assert (ct.Modality == "CT").all() and sorted(ct.PatientID) == ["R01-003", "R01-004"]
    assert urls == [fetch.GEO_EXPRESSION_URL]
    assert (out / "GSE103584_R01_NSCLC_RNAseq.txt.gz").read_bytes() == b"gz"
    assert read_json(out / "fetch_manifest.json") == man
    assert man["patients"] == ["R01-003", "R01-004"]
    assert len(man["series"]) == 4 and not any(s["complete"] for s in man["series"])
    # the citations of every downloaded series lie beside the data
    assert sorted(client.cited) == sorted(seg_uids + client.calls[1]["uids"])
    cited = (out / "CITATIONS.md").read_text()
    assert "https://doi.org/10.7937/k9/tcia.2017.7hs46erv" in cited
    assert "GSE103584" in cited and "10.1038/sdata.2018.202" in cited
    assert "- Bakr, S. et al. (2017). Data for NSCLC Radiogenomics Collection" in cited
    # a second run downloads nothing: every series and the expression file are complete
    again = FakeClient(test_index)
    man = fetch.fetch(
        out, patients=["R01-003"], client=again, download_url=fake_url, index=test_index
    )
    assert again.calls == [] and len(urls) == 1
    assert all(s["complete"] for s in man["series"])


def test_interrupted_fetch_resumes_with_what_is_missing(tmp_path, test_index):
    out = tmp_path / "raw"
    patients = ["R01-003", "R01-004", "R01-005"]
    dropped = FakeClient(test_index, fail_after=4)  # 3 SEG, 1 CT, then half of the next CT
    with pytest.raises(ConnectionError):
        fetch.fetch(
            out,
            patients=patients,
            client=dropped,
            index=test_index,
            download_url=lambda url, dest: dest.write_bytes(b"gz"),
        )
    ct_uids = dropped.calls[1]["uids"]
    plan = fetch.fetch(out, patients=patients, dry_run=True, index=test_index)
    complete = {s["series_uid"] for s in plan["series"] if s["complete"]}
    assert set(dropped.calls[0]["uids"]) | {ct_uids[0]} <= complete
    assert ct_uids[1] not in complete  # one file of three: not complete
    resumed = FakeClient(test_index)
    man = fetch.fetch(
        out,
        patients=patients,
        client=resumed,
        index=test_index,
        download_url=lambda url, dest: dest.write_bytes(b"gz"),
    )
    assert resumed.calls == [{"uids": ct_uids[1:], "template": fetch.DIR_TEMPLATE}]
    assert man["ct_series"] == sorted(ct_uids)


def test_incomplete_download_names_patient_and_folder(tmp_path, test_index):
    class Lazy(FakeClient):
        def download_from_selection(self, downloadDir, seriesInstanceUID, dirTemplate, **kw):
            pass  # s5cmd returned without writing anything

    with pytest.raises(CohortError, match=r"patient R01-003: SEG series .* has 0 of 1 files"):
        fetch.fetch(tmp_path, patients=["R01-003"], client=Lazy(test_index), index=test_index)


def test_citations_without_doi_org_still_list_the_dois(tmp_path, test_index):
    client = FakeClient(test_index, doi_org=False)
    man = fetch.fetch(
        tmp_path,
        patients=["R01-003"],
        client=client,
        index=test_index,
        download_url=lambda url, dest: dest.write_bytes(b"gz"),
    )
    cited = (tmp_path / man["citations"]).read_text()
    assert "https://doi.org/10.7937/k9/tcia.2017.7hs46erv" in cited
    assert "doi.org could not be reached (ConnectionError)" in cited


def test_cli_dry_run_prints_the_selection(tmp_path, capsys):
    from radiolib import cli

    assert cli.main(["fetch", "--out", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    total, here = printed.strip().splitlines()[-3:-1]
    assert total.startswith("117 patients, 117 SEG series, up to ") and total.endswith(" GB")
    assert here.startswith("already complete here: 0 series; left to download: ")
    assert (
        cli.main(["fetch", "--out", str(tmp_path), "--dry-run", "--patients", "R01-004,R01-003"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["R01-003", "R01-004"]
    assert lines[4].startswith("2 patients, 2 SEG series, up to ")
    assert "dry run: nothing downloaded" in lines[-1] and not list(tmp_path.iterdir())
    assert cli.main(["fetch", "--out", str(tmp_path), "--dry-run", "--patients", "R01-147"]) == 1
    assert "R01-147" in capsys.readouterr().err


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
