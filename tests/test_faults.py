"""Planted faults in a copy of the small phantom: each bad file drops one patient with a reason
naming the patient, the file and what was expected; the other patients are curated; the
console lists every drop; optional inputs that fail are reported and skipped; nothing raises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from radiolib import cli
from radiolib.data import phantom as ph


def _series(root: Path, pid: str, kind: str) -> Path:
    return next((root / ph.COLLECTION / pid).glob(f"*/{kind}_*"))


def _rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _without_rows(root: Path, pid: str) -> str:
    seg = next(_series(root, pid, "SEG").glob("*.dcm"))
    _rewrite(seg, lambda ds: delattr(ds, "Rows"))
    return seg.name


def _frame_count_off(root: Path, pid: str) -> str:
    seg = next(_series(root, pid, "SEG").glob("*.dcm"))

    def fewer(ds: pydicom.Dataset) -> None:  # the pixels then hold one frame too many
        ds.NumberOfFrames = int(ds.NumberOfFrames) - 1

    _rewrite(seg, fewer)
    return seg.name


def _truncated_ct(root: Path, pid: str) -> str:
    files = sorted(_series(root, pid, "CT").glob("*.dcm"))
    victim = files[len(files) // 2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 4000])
    return victim.name


def _missing_ct_slice(root: Path, pid: str) -> str:
    files = sorted(
        _series(root, pid, "CT").glob("*.dcm"), key=lambda f: pydicom.dcmread(f).InstanceNumber
    )
    files[len(files) // 2].unlink()
    return files[len(files) // 2 - 1].name  # the gap is named by the slices around it


def _ct_gone(root: Path, pid: str) -> str:
    shutil.rmtree(_series(root, pid, "CT"))
    return _series(root, pid, "SEG").name


def _relabelled_mr(root: Path, pid: str) -> str:
    folder = _series(root, pid, "CT")
    for f in folder.glob("*.dcm"):
        _rewrite(f, lambda ds: setattr(ds, "Modality", "MR"))
    return pid  # the reason names the patient's folder


def _not_in_expression(root: Path, pid: str) -> str:
    path = root / ph.EXPRESSION_FILE
    table = pd.read_csv(path, sep="\t", index_col=0, dtype=str, keep_default_na=False)
    table.drop(columns=[pid]).to_csv(path, sep="\t", lineterminator="\n")
    return pid


# fault -> (how it is planted, words the reason must hold)
FAULTS = {
    "SEG without Rows": (_without_rows, "has no Rows element; expected the frame size"),
    "SEG frame count": (_frame_count_off, "expected NumberOfFrames x Rows x Columns"),
    "truncated CT slice": (_truncated_ct, "truncated: pixel data needs"),
    "CT slice missing": (_missing_ct_slice, "has missing slice(s) (1 absent)"),
    "CT series gone": (_ct_gone, "no CT series (DICOM files of modality SEG only)"),
    "series relabelled MR": (_relabelled_mr, "no CT series (DICOM files of modality MR, SEG"),
    "not in the expression table": (_not_in_expression, "no expression (not a sample column"),
}


@pytest.fixture(scope="module")
def faulty(small_phantom, tmp_path_factory):
    """A copy of the small phantom with one fault per patient (three patients stay whole), an
    unreadable AIM file, a binary clinical table and a stray unreadable DICOM file."""
    source, _ = small_phantom
    raw = tmp_path_factory.mktemp("faults") / "raw"
    shutil.copytree(source, raw)
    truth = ph.load_truth(raw)
    no_seg, no_expr = truth.params["no_seg"][0], truth.params["no_expression"][0]
    whole = [p for p in truth.patients.index if p not in (no_seg, no_expr)]
    expected = {
        no_seg: ("no SEG", no_seg),
        no_expr: ("no expression", no_expr),
    }
    for (plant, words), pid in zip(FAULTS.values(), whole, strict=False):
        expected[pid] = (words, plant(raw, pid))
    good = whole[len(FAULTS) :]
    (raw / "annotations").mkdir()
    (raw / "annotations" / "reader1.xml").write_bytes(b"\x00\xff\xfe<ImageAnnotation")
    (raw / ph.CLINICAL_FILE).write_bytes(bytes(range(256)) * 8)
    (raw / "stray.dcm").write_bytes(b"DICM but not really")
    return raw, expected, good


def test_each_fault_drops_its_patient_and_the_others_are_curated(faulty, capsys):
    raw, expected, good = faulty
    out = raw.parent / "curated"
    code = cli.main(["curate", "--data", str(raw), "--out", str(out), "--profile", "smoke"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Traceback" not in printed.out + printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["subjects_curated"] == len(good) == 3
    assert counts["subjects_found"] == ph.load_truth(raw).patients.shape[0] == 12  # no "" patient
    assert counts["subjects_dropped"] + counts["subjects_skipped"] == len(expected) == 9
    assert json.loads((out / "manifest.json").read_text())["root"] == str(raw.resolve())

    lines = printed.out.splitlines()
    assert "9 patient(s) left out:" in lines
    for pid, (words, file_part) in expected.items():
        mine = [line for line in lines if line.startswith(f"  {pid}: ")]
        assert len(mine) == 1, (pid, printed.out)
        assert words in mine[0] and file_part in mine[0], (pid, mine[0])
    # optional inputs that cannot be read are reported and left out; the stray file is no patient
    ignored = [line for line in lines if line.startswith("ignored file ")]
    assert any("reader1.xml" in line and "AIM annotation skipped" in line for line in ignored)
    assert any(ph.CLINICAL_FILE in line and "clinical table skipped" in line for line in ignored)
    assert any("stray.dcm" in line for line in ignored)
    assert manifest["skipped_inputs"] and len(ignored) == 3


def test_no_other_source_replaces_the_result_and_bad_outputs_are_named(
    faulty, small_phantom, capsys
):
    raw, _, _ = faulty
    out = raw.parent / "curated"
    if not (out / "manifest.json").is_file():
        pytest.skip("needs the curated folder of the previous test")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = small_phantom[0]
    args = ["curate", "--data", str(other), "--out", str(out), "--profile", "smoke"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert f"curated from {raw.resolve()}" in err and "--replace" in err
    # --out naming a file, and a phantom pointed at a folder that is not its own
    table = raw / ph.EXPRESSION_FILE
    assert cli.main(["curate", "--data", str(raw), "--out", str(table), "--profile", "smoke"]) == 1
    assert f"curated cohort folder {table} is a file" in capsys.readouterr().err
    assert cli.main(["phantom", "--out", str(out), "--patients", "4", "--matrix", "64"]) == 1
    assert "refusing to write a phantom" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
