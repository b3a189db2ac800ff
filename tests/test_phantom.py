"""The synthetic cohort: formats a DICOM reader accepts, ground truth that holds, determinism."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import cross_val_score

from radiolib import cli
from radiolib.data import phantom as ph
from radiolib.data.phantom import anatomy, biology, dicom, folder, streams, tables
from radiolib.errors import CohortError, OutputError
from tests.conftest import PHANTOM_MATRIX as MATRIX
from tests.conftest import PHANTOM_PATIENTS as PATIENTS
from tests.conftest import PHANTOM_SEED as SEED


@pytest.fixture(scope="session")
def cohort(small_phantom) -> tuple[Path, ph.PhantomSummary]:
    return small_phantom


@pytest.fixture(scope="session")
def truth(cohort) -> ph.PhantomTruth:
    return ph.load_truth(cohort[0])


def _series_dirs(root: Path, pid: str) -> tuple[Path, Path | None]:
    study = next((root / ph.COLLECTION / pid).iterdir())
    ct = next(study.glob("CT_*"))
    seg = next(study.glob("SEG_*"), None)
    return ct, seg


def _read_ct(ct_dir: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    return reader.Execute()


def _seg_on_ct(seg_file: Path, ct: sitk.Image) -> np.ndarray:
    """SEG frames placed on the CT grid by their plane positions -> (nz, ny, nx) uint8."""
    seg = hd.seg.segread(seg_file)
    frames = seg.pixel_array.reshape(-1, ct.GetSize()[1], ct.GetSize()[0])
    out = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    for item, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
        pos = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        k = ct.TransformPhysicalPointToIndex(pos)[2]
        out[k] = frame
    return out


def test_layout_and_summary(cohort, truth):
    root, summary = cohort
    assert summary.patients == PATIENTS and summary.genes == ph.N_GENES
    assert summary.complete_genes == ph.N_COMPLETE
    no_seg, no_expr = truth.params["no_seg"], truth.params["no_expression"]
    assert len(no_seg) == 1 and len(no_expr) == 1 and set(no_seg).isdisjoint(no_expr)
    assert summary.seg_series == PATIENTS - 1 and summary.expression_samples == PATIENTS - 1
    assert sorted(p.name for p in (root / ph.COLLECTION).iterdir()) == ph.patient_ids(PATIENTS)
    for pid in ph.patient_ids(PATIENTS):
        ct_dir, seg_dir = _series_dirs(root, pid)
        assert (seg_dir is None) == (pid in no_seg)
        files = sorted(ct_dir.glob("*.dcm"))
        assert len(files) == truth.patients.loc[pid, "slices"]
        ds = pydicom.dcmread(files[0])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.PatientID == pid and ds.Modality == "CT"
        assert ct_dir.name == f"CT_{ds.SeriesInstanceUID}" and files[0].stem == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == ct_dir.parent.name
        assert ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1
        assert ds.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]


def test_fast_encoder_matches_dcmwrite():
    geo = anatomy._draw_geometry(np.random.default_rng(0), 64)
    uids = {n: dicom._uid(0, "R01-001", n) for n in ("study", "ct", "seg", "frame")}
    template = dicom._ct_template(geo, "R01-001", "F", uids, 0)
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    own = dicom._slice_elements(geo, 2, dicom._uid(0, "R01-001", "ct", 2), pixels)
    fast = dicom._SeriesEncoder(template, own).encode(dicom._file_meta(own.SOPInstanceUID), own)
    full = dicom._slice_elements(geo, 2, own.SOPInstanceUID, pixels)
    full.update(template)
    full.file_meta = dicom._file_meta(own.SOPInstanceUID)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, full, enforce_file_format=True)
    assert fast == buf.getvalue()


def test_ct_geometry_and_hu(cohort, truth):
    root, _ = cohort
    scale = ph.spacing_scale(MATRIX)
    for pid, row in truth.patients.iterrows():
        ct = _read_ct(_series_dirs(root, pid)[0])
        sx, sy, sz = ct.GetSpacing()
        assert sx == sy == pytest.approx(row["pixel_spacing_mm"], abs=1e-4)
        assert 0.6 * scale <= sx <= 0.9 * scale
        assert sz == pytest.approx(row["slice_spacing_mm"]) and 1.25 <= sz <= 2.5
        assert 90 - 2.5 <= ct.GetSize()[2] * sz <= 130 + 2.5
        assert ct.GetSize()[:2] == (MATRIX, MATRIX)
        hu = sitk.GetArrayFromImage(ct).astype(np.float32)  # (nz, ny, nx)
        corners = hu[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.min(axis=1).max() < -900  # air outside the body
        assert hu.max() > 300  # bone
        assert -150 < np.median(hu[(hu > -200) & (hu < 100)]) < 80  # soft tissue and fat


def test_seg_references_ct_and_matches_render(cohort, truth):
    root, _ = cohort
    for pid, row in truth.patients.iterrows():
        ct_dir, seg_dir = _series_dirs(root, pid)
        if seg_dir is None:
            continue
        seg_file = next(seg_dir.glob("*.dcm"))
        seg = hd.seg.segread(seg_file)
        ct_uid = pydicom.dcmread(next(ct_dir.glob("*.dcm")), stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid.SeriesInstanceUID
        assert seg.SegmentationType == "BINARY" and seg.PatientID == pid
        assert seg.SegmentSequence[0].SegmentLabel == "Tumor"
        assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
        ct = _read_ct(ct_dir)
        mask = _seg_on_ct(seg_file, ct)
        assert mask.sum() == row["mask_voxels"] > 0
    # the CT pixels and the SEG are the rendering, voxel for voxel
    pid = truth.patients.index[truth.patients["has_seg"]][0]
    i = ph.patient_ids(PATIENTS).index(pid)
    hu, mask, _ = ph.render_patient(truth.patients.loc[pid, list(ph.TRAITS)], SEED, i, MATRIX)
    ct_dir, seg_dir = _series_dirs(root, pid)
    ct = _read_ct(ct_dir)
    expected = np.clip(np.rint(hu + 1024), 0, 4095) - 1024
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), expected)
    np.testing.assert_array_equal(_seg_on_ct(next(seg_dir.glob("*.dcm")), ct), mask)


def test_tumour_inside_lung_at_its_location(cohort, truth):
    root, _ = cohort
    clinical = pd.read_csv(root / ph.CLINICAL_FILE, keep_default_na=False).set_index("Case ID")
    mean_hu, solidity = [], []
    for pid, row in truth.patients.iterrows():
        i = ph.patient_ids(PATIENTS).index(pid)
        hu, mask, info = ph.render_patient(row[list(ph.TRAITS)], SEED, i, MATRIX)
        m = mask.astype(bool)
        # surrounded by lung: the shell just outside the support is air-filled parenchyma
        shell = ndimage.binary_dilation(m, iterations=2) & ~m
        assert np.mean(hu[shell] < -300) > 0.7
        ring = ndimage.binary_dilation(m, iterations=6) & ~ndimage.binary_dilation(m, iterations=3)
        assert -900 < np.median(hu[ring][hu[ring] < -300]) < -790  # lung ~ -850 HU
        # not touching the volume's edge
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, :, -1].any())
        # centroid near the recorded centre, side and lobe consistent
        geo_axes = (info["slice_spacing_mm"], info["pixel_spacing_mm"], info["pixel_spacing_mm"])
        ct = _read_ct(_series_dirs(root, pid)[0])
        k, j, ii = ndimage.center_of_mass(m)
        x, y, z = ct.TransformContinuousIndexToPhysicalPoint((ii, j, k))
        centre = np.array([row["tumour_z_mm"], row["tumour_y_mm"], row["tumour_x_mm"]])
        assert np.linalg.norm(np.array([z, y, x]) - centre) < 0.35 * row["diameter_mm"] + max(
            geo_axes
        )
        assert row["lobe"] == anatomy._lobe(centre)
        assert (x < 0) == row["lobe"].startswith("R")
        assert clinical.loc[pid, f"Tumor Location (choice={row['lobe']})"] == "Checked"
        mean_hu.append(float(hu[m].mean()))
        solidity.append(row["solidity"])
    mean_hu, solidity = np.array(mean_hu), np.array(solidity)
    assert np.corrcoef(mean_hu, solidity)[0, 1] > 0.8
    assert np.all(mean_hu[solidity > 0.9] > -300)
    assert np.all(mean_hu[solidity < 0.3] < -400)


def test_expression_table(cohort, truth):
    root, _ = cohort
    path = root / ph.EXPRESSION_FILE
    header = path.open().readline().rstrip("\n").split("\t")
    assert header[0] == "" and all(c.startswith("R01-") for c in header[1:])
    assert set(header[1:]) == set(truth.patients.index[truth.patients["has_expression"]])
    assert "\tNA" in path.read_text()[:200000]
    expr = pd.read_csv(path, sep="\t", index_col=0)
    assert expr.shape == (ph.N_GENES, PATIENTS - 1) and expr.index.is_unique
    values = expr.to_numpy()
    assert np.nanmin(values) > 0 and np.nanmax(values) > 1e4
    complete = expr.notna().all(axis=1)
    assert complete.sum() == ph.N_COMPLETE
    assert 0.55 < expr.notna().to_numpy().mean() < 0.8  # share of measured values
    links = truth.gene_links
    linked = links[~links["driver"].isin(ph.NUISANCE)]
    assert complete.loc[linked["gene"]].mean() >= 0.85
    np.testing.assert_array_equal(complete.loc[links["gene"]].to_numpy(), links["complete"])


def test_truth_round_trip(cohort, truth):
    bio, expr = ph.simulate_biology(PATIENTS, SEED)
    cols = ["subtype", *ph.TRAITS, "sex", "batch", "has_seg", "has_expression"]
    pd.testing.assert_frame_equal(truth.patients[cols], bio.patients[cols], check_dtype=False)
    pd.testing.assert_frame_equal(truth.gene_links, bio.gene_links, check_dtype=False)
    assert truth.params["seed"] == SEED and truth.params["matrix"] == MATRIX
    assert truth.patients["subtype"].dtype.kind == "i"
    assert set(truth.gene_links["driver"]) == {"subtype", *ph.TRAITS, *ph.NUISANCE}
    # the expression read back equals the simulated values
    back = pd.read_csv(cohort[0] / ph.EXPRESSION_FILE, sep="\t", index_col=0)
    np.testing.assert_allclose(back.to_numpy(), expr.to_numpy(), rtol=1e-12)


def test_clinical_table(cohort, truth):
    clinical = pd.read_csv(cohort[0] / ph.CLINICAL_FILE, keep_default_na=False)
    assert list(clinical.columns) == tables._CLINICAL_COLUMNS and clinical.columns[0] == "Case ID"
    clinical = clinical.set_index("Case ID")
    pats = truth.patients
    assert (clinical["Gender"] == pats["sex"].map({"M": "Male", "F": "Female"})).all()
    solid = pats["solidity"] >= 0.97
    assert (clinical.loc[solid.index[solid], "%GG"] == "0%").all()
    assert (clinical.loc[solid.index[~solid], "%GG"] != "0%").all()
    small = pats.index[(pats["diameter_mm"] <= 20) & (pats["solidity"] >= 0.1)]
    assert clinical.loc[small, "Pathological T stage"].isin(["T1a", "T3", "T4"]).all()
    loc_cols = [c for c in clinical.columns if c.startswith("Tumor Location")]
    assert ((clinical[loc_cols] == "Checked").sum(axis=1) == 1).all()


def test_determinism(cohort, tmp_path):
    root, _ = cohort
    ph.write_phantom(tmp_path, patients=PATIENTS, seed=SEED, matrix=MATRIX, progress=False)
    assert (root / ph.EXPRESSION_FILE).read_bytes() == (tmp_path / ph.EXPRESSION_FILE).read_bytes()
    assert (root / ph.CLINICAL_FILE).read_bytes() == (tmp_path / ph.CLINICAL_FILE).read_bytes()
    a = sorted((root / ph.COLLECTION).rglob("*.dcm"))
    b = sorted((tmp_path / ph.COLLECTION).rglob("*.dcm"))
    assert [p.relative_to(root) for p in a] == [p.relative_to(tmp_path) for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa  # pixels, UIDs and the SEG alike
    # another seed: other UIDs, other pixels, other expression
    _, e0 = ph.simulate_biology(PATIENTS, SEED)
    _, e1 = ph.simulate_biology(PATIENTS, SEED + 1)
    assert not np.allclose(np.nan_to_num(e0.to_numpy()), np.nan_to_num(e1.to_numpy()))
    row = ph.simulate_biology(PATIENTS, SEED)[0].patients.iloc[0][list(ph.TRAITS)]
    h0 = ph.render_patient(row, SEED, 0, 64)[0]
    h1 = ph.render_patient(row, SEED + 1, 0, 64)[0]
    assert h0.shape != h1.shape or not np.array_equal(h0, h1)
    assert dicom._uid(SEED, "R01-001", "ct") != dicom._uid(SEED + 1, "R01-001", "ct")


def test_rewrite_removes_stale_patients_and_an_interrupted_write_is_marked(tmp_path, monkeypatch):
    from radiolib.data import nsclc

    old_umask = os.umask(0o027)
    try:
        ph.write_phantom(tmp_path, patients=5, seed=0, matrix=64, progress=False)
    finally:
        os.umask(old_umask)
    # the umask decides the modes, not tempfile's private 0700 / 0600
    assert stat.S_IMODE((tmp_path / ph.COLLECTION / "R01-001").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / ph.EXPRESSION_FILE).stat().st_mode) == 0o640
    assert ph.phantom_status(tmp_path)["complete"]

    # killed while writing the third patient: the marker says so, readers refuse the folder
    write_patient, calls = folder.write_patient, []

    def dying(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write_patient(*args, **kwargs)

    monkeypatch.setattr(folder, "write_patient", dying)
    with pytest.raises(KeyboardInterrupt):
        ph.write_phantom(tmp_path, patients=4, seed=1, matrix=64, progress=False)
    monkeypatch.undo()
    assert ph.phantom_status(tmp_path)["complete"] is False
    with pytest.raises(CohortError, match="incomplete phantom"):
        nsclc.open_cohort(tmp_path)
    with pytest.raises(CohortError, match="incomplete phantom"):
        ph.load_truth(tmp_path)

    # the folder is still recognised as a phantom: written again, it is whole
    ph.write_phantom(tmp_path, patients=4, seed=0, matrix=64, progress=False)
    names = sorted(p.name for p in (tmp_path / ph.COLLECTION).iterdir())
    assert names == ph.patient_ids(4)
    assert len(ph.load_truth(tmp_path).patients) == 4
    assert ph.phantom_status(tmp_path) == {
        "complete": True,
        "version": streams.VERSION,
        "params": {"patients": 4, "seed": 0, "subtypes": 3, "signal": 1.0, "matrix": 64},
    }


def test_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    """A real download has the phantom's layout: nothing in it may be deleted or replaced."""
    download = tmp_path / "download"
    patient = download / ph.COLLECTION / "R01-001" / "study" / "CT_1"
    patient.mkdir(parents=True)
    (patient / "1.dcm").write_bytes(b"real patient")
    (download / ph.EXPRESSION_FILE).write_text("real table")
    before = {p: p.read_bytes() for p in download.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match="refusing to write a phantom.*not empty"):
        ph.write_phantom(download, patients=4, matrix=64, progress=False)
    assert cli.main(["phantom", "--out", str(download), "--patients", "4"]) == 1
    assert "holds no radiolib_phantom.json" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in download.rglob("*") if p.is_file()} == before
    (tmp_path / "notes.txt").write_text("a file")
    assert cli.main(["phantom", "--out", str(tmp_path / "notes.txt"), "--patients", "4"]) == 1
    assert "is a file; expected a folder" in capsys.readouterr().err


def _standardised_complete(expr: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    comp = expr.dropna()
    x = np.log2(comp.T.to_numpy() + 1.0)
    return (x - x.mean(0)) / x.std(0), comp.index


def test_raw_genes_hide_subtypes_but_linked_genes_carry_them():
    truth, expr = ph.simulate_biology(120, seed=0, subtypes=3, signal=1.0)
    x, genes = _standardised_complete(expr)
    y = truth.patients.loc[expr.columns, "subtype"].to_numpy()
    batch = truth.patients.loc[expr.columns, "batch"].to_numpy()
    km = KMeans(3, n_init=10, random_state=0).fit_predict(x)
    assert adjusted_rand_score(y, km) < 0.3
    assert adjusted_rand_score(batch, km) > 0.5  # what dominates the raw data is the batch
    pcs = PCA(10, random_state=0).fit_transform(x)
    assert adjusted_rand_score(y, KMeans(3, n_init=10, random_state=0).fit_predict(pcs)) < 0.3
    links = truth.gene_links
    linked = links.loc[(links["driver"] == "subtype") & links["complete"], "gene"]
    xl = x[:, genes.get_indexer(linked)]
    probe = LogisticRegression(C=0.1, max_iter=2000)
    assert cross_val_score(probe, xl, y, cv=5).mean() > 0.85
    # without signal the same probe is at chance
    truth0, expr0 = ph.simulate_biology(120, seed=0, subtypes=3, signal=0.0)
    x0, genes0 = _standardised_complete(expr0)
    y0 = truth0.patients.loc[expr0.columns, "subtype"].to_numpy()
    assert cross_val_score(probe, x0[:, genes0.get_indexer(linked)], y0, cv=5).mean() < 0.55


def test_trait_marginals_follow_calibration():
    pats = biology._draw_patients(3000, seed=1, subtypes=3)
    assert pats["diameter_mm"].between(8, 45).all()
    assert abs((pats["spiculation"] < 0.2).mean() - 0.674) < 0.08  # LIDC spiculation 1
    assert abs((pats["margin_sharpness"] >= 0.8).mean() - 0.413) < 0.08  # LIDC margin 5
    assert abs((pats["lobulation"] < 0.2).mean() - 0.600) < 0.08
    assert abs((pats["diameter_mm"] <= 20).mean() - 0.29) < 0.08  # Tis + T1a
    assert abs((pats["solidity"] >= 0.97).mean() - 0.39) < 0.08
    means = pats.groupby("subtype")[list(ph.TRAITS)].mean()
    assert means.loc[0, "diameter_mm"] > means.loc[2, "diameter_mm"] + 10
    assert means.loc[1, "solidity"] < means.loc[[0, 2], "solidity"].min() - 0.3
    assert means.loc[2, "spiculation"] < means.loc[0, "spiculation"] - 0.2
    # overlapping: no trait separates two subtypes perfectly
    assert (
        pats.loc[pats["subtype"] == 2, "diameter_mm"].max()
        > pats.loc[pats["subtype"] == 0, "diameter_mm"].min()
    )


def test_cohort_spacing_at_full_matrix():
    for i in range(200):
        geo = anatomy._draw_geometry(np.random.default_rng([0, i]), 256)
        assert 0.6 <= geo.dx <= 0.9 and geo.dz in (1.25, 1.5, 2.0, 2.5)
        assert 90 - geo.dz <= geo.nz * geo.dz <= 130 + geo.dz
        assert geo.cavity[1] <= geo.matrix * geo.dx / 2 - 10 + 1e-9  # lungs fit the AP extent


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"patients": 3}, "patients"),
        ({"subtypes": 1}, "subtypes"),
        ({"signal": -1.0}, "signal"),
        ({"signal": float("nan")}, "signal"),
        ({"matrix": 32}, "matrix"),
        ({"patients": 4, "subtypes": 5}, "subtypes"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        ph.write_phantom(tmp_path, progress=False, **kwargs)
    assert not (tmp_path / ph.COLLECTION).exists()


def test_load_truth_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="truth"):
        ph.load_truth(tmp_path)
