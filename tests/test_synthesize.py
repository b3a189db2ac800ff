"""radiolib synthesize: a trained GAN's nodule as NIfTI and DICOM (CT + SEG), read back by
radiolib's own loaders, SimpleITK and highdicom; bad input named, nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import torch

from radiolib import cli
from radiolib import synthesize as synth
from radiolib.data import dicom
from radiolib.data.geometry import window
from radiolib.synthesize import load_run, paint, synthesize, to_hu

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 4-patient phantom, curated at smoke size, a proposed GAN trained for 2 steps and an
    inpainting GAN for 1."""
    from radiolib.config import get_profile
    from radiolib.data.curate import curate_cohort
    from radiolib.data.phantom import write_phantom
    from radiolib.train import train_from_args

    root = tmp_path_factory.mktemp("synth")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_phantom(root / "raw", patients=4, matrix=96)
        cfg = get_profile("smoke", {"train.steps": 2})
        curate_cohort(root / "raw", root / "curated", cfg.curation, progress=False)
        train_from_args("proposed", root / "curated", cfg, root / "run", seed=0, device="cpu")
        one = get_profile("smoke", {"train.steps": 1})
        train_from_args("inpainting", root / "curated", one, root / "inpaint", 0, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return root


def _background_row(cohort, k: int) -> pd.Series:
    s = cohort.slices
    return s[(s.kind == "background") & (s["index"] == k)].iloc[0]


def _ct_folder(study: Path, patient: str) -> Path:
    return next((study / "raw" / "nsclc_radiogenomics" / patient).glob("*/CT_*"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_curated_background_as_nifti_and_dicom_read_back(study, tmp_path, monkeypatch):
    run = load_run(study / "run")
    cohort, params = run.cohort, run.curation
    k, donor = 3, cohort.patients[1]
    lo, hi = params["hu_window"]

    # values: the generator's output on this background and these genes, back in HU
    plain = synthesize(study / "run", donor, k, tmp_path / "plain", seed=7)
    image, mask = paint(run.gan, cohort.background_images[k], cohort.genes[1], seed=7)
    np.testing.assert_array_equal(plain.hu, np.rint(lo + image * (hi - lo)).astype(np.int16))
    np.testing.assert_array_equal(plain.mask, mask)
    assert lo <= plain.hu.min() and plain.hu.max() <= hi
    np.testing.assert_array_equal(plain.background_hu, to_hu(cohort.background_images[k], (lo, hi)))
    seg_file = plain.files["seg_dicom"]
    np.testing.assert_array_equal(
        dicom.decode_seg(seg_file, [plain.files["ct_dicom"]]), plain.mask[None]
    )

    # a generator trained for 2 steps may paint no mask: the files are read back with a disk
    yy, xx = np.mgrid[:32, :32]
    disk = ((yy - 12) ** 2 + (xx - 19) ** 2 <= 20).astype(np.uint8)
    monkeypatch.setattr(synth, "paint", lambda *a, **kw: (paint(*a, **kw)[0], disk))
    res = synthesize(study / "run", donor, k, tmp_path / "out", seed=7)
    np.testing.assert_array_equal(res.hu, plain.hu)
    np.testing.assert_array_equal(res.mask, disk)

    # geometry: the square curation cut around the background centre, outer edges kept
    row = _background_row(cohort, k)
    sp, n, size = params["spacing_mm"], round(params["voi_mm"] / params["spacing_mm"]), 32
    centre = np.array([row.centre_x_mm, row.centre_y_mm])
    first_edge, last_edge = centre - (n // 2 + 0.5) * sp, centre + (n - n // 2 - 0.5) * sp
    nii = sitk.ReadImage(str(tmp_path / "out" / "synthetic_ct.nii.gz"))
    px = nii.GetSpacing()[0]
    assert nii.GetSize() == (size, size, 1) and nii.GetSpacing() == pytest.approx((px, px, sp))
    # NIfTI keeps the geometry in float32: equal to 0.1 um
    origin = np.array(nii.GetOrigin()[:2])
    np.testing.assert_allclose(origin - px / 2, first_edge, rtol=0, atol=1e-4)
    np.testing.assert_allclose(origin + (size - 0.5) * px, last_edge, rtol=0, atol=1e-4)
    assert nii.GetOrigin()[2] == pytest.approx(row.z_mm)
    assert nii.GetDirection() == pytest.approx(np.eye(3).ravel())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nii)[0], res.hu)
    nii_mask = sitk.ReadImage(str(tmp_path / "out" / "synthetic_mask.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nii_mask)[0], res.mask)
    assert nii_mask.GetOrigin() == pytest.approx(nii.GetOrigin())

    # the background NIfTI lies where the raw CT shows the same anatomy (1 px off: r < 0.9)
    bg = sitk.ReadImage(str(tmp_path / "out" / "background_ct.nii.gz"))
    ct_dir = _ct_folder(study, row.patient_id)
    raw = dicom.load_ct(sorted(ct_dir.glob("*.dcm")), row.patient_id)
    there = sitk.Resample(raw, bg, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    a = window(sitk.GetArrayFromImage(there)[0], (lo, hi))
    b = window(sitk.GetArrayFromImage(bg)[0], (lo, hi))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98

    # DICOM CT, read by radiolib's loader: HU after the rescale, same geometry
    record = json.loads((tmp_path / "out" / "synthesis.json").read_text())
    ct_file = tmp_path / "out" / record["files"]["ct_dicom"]
    seg_file = tmp_path / "out" / record["files"]["seg_dicom"]
    ct = dicom.load_ct([ct_file], "synthetic")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct)[0], res.hu.astype(np.float32))
    assert ct.GetOrigin() == pytest.approx(nii.GetOrigin(), abs=1e-4)
    assert ct.GetSpacing() == pytest.approx(nii.GetSpacing(), abs=1e-6)
    header = pydicom.dcmread(ct_file)
    assert header.Modality == "CT" and header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert float(header.RescaleIntercept) == -1024 and header.PatientID == row.patient_id
    assert [float(v) for v in header.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]

    # DICOM SEG: decoded onto that CT by radiolib, and it references the CT image
    np.testing.assert_array_equal(dicom.decode_seg(seg_file, [ct_file]), res.mask[None])
    seg = hd.seg.segread(seg_file)
    assert seg.get_source_image_uids() == [
        (header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)
    ]
    frame_refs = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert frame_refs.SourceImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert seg.FrameOfReferenceUID == header.FrameOfReferenceUID
    assert seg.StudyInstanceUID == header.StudyInstanceUID and seg.PatientID == header.PatientID
    by_source = seg.get_pixels_by_source_instance([header.SOPInstanceUID])
    np.testing.assert_array_equal(by_source[0, :, :, 0], res.mask)

    # genes.csv is the vector used: fed back, it paints the same slice
    again = synthesize(
        study / "run", str(tmp_path / "out" / "genes.csv"), k, tmp_path / "o2", seed=7
    )
    np.testing.assert_array_equal(again.hu, res.hu)


def test_ct_series_and_position_cut_as_curation_does(study, tmp_path, capsys):
    cohort = load_run(study / "run").cohort
    k = 5
    row = _background_row(cohort, k)
    ct_dir = _ct_folder(study, row.patient_id)
    position = f"{row.centre_x_mm},{row.centre_y_mm},{row.z_mm}"
    argv = ["synthesize", "--checkpoint", str(study / "run"), "--genes", cohort.patients[0]]
    argv += ["--background", str(ct_dir), "--position", position, "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    assert "written to" in capsys.readouterr().out
    bg = sitk.ReadImage(str(tmp_path / "o" / "background_ct.nii.gz"))
    window_hu = load_run(study / "run").curation["hu_window"]
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(bg)[0], to_hu(cohort.background_images[k], window_hu)
    )
    curated = synthesize(study / "run", cohort.patients[0], k, tmp_path / "c")
    assert bg.GetOrigin() == pytest.approx(curated.geometry.origin)
    # the synthetic slice joins the source study, in its frame of reference
    record = json.loads((tmp_path / "o" / "synthesis.json").read_text())
    ours = pydicom.dcmread(tmp_path / "o" / record["files"]["ct_dicom"])
    source = pydicom.dcmread(next(ct_dir.glob("*.dcm")), stop_before_pixels=True)
    assert ours.StudyInstanceUID == source.StudyInstanceUID
    assert ours.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ours.SeriesInstanceUID != source.SeriesInstanceUID


def _gene_file(study: Path, path: Path, change) -> str:
    from radiolib.data.curated import load_curated

    cohort = load_curated(study / "curated")
    table = pd.DataFrame({"gene": cohort.gene_names, "value": cohort.genes[0]})
    change(table).to_csv(path, index=False)
    return str(path)


def _with_nan(t: pd.DataFrame) -> pd.DataFrame:
    t.loc[2, "value"] = np.nan
    return t


def _other_version(study: Path, folder: Path) -> str:
    ckpt = torch.load(study / "run" / "checkpoint.pt", weights_only=True)
    for net in ("generator", "generator_ema"):
        if ckpt.get(net) is not None:
            ckpt[net] = {f"old_{k}": v for k, v in ckpt[net].items()}
    folder.mkdir()
    torch.save(ckpt, folder / "checkpoint.pt")
    return str(folder)


BAD = {
    "unknown patient": (
        lambda s, d: {"genes": "R01-999"},
        r"--genes 'R01-999': neither a patient of the curated cohort",
    ),
    "gene file with NaN": (
        lambda s, d: {"genes": _gene_file(s, d / "nan.csv", _with_nan)},
        r"nan\.csv: no finite value for genes \S+",
    ),
    "gene file with a wrong gene": (
        lambda s, d: {
            "genes": _gene_file(
                s, d / "wrong.csv", lambda t: t.replace({"gene": {t.gene[0]: "XYZ"}})
            )
        },
        r"wrong\.csv: not the model's \d+ genes; missing \w+; unknown XYZ",
    ),
    "missing series": (
        lambda s, d: {"background": str(d / "nowhere"), "position": "0,0,0"},
        r"nowhere: no such CT series folder",
    ),
    "folder without CT": (
        lambda s, d: {"background": str(s / "curated"), "position": "0,0,0"},
        r"curated: no CT series in this folder",
    ),
    "position outside": (
        lambda s, d: {"background": str(_ct_folder(s, "R01-001")), "position": "0,0,9000"},
        r"--position 0, 0, 9000 mm lies outside the CT series in .*CT_.*z -?\d",
    ),
    "bad position": (
        lambda s, d: {"background": str(_ct_folder(s, "R01-001")), "position": "1,2"},
        r"--position '1,2': expected three numbers",
    ),
    "folder without position": (
        lambda s, d: {"background": str(_ct_folder(s, "R01-001"))},
        r"not a curated background index; a CT series folder needs --position",
    ),
    "background index out of range": (
        lambda s, d: {"background": "100000"},
        r"--background 100000: the curated cohort at .* has background slices 0 to \d+",
    ),
    "checkpoint not found": (
        lambda s, d: {"checkpoint": str(d / "norun")},
        r"--checkpoint .*norun: no such run folder",
    ),
    "inpainting run": (
        lambda s, d: {"checkpoint": str(s / "inpaint")},
        r"inpaint: the inpainting GAN fills a hole and takes no genes",
    ),
    "checkpoint of other code": (
        lambda s, d: {"checkpoint": _other_version(s, d / "old")},
        r"old: its weights do not fit the proposed GAN of this radiolib version",
    ),
    "folder that is no run": (
        lambda s, d: {"checkpoint": str(s / "curated")},
        r"no checkpoint in .*curated",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_named_and_nothing_is_written(study, tmp_path, capsys, case):
    make, message = BAD[case]
    args = {
        "checkpoint": str(study / "run"),
        "genes": "R01-001",
        "background": "0",
        **make(study, tmp_path),
    }
    out = tmp_path / "out"
    argv = ["synthesize", "--out", str(out)]
    for k, v in args.items():
        argv += [f"--{k}", v]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("radiolib synthesize: error:"), err
    assert re.search(message, err), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_an_earlier_synthesis_survives_a_failed_one_and_other_folders_are_refused(
    study, tmp_path, capsys
):
    out = tmp_path / "out"
    synthesize(study / "run", "R01-001", 0, out)
    before = _files(out)
    assert (
        cli.main(
            [
                "synthesize",
                "--checkpoint",
                str(study / "run"),
                "--genes",
                "R01-999",
                "--background",
                "0",
                "--out",
                str(out),
            ]
        )
        == 1
    )
    assert _files(out) == before
    replaced = synthesize(study / "run", "R01-002", 1, out)  # an earlier synthesis is replaced
    assert json.loads((out / "synthesis.json").read_text())["genes"] == "patient R01-002"
    assert replaced.out == out
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match=r"notes exists and holds no earlier synthesis"):
        synthesize(study / "run", "R01-001", 0, other)
    assert _files(other) == {"mine.txt": b"keep"}
