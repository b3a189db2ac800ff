"""Loaders of radiolib.data.nsclc, .dicom and .tables on real files: pydicom's CT test series,
highdicom's SEG test files, the TCIA clinical table, TCIA AIM files and the GEO series matrix
(tests/data)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.pixels import pack_bits
from pydicom.uid import generate_uid

from radiolib.data import dicom, nsclc, tables
from radiolib.errors import CohortError

DATA = Path(__file__).parent / "data"
SEG_DIR = DATA / "dicom_seg"
CT2 = ["17106", "17136", "17166", "17196"]  # 17106 lies 202.5 mm below the other three
CT2_SERIES = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"
CLINICAL = DATA / "nsclc" / "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv"
MATRIX = DATA / "nsclc" / "GSE103584_series_matrix.txt"


def ct2(name: str) -> Path:
    return Path(get_testdata_file(f"dicomdirtests/77654033/CT2/{name}"))


def copy_dicom(src: Path, dst: Path, patient_id: str, **changes) -> Path:
    """Copy a real DICOM file, giving it the cohort's patient id (and other header changes)."""
    ds = pydicom.dcmread(src)
    ds.PatientID = patient_id
    for k, v in changes.items():
        setattr(ds, k, v)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def write_expression(path: Path, samples: list[str], rows: dict[str, list[str]]) -> Path:
    lines = ["\t" + "\t".join(samples)] + [g + "\t" + "\t".join(v) for g, v in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def add_ct2_patient(root: Path, pid: str, files=CT2[1:]) -> list[Path]:
    # the real CT and SEG share PatientID 77654033: check before renaming both
    assert pydicom.dcmread(ct2(files[0])).PatientID == "77654033"
    assert pydicom.dcmread(SEG_DIR / "seg_image_ct_binary.dcm").PatientID == "77654033"
    study = root / "nsclc_radiogenomics" / pid / "study"
    cts = [copy_dicom(ct2(n), study / f"CT_{CT2_SERIES}" / f"{n}.dcm", pid) for n in files]
    copy_dicom(SEG_DIR / "seg_image_ct_binary.dcm", study / "SEG_1" / "seg.dcm", pid)
    return cts


def add_ct_small_patient(root: Path, pid: str, seg: bool = True) -> Path:
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert pydicom.dcmread(ct).PatientID == "1CT1"
    out = copy_dicom(ct, root / pid / "ct" / "slice.dcm", pid)
    if seg:
        copy_dicom(SEG_DIR / "seg_image_ct_binary_single_frame.dcm", root / pid / "seg.dcm", pid)
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A cohort: R01-901 (CT2, 3 slices + SEG), R01-902 (CT_small + SEG), R01-903 expression
    only, R01-904 images without expression, plus the real clinical table and AIM files."""
    r = tmp_path / "cohort"
    add_ct2_patient(r, "R01-901")
    add_ct_small_patient(r, "R01-902")
    add_ct_small_patient(r, "R01-904")
    write_expression(
        r / "GSE103584_R01_NSCLC_RNAseq.txt",
        ["R01-901", "R01-902", "R01-903"],
        {"A1BG": ["1.5", "NA", "2"], "TP53": ["3", "4", "5e2"]},
    )
    shutil.copy(CLINICAL, r / CLINICAL.name)
    shutil.copytree(DATA / "aim", r / "aim")
    (r / "README.txt").write_text("not DICOM, skipped quietly")
    return r


# ------------------------------------------------------------------------------ CT


def test_ct_small_loads_as_hu():
    path = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(path)
    img = dicom.load_ct([path], "1CT1")
    arr = sitk.GetArrayFromImage(img)
    assert img.GetPixelID() == sitk.sitkFloat32 and arr.shape == (1, 128, 128)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(arr[0, 50, 50]) == pytest.approx(hu[50, 50])
    np.testing.assert_allclose(arr[0], hu)
    assert ds.RescaleIntercept == -1024 and arr.min() >= -1024
    assert img.GetSpacing() == pytest.approx((0.661468, 0.661468, 5.0))
    assert img.GetOrigin() == pytest.approx((-158.135803, -179.035797, -75.699997))


def test_ct2_series_sorted_and_irregular_spacing_refused(tmp_path):
    files = [ct2(n) for n in reversed(CT2[1:])]  # given in reverse order
    img = dicom.load_ct(files, "p")
    assert img.GetSize() == (16, 16, 3)
    assert img.GetSpacing()[2] == pytest.approx(1.25)
    assert img.GetOrigin()[2] == pytest.approx(103.019997)  # lowest slice first
    first = pydicom.dcmread(ct2("17136"))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(img)[0], first.pixel_array * 1.0 + float(first.RescaleIntercept)
    )
    # the real 4-slice series: 17106 lies 202.5 mm (162 steps) below the others
    with pytest.raises(
        CohortError,
        match=r"patient R01-9: CT series in .*CT2 has missing slice\(s\) \(161 absent\)",
    ):
        dicom.load_ct([ct2(n) for n in CT2], "R01-9")


def test_missing_slice_refused(tmp_path):
    src = Path(get_testdata_file("CT_small.dcm"))
    files = []
    for k, z in enumerate([0.0, 5.0, 10.0, 20.0]):  # the slice at 15 mm is missing
        ipp = [-158.135803, -179.035797, z]
        files.append(
            copy_dicom(
                src,
                tmp_path / "ser" / f"{k}.dcm",
                "R01-7",
                ImagePositionPatient=ipp,
                SOPInstanceUID=generate_uid(),
            )
        )
    with pytest.raises(CohortError, match=r"R01-7.*ser.*missing slice\(s\) \(1 absent\)"):
        dicom.load_ct(files, "R01-7")


def test_truncated_ct_file_named(tmp_path):
    src = ct2("17136")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(CohortError, match=r"R01-5: corrupt CT file .*bad\.dcm.*truncated"):
        dicom.load_ct([bad], "R01-5")


# ------------------------------------------------------------------------------ SEG


def highdicom_masks(seg_path: Path, sops: list[str], segments: list[int]) -> np.ndarray:
    seg = hd.seg.segread(seg_path)
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sops, segment_numbers=segments, combine_segments=False
    )
    return np.asarray(arr)  # (n, rows, cols, segments)


def test_decode_seg_binary_on_ct_grid():
    files = [ct2(n) for n in CT2]
    mask = dicom.decode_seg(SEG_DIR / "seg_image_ct_binary.dcm", files, patient_id="p")
    assert mask.shape == (4, 16, 16) and mask.dtype == np.uint8
    assert mask[0].sum() == 0  # slice 17106 has no frame
    assert mask.sum(axis=(1, 2)).tolist() == [0, 127, 256, 255]
    sops = [str(pydicom.dcmread(ct2(n)).SOPInstanceUID) for n in CT2[1:]]
    ref = highdicom_masks(SEG_DIR / "seg_image_ct_binary.dcm", sops, [1])[..., 0]
    np.testing.assert_array_equal(mask[1:], ref)


def test_decode_seg_two_segments_union_and_each():
    files = [ct2(n) for n in CT2]
    path = SEG_DIR / "seg_image_ct_binary_overlap.dcm"
    sops = [str(pydicom.dcmread(ct2(n)).SOPInstanceUID) for n in CT2]
    ref = highdicom_masks(path, sops, [1, 2])
    one = dicom.decode_seg(path, files, segments=1)
    two = dicom.decode_seg(path, files, segments=[2])
    union = dicom.decode_seg(path, files)
    np.testing.assert_array_equal(one, ref[..., 0])
    np.testing.assert_array_equal(two, ref[..., 1])
    np.testing.assert_array_equal(union, (ref[..., 0] | ref[..., 1]))
    assert one.sum(axis=(1, 2)).tolist() == [16] * 4 and two.sum(axis=(1, 2)).tolist() == [4] * 4
    assert union.sum() == (one | two).sum() < one.sum() + two.sum()  # they overlap
    with pytest.raises(CohortError, match=r"segments \[1, 2\], not \[3\]"):
        dicom.decode_seg(path, files, segments=3)


def test_decode_seg_frames_reordered_and_located_by_position(tmp_path):
    """Frames in reverse order, without SourceImageSequence: placed by ImagePositionPatient."""
    src = SEG_DIR / "seg_image_ct_binary_overlap.dcm"
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array[::-1].copy()
    groups = list(ds.PerFrameFunctionalGroupsSequence)[::-1]
    for g in groups:
        del g.DerivationImageSequence
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = pack_bits(frames)
    out = tmp_path / "reordered.dcm"
    ds.save_as(out)
    files = [ct2(n) for n in CT2]
    np.testing.assert_array_equal(
        dicom.decode_seg(out, files, segments=2), dicom.decode_seg(src, files, segments=2)
    )


def test_seg_frames_off_the_ct_grid_refused(tmp_path):
    """Frames shifted in-plane, or placed by position between the CT slices, are named."""
    src = SEG_DIR / "seg_image_ct_binary_overlap.dcm"
    files = [ct2(n) for n in CT2]
    ds = pydicom.dcmread(src)
    for g in ds.PerFrameFunctionalGroupsSequence:
        ipp = g.PlanePositionSequence[0].ImagePositionPatient
        g.PlanePositionSequence[0].ImagePositionPatient = [ipp[0] + 1.5, ipp[1], ipp[2]]
    ds.save_as(tmp_path / "shifted.dcm")
    with pytest.raises(CohortError, match=r"R01-4: SEG .*shifted\.dcm frames are shifted by 3\.1"):
        dicom.decode_seg(tmp_path / "shifted.dcm", files, patient_id="R01-4")

    ds = pydicom.dcmread(src)
    for g in ds.PerFrameFunctionalGroupsSequence:
        del g.DerivationImageSequence
        ipp = g.PlanePositionSequence[0].ImagePositionPatient
        g.PlanePositionSequence[0].ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 0.6]
    ds.save_as(tmp_path / "between.dcm")
    with pytest.raises(CohortError, match=r"between\.dcm has tumour on a frame that matches no"):
        dicom.decode_seg(tmp_path / "between.dcm", files, patient_id="R01-4")


def test_decode_fractional_seg_thresholded(tmp_path):
    src = SEG_DIR / "seg_image_ct_binary_single_frame.dcm"
    ds = pydicom.dcmread(src)
    binary = ds.pixel_array.astype(np.uint8)
    frac = (binary * 200).astype(np.uint8)
    frac[(binary == 0)] = 100  # below 0.5 * 255
    ds.SegmentationType = "FRACTIONAL"
    ds.SegmentationFractionalType = "PROBABILITY"
    ds.MaximumFractionalValue = 255
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = frac.tobytes()
    out = tmp_path / "frac.dcm"
    ds.save_as(out)
    ct = [Path(get_testdata_file("CT_small.dcm"))]
    mask = dicom.decode_seg(out, ct)
    np.testing.assert_array_equal(mask[0], binary)
    assert mask.sum() == 1832


def test_seg_of_absent_series_named(tmp_path):
    ct = [Path(get_testdata_file("CT_small.dcm"))]
    with pytest.raises(
        CohortError, match=rf"seg_image_ct_binary\.dcm references series {CT2_SERIES}"
    ):
        dicom.decode_seg(SEG_DIR / "seg_image_ct_binary.dcm", ct, patient_id="R01-3")


# ------------------------------------------------------------------------------ cohort


def test_open_cohort_and_load_scan(root):
    c = nsclc.open_cohort(root)
    assert c.patients == ["R01-901", "R01-902"]
    assert list(c.series.index) == c.patients
    row = c.series.loc["R01-901"]
    assert row.ct_series_uid == CT2_SERIES and len(row.ct_files) == 3
    assert row.seg_file.name == "seg.dcm"
    reasons = dict(zip(c.dropped.patient_id, c.dropped.reason, strict=True))
    assert reasons["R01-903"].startswith("no CT")
    assert reasons["R01-904"].startswith("no expression")
    assert reasons["R01-001"].startswith("no CT and no expression")  # clinical table only
    assert set(c.dropped.patient_id) | set(c.patients) >= set(c.clinical.index)
    assert c.expression.shape == (2, 3) and np.isnan(c.expression.at["A1BG", "R01-902"])
    assert c.semantic.shape[0] == 10 and c.clinical.shape[0] == 211

    scan = c.load_scan("R01-901")
    assert scan.ct.GetSize() == scan.mask.GetSize() == (16, 16, 3)
    assert scan.mask.GetPixelID() == sitk.sitkUInt8
    assert scan.mask.GetOrigin() == scan.ct.GetOrigin()
    m = sitk.GetArrayFromImage(scan.mask)
    assert m.sum(axis=(1, 2)).tolist() == [127, 256, 255] and set(np.unique(m)) == {0, 1}
    scan2 = c.load_scan("R01-902")
    assert sitk.GetArrayFromImage(scan2.mask).sum() == 1832
    with pytest.raises(CohortError, match=r"R01-904 is not in the cohort.*no expression"):
        c.load_scan("R01-904")


def test_seg_choice_prefers_non_ai(root):
    d = root / "nsclc_radiogenomics" / "R01-901" / "study"
    ai = pydicom.dcmread(SEG_DIR / "seg_image_ct_binary_overlap.dcm")
    ai.PatientID = "R01-901"
    ai.SeriesDescription = "AIMI lung and nodule AI segmentation"
    ai.SeriesInstanceUID, ai.SOPInstanceUID = "1.2.3.0", generate_uid()  # sorts first by uid
    (d / "SEG_0").mkdir()
    ai.save_as(d / "SEG_0" / "ai.dcm")
    c = nsclc.open_cohort(root)
    row = c.series.loc["R01-901"]
    assert row.seg_file.name == "seg.dcm" and row.seg_candidates == 2
    assert "AIMI lung and nodule AI segmentation" in row.seg_note
    assert dicom.is_ai_segmentation("AIMI lung and nodule AI segmentation")
    assert not dicom.is_ai_segmentation("3D Slicer segmentation result", "3D Slicer Community")
    assert not dicom.is_ai_segmentation("ePAD Generated DSO Nov-11-2211")


def test_truncated_file_drops_patient_naming_file(root):
    f = root / "nsclc_radiogenomics" / "R01-901" / "study" / f"CT_{CT2_SERIES}" / "17166.dcm"
    f.write_bytes(f.read_bytes()[:-64])
    c = nsclc.open_cohort(root)
    assert c.patients == ["R01-902"]
    row = c.dropped[c.dropped.patient_id == "R01-901"].iloc[0]
    assert "truncated" in row.reason and Path(row.file) == f
    # a file cut inside its header is reported too, with no patient id
    g = root / "junk.dcm"
    g.write_bytes(f.read_bytes()[:90])
    c = nsclc.open_cohort(root)
    assert any(Path(x) == g for x in c.dropped.file)


def test_seg_referencing_absent_series_dropped(root):
    # R01-905: a CT (CT_small) and a SEG that references the CT2 series, which is absent
    add_ct_small_patient(root, "R01-905", seg=False)
    seg = copy_dicom(SEG_DIR / "seg_image_ct_binary.dcm", root / "R01-905" / "s.dcm", "R01-905")
    write_expression(
        root / "GSE103584_R01_NSCLC_RNAseq.txt",
        ["R01-901", "R01-902", "R01-905"],
        {"A1BG": ["1", "2", "3"]},
    )
    c = nsclc.open_cohort(root)
    row = c.dropped[c.dropped.patient_id == "R01-905"].iloc[0]
    assert row.reason == f"SEG references missing series {CT2_SERIES}" and Path(row.file) == seg


def test_empty_mask_refused(root):
    seg = root / "R01-902" / "seg.dcm"
    ds = pydicom.dcmread(seg)
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(seg)
    c = nsclc.open_cohort(root)
    with pytest.raises(CohortError, match=r"patient R01-902: SEG .*seg\.dcm has an empty mask"):
        c.load_scan("R01-902")


def test_expression_ids_matching_no_image(root):
    expr = write_expression(
        root / "GSE103584_R01_NSCLC_RNAseq.txt", ["R01-950", "R01-951"], {"A1BG": ["1", "2"]}
    )
    with pytest.raises(CohortError) as err:
        nsclc.open_cohort(root)
    msg = str(err.value)
    assert "no patient has a CT series" in msg and str(expr) in msg
    assert "R01-950" in msg and "R01-901" in msg


def test_patient_with_all_na_expression_dropped(root):
    write_expression(
        root / "GSE103584_R01_NSCLC_RNAseq.txt",
        ["R01-901", "R01-902"],
        {"A1BG": ["1", "NA"], "TP53": ["2", "NA"]},
    )
    c = nsclc.open_cohort(root)
    assert c.patients == ["R01-901"]
    assert c.dropped.set_index("patient_id").at["R01-902", "reason"].startswith("expression all NA")


def test_open_cohort_missing_parts(tmp_path, root):
    with pytest.raises(CohortError, match="does not exist"):
        nsclc.open_cohort(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CohortError, match="no expression table"):
        nsclc.open_cohort(empty)
    write_expression(empty / "GSE103584_R01_NSCLC_RNAseq.txt", ["R01-901"], {"A": ["1"]})
    with pytest.raises(CohortError, match="no DICOM file"):
        nsclc.open_cohort(empty)


# ------------------------------------------------------------------------------ expression


def test_read_expression_txt_and_gz(tmp_path):
    p = write_expression(
        tmp_path / "e.txt",
        ["R01-001", "R01-002"],
        {"1/2-SBSRNA4": ["0.5", "NA"], "A1BG": ["3", "1e7"]},
    )
    df = tables.read_expression(p)
    assert list(df.columns) == ["R01-001", "R01-002"] and list(df.index) == ["1/2-SBSRNA4", "A1BG"]
    assert df.dtypes.eq(np.float64).all() and np.isnan(df.at["1/2-SBSRNA4", "R01-002"])
    assert df.at["A1BG", "R01-002"] == 1e7
    gz = tmp_path / "e.txt.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    pd.testing.assert_frame_equal(tables.read_expression(gz), df)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("gene\tR01-001\nA\t1\n", r"line 1, column 1 should be empty"),
        ("\tR01-001\t42\nA\t1\t2\n", r"line 1, column 3: '42' is not a patient id"),
        (
            "\tR01-001\tR01-002\nA\t1\t2\nB\t3\tx\n",
            r"line 3, column 3 \(gene 'B', sample R01-002\)",
        ),
        ("\tR01-001\tR01-002\nA\tNA\tNA\nB\tNA\tNA\n", r"no numeric value"),
        ("\tR01-001\tR01-001\nA\t1\t2\n", r"'R01-001' appears twice"),
        ("\tR01-001\nA\t-1\n", r"negative value"),
    ],
)
def test_read_expression_refuses_bad_tables(tmp_path, text, pattern):
    p = tmp_path / "GSE103584_R01_NSCLC_RNAseq.txt"
    p.write_text(text)
    with pytest.raises(CohortError, match=pattern) as err:
        tables.read_expression(p)
    assert str(p) in str(err.value)


def test_read_series_matrix_real():
    df = tables.read_series_matrix(MATRIX)
    assert df.shape[0] == 130 and df.index.is_unique
    assert df.at["R01-034", "geo_accession"] == "GSM2774822"
    assert df.index[1] == "R01-159" and df.iloc[-1].geo_accession == "GSM2774951"
    assert df["histology"].value_counts().to_dict() == {
        "Adenocarcinoma": 96,
        "Squamous cell carcinoma": 31,
        "NSCLC NOS (not otherwise specified)": 3,
    }
    assert {"gender", "histopathological grade"} <= set(df.columns)
    assert all(tables.PATIENT_ID_RE.match(t) for t in df.index)


# ------------------------------------------------------------------------------ clinical


def test_read_clinical_real(tmp_path):
    df = tables.read_clinical(CLINICAL)
    assert df.shape == (211, 39) and df.index.name == "patient_id"
    assert df.index.str.startswith("R01-").sum() == 162
    assert df.index.str.startswith("AMC-").sum() == 49
    assert df.at["AMC-001", "Age at Histological Diagnosis"] == 34
    assert df.at["AMC-001", "Histology"] == "Adenocarcinoma"  # header had a trailing space
    # the TCIA original names the first column 'Case ID'
    text = CLINICAL.read_text()
    case = tmp_path / "NSCLCR01Radiogenomic_DATA_LABELS_case.csv"
    case.write_text(text.replace("Patient ID,", "Case ID,", 1))
    pd.testing.assert_frame_equal(tables.read_clinical(case), df)
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace("Patient ID,", "Subject,", 1))
    with pytest.raises(CohortError, match=r"bad\.csv: first column .* found 'Subject'"):
        tables.read_clinical(bad)


# ------------------------------------------------------------------------------ AIM


def test_read_aim_both_encodings():
    a = tables.read_aim(DATA / "aim" / "R01-001.xml")  # values in iso:displayName
    assert a["patient_id"] == "R01-001"
    assert a["nodule_attenuation"] == "solid"
    assert a["nodule_margins_primary_pattern"] == "spiculated"
    assert a["nodule_shape"] == "complex" and a["anatomic_location"] == "upper lobe of right lung"
    assert a["nodule_associated_findings"] == (
        "attachment to vessel; pleural retraction; vascular convergence"
    )
    assert a["overall_emphysema_severity"] == "low severity (1-25%)"
    b = tables.read_aim(DATA / "aim" / "AMC-003.xml")  # values in typeCode@codeSystem
    assert b["nodule_attenuation"] == "partially solid"
    assert b["nodule_attenuation_detail"] == "Solid lessOrEqual 5mm"
    assert b["nodule_margins_primary_pattern"] == "irregular"


def test_aim_folder_and_numeric(tmp_path):
    df = tables.read_aim_folder(DATA / "aim")
    assert list(df.index) == sorted(p.stem for p in (DATA / "aim").glob("*.xml"))
    num = tables.semantic_numeric(df)
    att = num["nodule_attenuation"]
    assert att["R01-081"] == 0.0 and att["AMC-003"] == 0.5 and att["R01-001"] == 1.0
    assert att["AMC-007"] == 0.0  # ground glass in the other encoding
    assert num.at["R01-001", "overall_emphysema_severity"] == 0.13
    assert num.at["AMC-003", "overall_emphysema_severity"] == 0.0  # emphysema absent
    assert num.at["R01-001", "nodule_margins_primary_pattern=spiculated"] == 1.0
    assert num.at["AMC-003", "nodule_margins_primary_pattern=spiculated"] == 0.0
    assert num.at["R01-001", "nodule_associated_findings=pleural retraction"] == 1.0
    assert not any(c.endswith("_detail") or c == "aim_file" for c in num.columns)
    bad = df.copy()
    bad.loc["R01-001", "nodule_attenuation"] = "glassy"
    with pytest.raises(CohortError, match=r"nodule_attenuation' of patient R01-001: .*'glassy'"):
        tables.semantic_numeric(bad)
    broken = tmp_path / "broken.xml"
    broken.write_text("<ImageAnnotationCollection")
    with pytest.raises(CohortError, match=r"broken\.xml"):
        tables.read_aim(broken)
