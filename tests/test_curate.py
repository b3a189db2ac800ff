"""Curation: resampling, VOIs, slices, lungs, backgrounds, split, expression, the cohort folder."""

from __future__ import annotations

import json
import os
import stat
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from radiolib.config import CurationConfig
from radiolib.data import curate, curated, expression, geometry
from radiolib.data.lungs import (
    TUMOUR_MARGIN_MM,
    _distance_to,
    background_slices,
    sample_background_centres,
    segment_lungs,
)
from radiolib.errors import CohortError

SPACING = (1.25, 1.25, 2.5)  # x, y, z (mm): anisotropic like a clinical CT
SIZE = (96, 80, 40)  # x, y, z voxels: 120 x 100 x 100 mm
ORIGIN = (-60.0, -50.0, 100.0)
LUNG_SEMI = np.array([22.0, 34.0, 40.0])  # x, y, z semi-axes (mm)
LUNG_CENTRES = np.array([[-27.0, 0.0, 148.75], [27.0, 0.0, 148.75]])
TUMOUR_RADIUS = 8.0


def physical_grid(image: sitk.Image) -> np.ndarray:
    """(Z, Y, X, 3) physical x, y, z of every voxel centre (identity direction)."""
    size, sp, org = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    z, y, x = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    return np.stack([org[0] + x * sp[0], org[1] + y * sp[1], org[2] + z * sp[2]], axis=-1)


def true_lungs(grid: np.ndarray) -> np.ndarray:
    out = np.zeros(grid.shape[:3], bool)
    for c in LUNG_CENTRES:
        out |= (((grid - c) / LUNG_SEMI) ** 2).sum(-1) <= 1
    return out


def make_chest(
    tumour_mm=(-27.0, 0.0, 148.75), radius=TUMOUR_RADIUS, lungs=True, noise=0.0, seed=0
) -> tuple[sitk.Image, sitk.Image]:
    """A synthetic chest: air, a soft-tissue box body, two ellipsoid lungs at -850 HU with a
    vessel each, a sphere tumour at +30 HU; returns (ct float32, mask uint8) on an anisotropic
    grid."""
    ref = sitk.Image(list(SIZE), sitk.sitkFloat32)
    ref.SetSpacing(SPACING)
    ref.SetOrigin(ORIGIN)
    g = physical_grid(ref)
    ct = np.full(g.shape[:3], -1000.0, np.float32)
    body = (np.abs(g[..., 0]) <= 55) & (np.abs(g[..., 1]) <= 42)
    ct[body] = 40.0
    if lungs:
        ct[true_lungs(g)] = -850.0
        for c in LUNG_CENTRES:  # a vessel along z in each lung
            vessel = ((g[..., 0] - c[0] - 8) ** 2 + (g[..., 1] - c[1]) ** 2 <= 2.0**2) & true_lungs(
                g
            )
            ct[vessel] = 40.0
    tumour = ((g - np.asarray(tumour_mm)) ** 2).sum(-1) <= radius**2
    ct[tumour] = 30.0
    if noise:
        ct += np.random.default_rng(seed).normal(0, noise, ct.shape).astype(np.float32)
    ct_img = sitk.GetImageFromArray(ct)
    mask_img = sitk.GetImageFromArray(tumour.astype(np.uint8))
    for im in (ct_img, mask_img):
        im.CopyInformation(ref)
    return ct_img, mask_img


# ------------------------------------------------------------------ expression


def test_preprocess_expression_by_hand():
    table = pd.DataFrame(
        {
            "R01-001": [0.0, 1.0, 5.0, 1.0],
            "R01-002": [1.0, np.nan, 5.0, 1.0],
            "R01-003": [3.0, 2.0, 5.0, 3.0],
            "R01-004": [7.0, 4.0, 5.0, 3.0],
        },
        index=["g1", "g_missing", "g_constant", "g4"],
    )
    z, samples, genes, report = expression.preprocess_expression(table)
    assert samples == ["R01-001", "R01-002", "R01-003", "R01-004"]
    assert genes == ["g1", "g4"]
    assert z.shape == (4, 2) and z.dtype == np.float32
    # g1: log2(x+1) = 0,1,2,3; mean 1.5; population std sqrt(1.25)
    np.testing.assert_allclose(z[:, 0], (np.array([0, 1, 2, 3]) - 1.5) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(z[:, 1], [-1, -1, 1, 1], rtol=1e-6)  # log2: 1,1,2,2
    assert report["genes_in"] == 4 and report["genes_kept"] == 2
    assert report["genes_with_missing"] == 1 and report["genes_constant"] == 1
    # statistics from a reference subset: g1 over s1..s3 is 0,1,2: mean 1, std sqrt(2/3)
    z_ref, *_ = expression.preprocess_expression(table, reference=["R01-001", "R01-002", "R01-003"])
    assert z_ref[3, 0] == pytest.approx((3 - 1) / np.sqrt(2 / 3), rel=1e-6)


def test_preprocess_expression_errors():
    all_nan = pd.DataFrame({"a": [np.nan, 1.0], "b": [2.0, np.nan]}, index=["g1", "g2"])
    with pytest.raises(CohortError, match="no gene without missing values in expr.txt"):
        expression.preprocess_expression(all_nan, source="expr.txt")
    negative = pd.DataFrame({"a": [1.0, -2.0], "b": [2.0, 3.0]}, index=["g1", "g2"])
    with pytest.raises(CohortError, match="negative expression .* 'g2'"):
        expression.preprocess_expression(negative)
    with pytest.raises(CohortError, match="non-numeric"):
        expression.preprocess_expression(pd.DataFrame({"a": ["x", "1"], "b": ["2", "3"]}))


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("flip", [False, True])
def test_resample_isotropic_keeps_physical_space(flip):
    ref = sitk.Image([20, 16, 6], sitk.sitkFloat32)
    ref.SetSpacing((0.8, 0.8, 2.5))
    ref.SetOrigin((10.0, -5.0, 30.0))
    if flip:  # y axis pointing backwards: the output must still be on identity axes
        ref.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    # a linear ramp of the physical position: linear interpolation must reproduce it exactly
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in ref.GetSize()), indexing="ij"), -1)
    phys = np.array(
        [ref.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx.reshape(-1, 3)]
    )
    ramp = (phys @ np.array([1.0, 2.0, 3.0])).reshape(ref.GetSize()).transpose(2, 1, 0)
    img = sitk.GetImageFromArray(ramp.astype(np.float32))
    img.CopyInformation(ref)
    out = geometry.resample_isotropic(img, 1.0)
    assert out.GetSpacing() == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(out.GetDirection(), np.eye(3).ravel())
    extent = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
    assert np.all(np.abs(np.array(out.GetSize()) - extent) <= 0.5)  # 16 x 12.8 x 15 mm
    np.testing.assert_array_equal(out.GetSize(), (16, 13, 15))
    # every output voxel centre lies inside the scan: none is padding (-1000) alone
    const = sitk.GetArrayFromImage(geometry.resample_isotropic(img * 0 + 5.0, 1.0))
    np.testing.assert_allclose(const, 5.0)
    lo = np.min(
        [
            ref.TransformContinuousIndexToPhysicalPoint(c)
            for c in [(-0.5, -0.5, -0.5), (19.5, 15.5, 5.5)]
        ],
        axis=0,
    )
    np.testing.assert_allclose(out.GetOrigin(), lo + 0.5, atol=1e-9)
    arr = sitk.GetArrayFromImage(out)
    g = physical_grid(out)
    # interior voxels (between the first and last input voxel centres) carry their position
    centres = np.array([ref.TransformIndexToPhysicalPoint(c) for c in [(0, 0, 0), (19, 15, 5)]])
    inside = np.all((g >= centres.min(0) - 1e-6) & (g <= centres.max(0) + 1e-6), axis=-1)
    assert inside.sum() > 500
    np.testing.assert_allclose(arr[inside], (g @ np.array([1.0, 2.0, 3.0]))[inside], atol=1e-3)


def test_resample_mask_box_extent_is_exact():
    """A tumour of 4 slices of 2.5 mm is 10 mm tall: 10 slices at 1 mm."""
    m = np.zeros((12, 10, 10), np.uint8)
    m[4:8, 3:7, 3:7] = 1
    img = sitk.GetImageFromArray(m)
    img.SetSpacing((1.0, 1.0, 2.5))
    out = sitk.GetArrayFromImage(geometry.resample_isotropic(img, 1.0, is_mask=True))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert out.any(axis=(1, 2)).sum() == 10
    assert out.any(axis=(0, 2)).sum() == 4 and out.sum() == 10 * 4 * 4


def test_crop_voi_centres_and_pads():
    vol = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    voi = geometry.crop_voi(vol, (5, 6, 7), 6, fill=-1000)
    assert voi.shape == (6, 6, 6)
    assert voi[3, 3, 3] == vol[5, 6, 7]  # centre at index size // 2
    np.testing.assert_array_equal(voi, vol[2:8, 3:9, 4:10])
    edge = geometry.crop_voi(vol, (0, 11, 7), 6, fill=-1000)
    assert edge[3, 3, 3] == vol[0, 11, 7]
    assert (edge[:3] == -1000).all() and (edge[:, 4:] == -1000).all()
    np.testing.assert_array_equal(edge[3:, :4], vol[0:3, 8:12, 4:10])
    assert geometry.voi_outside_fraction(vol.shape, (0, 11, 7), 6) == pytest.approx(
        1 - (3 * 4 * 6) / 216
    )


def test_window_maps_known_hu():
    hu = np.array([-2000, -1000, -300, 400, 1000], np.float32)
    np.testing.assert_allclose(geometry.window(hu, (-1000, 400)), [0, 0, 0.5, 1, 1])


def test_tumour_voi_and_slices_on_chest():
    ct, mask = make_chest()
    cfg = CurationConfig(voi_mm=40.0, image_size=32, background_vois=0)
    out = curate.curate_scan(ct, mask, cfg, seed=0, patient_id="R01-900")
    # the tumour sphere (8 mm radius, 2.5 mm slices): its 1-mm extent is ~16 mm
    assert len(out.tumour_images) == out.info["tumour_extent_z_mm"] / cfg.spacing_mm
    assert abs(len(out.tumour_images) - 2 * TUMOUR_RADIUS) <= 3
    np.testing.assert_allclose(out.tumour_centre_mm, (-27.0, 0.0, 148.75), atol=1.0)
    assert out.tumour_images.shape[1:] == (32, 32) and out.tumour_images.dtype == np.float32
    assert 0 <= out.tumour_images.min() and out.tumour_images.max() <= 1
    assert set(np.unique(out.tumour_masks)) == {0, 1}
    # middle slice: tumour (30 HU) at the centre, lung (-850 HU) near the tumour's side
    mid = out.tumour_images[len(out.tumour_images) // 2]
    assert mid[16, 16] == pytest.approx((30 + 1000) / 1400, abs=1e-3)
    assert mid[16, 16 - 12] == pytest.approx(150 / 1400, abs=1e-3)  # 15 mm left: lung
    # 40 mm VOI at 32 px: 1.25 mm per px; mask radius ~ 8 mm = 6.4 px, centred
    ys, xs = np.nonzero(out.tumour_masks[len(out.tumour_masks) // 2])
    assert abs(ys.mean() - 15.5) < 1.0 and abs(xs.mean() - 15.5) < 1.0
    assert np.pi * 6.4**2 * 0.85 < len(ys) < np.pi * 6.4**2 * 1.15


def test_voi_padded_with_air_at_scan_edge():
    # tumour at the bottom of the scan: most of the VOI lies outside the scan
    ct, mask = make_chest(tumour_mm=(-27.0, 0.0, 104.0), radius=5.0)
    cfg = CurationConfig(voi_mm=40.0, image_size=32, background_vois=0)
    out = curate.curate_scan(ct, mask, cfg, seed=0, patient_id="R01-901")
    assert any("touches the edge" in w for w in out.warnings)
    hu = sitk.GetArrayFromImage(geometry.resample_isotropic(ct, 1.0))
    centre = geometry.tumour_centre(
        sitk.GetArrayFromImage(geometry.resample_isotropic(mask, 1.0, True))
    )
    voi = geometry.crop_voi(hu, centre, 40, geometry.AIR_HU)
    below = 20 - centre[0]  # VOI slices before the scan's first slice
    assert below > 0 and (voi[:below] == -1000).all()
    assert voi.shape == (40, 40, 40)


# ------------------------------------------------------------------ lungs and backgrounds


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_segment_lungs_matches_true_lungs():
    ct, _ = make_chest(noise=20.0)
    iso = geometry.resample_isotropic(ct, 1.5)
    lungs = segment_lungs(sitk.GetArrayFromImage(iso), 1.5)
    truth = true_lungs(physical_grid(iso))
    assert dice(lungs, truth) > 0.9
    # the tumour and the vessels (enclosed by lung) are inside the mask
    g = physical_grid(iso)
    tumour_voxel = np.unravel_index(np.argmin(((g - LUNG_CENTRES[0]) ** 2).sum(-1)), g.shape[:3])
    assert lungs[tumour_voxel]
    # the air around the body is not lung
    assert not lungs[:, 0, :].any() and not lungs[:, :, 0].any()


def test_segment_lungs_with_lung_cut_by_field_of_view():
    """A reduced field of view cuts the body and the left lung at the image's left edge."""
    ct, _ = make_chest(noise=20.0)
    iso = geometry.resample_isotropic(ct[14:, :, :], 1.5)  # x from -42.5 mm: lung spans -49 to -5
    hu = sitk.GetArrayFromImage(iso)
    truth = true_lungs(physical_grid(iso))
    assert truth[:, :, 0].any() and (hu[:, :, 0] < -950).any()
    lungs = segment_lungs(hu, 1.5)
    assert dice(lungs, truth) > 0.9


def test_background_centres_distance_and_tumour():
    ct, mask = make_chest()
    iso_ct = geometry.resample_isotropic(ct, 1.5)
    g = physical_grid(iso_ct)
    lungs = true_lungs(g)
    tumour = sitk.GetArrayFromImage(geometry.resample_isotropic(mask, 1.5, True)).astype(bool)
    centres, dist = sample_background_centres(
        lungs, tumour, 1.5, 40, 5.0, 25.0, np.random.default_rng(1)
    )
    assert centres.shape == (40, 3) and dist.shape == (40,)
    assert ((dist >= 5) & (dist <= 25)).all()
    pts = centres * 1.5
    idx = np.argwhere(~lungs) * 1.5
    d_out = cKDTree(idx).query(pts)[0]
    d_tum = cKDTree(np.argwhere(tumour) * 1.5).query(pts)[0]
    assert lungs[tuple(centres.T)].all() and not tumour[tuple(centres.T)].any()
    assert (d_out >= 5 - 1e-6).all() and (d_tum >= 5).all()
    # the boundary is the nearer of the lung's edge and the (dilated) tumour's
    assert (np.minimum(d_out, d_tum - TUMOUR_MARGIN_MM) <= 25 + 1.5).all()
    again, _ = sample_background_centres(lungs, tumour, 1.5, 40, 5.0, 25.0, 1)
    np.testing.assert_array_equal(centres, again)
    # a lung too thin for the wanted distance yields no centre
    thin = np.zeros_like(lungs)
    thin[10:12, 10:30, 10:30] = True
    none, _ = sample_background_centres(thin, tumour, 1.5, 3, 5.0, 25.0, 0)
    assert none.shape == (0, 3)


def test_distance_to_a_mask_is_the_euclidean_distance_transform():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    mask = rng.random((20, 30, 25)) < 0.01
    for spacing in [(1.25, 0.86, 0.7), 1.0]:
        reference = ndimage.distance_transform_edt(~mask, sampling=spacing)
        np.testing.assert_allclose(_distance_to(mask, spacing), reference, atol=1e-5)
    assert (_distance_to(mask, 1.0)[mask] == 0).all()


def test_background_slices_and_skip():
    ct, mask = make_chest()
    cfg = CurationConfig(voi_mm=40.0, image_size=16, background_vois=2, background_slices=5)
    out = curate.curate_scan(ct, mask, cfg, seed=3, patient_id="R01-902")
    assert out.background_images.shape == (10, 16, 16) and out.background_skip == ""
    assert 0 <= out.background_images.min() and out.background_images.max() <= 1
    info = out.background_info
    assert len(info) == 10 and ((info.distance_mm >= 5) & (info.distance_mm <= 25)).all()
    assert (info.groupby("voi")["slice"].nunique() == 5).all()
    again = curate.curate_scan(ct, mask, cfg, seed=3, patient_id="R01-902")
    np.testing.assert_array_equal(out.background_images, again.background_images)
    # no lungs: tumour slices kept, backgrounds skipped with a reason
    ct2, mask2 = make_chest(lungs=False)
    out2 = curate.curate_scan(ct2, mask2, cfg, seed=3, patient_id="R01-903")
    assert len(out2.tumour_images) > 0 and len(out2.background_images) == 0
    assert "lung" in out2.background_skip


def test_background_slices_avoid_padding_and_tumour():
    ct = np.full((10, 6, 6), -500.0, np.float32)
    ct[:3] = -1000.0  # VOI slices beyond the scan (padding)
    mask = np.zeros(ct.shape, bool)
    mask[5:7, 2:4, 2:4] = True
    inside = np.arange(10) >= 3
    imgs, idx, px = background_slices(ct, mask, 5, 4, (-1000, 400), 0, inside=inside)
    assert sorted(idx) == [3, 4, 7, 8, 9] and (px == 0).all()
    np.testing.assert_allclose(imgs, 500 / 1400, rtol=1e-5)
    # too few clean slices: the tumour slices inside the scan come in, padding still does not
    _, idx, px = background_slices(ct, mask, 7, 4, (-1000, 400), 0, inside=inside)
    assert sorted(idx) == list(range(3, 10)) and px.sum() == 8


def test_curate_scan_rejects_empty_mask_and_grid_mismatch():
    ct, mask = make_chest()
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(CohortError, match="R01-904: empty tumour mask"):
        curate.curate_scan(ct, empty, CurationConfig(), 0, "R01-904")
    other = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    with pytest.raises(CohortError, match="R01-905: tumour mask grid"):
        curate.curate_scan(ct, other, CurationConfig(), 0, "R01-905")


# ------------------------------------------------------------------ split


def test_split_patients_patient_level_deterministic_stable():
    ids = [f"R01-{i:03d}" for i in range(20)]
    split = curate.split_patients(ids, 0.25, seed=7)
    assert (split == "test").sum() == 5 and (split == "train").sum() == 15
    assert set(np.array(ids)[split == "test"]).isdisjoint(np.array(ids)[split == "train"])
    np.testing.assert_array_equal(split, curate.split_patients(ids, 0.25, seed=7))
    shuffled = ids[::-1]
    s2 = curate.split_patients(shuffled, 0.25, seed=7)
    assert dict(zip(shuffled, s2, strict=True)) == dict(zip(ids, split, strict=True))
    assert not np.array_equal(split, curate.split_patients(ids, 0.25, seed=8))
    with pytest.raises(CohortError, match="need >= 1 test and >= 2 train"):
        curate.split_patients(["a", "b"], 0.25, seed=0)
    assert list(curate.split_patients(["a", "b", "c"], 0.1, 0)).count("test") == 1


# ------------------------------------------------------------------ the cohort folder

GOOD = {
    "R01-001": (-27.0, 0.0, 148.75),
    "R01-002": (27.0, 5.0, 140.0),
    "R01-003": (-25.0, -5.0, 160.0),
    "R01-004": (29.0, -3.0, 150.0),
}
SMALL = CurationConfig(
    spacing_mm=2.0,
    voi_mm=40.0,
    image_size=16,
    background_vois=2,
    background_slices=3,
    background_min_mm=4.0,
    background_max_mm=12.0,
    test_fraction=0.25,
    seed=0,
    workers=1,  # the fake cohort's loader lives in this process
)


@pytest.fixture()
def fake_cohort(tmp_path):
    """A raw folder with an expression file and an opener of a fake cohort of six patients:
    four good, one whose scan fails to load, one with an empty mask."""
    root = tmp_path / "raw"
    ids = [*GOOD, "R01-005", "R01-006"]
    rng = np.random.default_rng(0)
    expr = pd.DataFrame(
        rng.lognormal(1, 1, (30, len(ids))), columns=ids, index=[f"G{i}" for i in range(30)]
    )
    expr.iloc[3, 2] = np.nan
    (root / "dicom").mkdir(parents=True)
    expr.to_csv(root / "GSE103584_R01_NSCLC_RNAseq.txt", sep="\t", na_rep="NA")
    for pid in ids:
        (root / "dicom" / f"{pid}.dcm").write_bytes(pid.encode())
    series = pd.DataFrame(
        {
            "ct_series_uid": ids,
            "ct_files": [[root / "dicom" / f"{p}.dcm"] for p in ids],
            "seg_file": [root / "dicom" / f"{p}.dcm" for p in ids],
        },
        index=ids,
    )
    calls = {"load": 0}

    def load_scan(pid):
        calls["load"] += 1
        if pid == "R01-005":
            raise CohortError(f"patient {pid}: unreadable CT file {root / 'dicom' / 'R01-005.dcm'}")
        if pid == "R01-006":
            ct, mask = make_chest()
            empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
            empty.CopyInformation(mask)
            return types.SimpleNamespace(patient_id=pid, ct=ct, mask=empty)
        ct, mask = make_chest(tumour_mm=GOOD[pid], radius=6.0)
        return types.SimpleNamespace(patient_id=pid, ct=ct, mask=mask)

    cohort = types.SimpleNamespace(
        root=root,
        patients=ids,
        series=series,
        expression=expr,
        clinical=pd.DataFrame(index=ids),
        semantic=pd.DataFrame(),
        dropped=pd.DataFrame({"patient_id": ["R01-099"], "reason": ["no SEG"], "file": ["x"]}),
        load_scan=load_scan,
    )
    return root, calls, lambda r: cohort


def test_curate_cohort_end_to_end(fake_cohort, tmp_path):
    root, calls, opener = fake_cohort
    out = tmp_path / "curated"
    c = curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    assert calls["load"] == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "arrays.npz",
        "manifest.json",
        "patients.csv",
        "slices.csv",
    ]
    assert not list(tmp_path.glob(".curated.*"))
    assert c.patients == list(GOOD)
    skipped = {s["patient"]: s for s in c.manifest["skipped"]}
    assert set(skipped) == {"R01-005", "R01-006"}
    assert "unreadable CT" in skipped["R01-005"]["reason"]
    assert "empty tumour mask" in skipped["R01-006"]["reason"]
    assert skipped["R01-005"]["file"].endswith("dicom")
    assert (c.split == "test").sum() == 1 and (c.split == "train").sum() == 3
    # genes: the gene with a NaN (for a curated patient) is dropped
    assert c.genes.shape == (4, 29) and "G3" not in c.gene_names
    train = c.split == "train"
    np.testing.assert_allclose(c.genes[train].mean(0), 0, atol=1e-5)
    N, S = len(c.tumour_images), 16
    assert c.tumour_images.shape == (N, S, S) and c.tumour_masks.shape == (N, S, S)
    assert c.background_images.shape == (4 * 2 * 3, S, S)
    assert set(c.tumour_patient) == {0, 1, 2, 3} and len(c.background_patient) == 24
    assert len(c.slices) == N + 24
    counts = c.manifest["counts"]
    assert counts["subjects_found"] == 7 and counts["subjects_curated"] == 4
    assert counts["genes_in"] == 30 and counts["genes_kept"] == 29
    assert counts["tumour_slices"] == N
    assert counts["train"]["tumour_slices"] + counts["test"]["tumour_slices"] == N
    assert c.manifest["parameters"]["voi_mm"] == 40.0
    assert c.manifest["input_hashes"]["tables_sha256"]
    assert "log2(x + 1)" in c.manifest["expression"]["transform"]
    again = curated.load_curated(out)
    np.testing.assert_array_equal(again.tumour_images, c.tumour_images)
    np.testing.assert_array_equal(again.split, c.split)
    assert again.gene_names == c.gene_names


def test_rerun_reuses_and_inputs_invalidate(fake_cohort, tmp_path):
    root, calls, opener = fake_cohort
    out = tmp_path / "curated"
    curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    calls["load"] = 0
    c = curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    assert calls["load"] == 0 and (out / "manifest.json").stat().st_mtime_ns == stamp
    assert c.patients == list(GOOD)
    # a changed parameter recomputes
    curate.curate_cohort(
        root, out, CurationConfig(**{**vars(SMALL), "seed": 1}), progress=False, open_cohort=opener
    )
    assert calls["load"] == 6
    # a changed input file recomputes; the patients whose own files did not change are reused,
    # the two skipped ones are tried again
    calls["load"] = 0
    expr_file = root / "GSE103584_R01_NSCLC_RNAseq.txt"
    expr_file.write_text(expr_file.read_text() + "\n")
    seed1 = CurationConfig(**{**vars(SMALL), "seed": 1})
    first = curate.curate_cohort(root, out, seed1, progress=False, open_cohort=opener)
    assert calls["load"] == 2
    # a patient whose file changed is curated again, and so is one whose stored result is damaged
    calls["load"] = 0
    scan = root / "dicom" / "R01-001.dcm"
    os.utime(scan, ns=(scan.stat().st_atime_ns, scan.stat().st_mtime_ns + 10**9))
    curate.curate_cohort(root, out, seed1, progress=False, open_cohort=opener)
    assert calls["load"] == 3
    calls["load"] = 0
    for entry in (tmp_path / ".curated-patients").glob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:100])
    expr_file.write_text(expr_file.read_text() + "\n")
    again = curate.curate_cohort(root, out, seed1, progress=False, open_cohort=opener)
    assert calls["load"] == 6
    for name in ("tumour_images", "tumour_masks", "background_images", "genes"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    pd.testing.assert_frame_equal(again.slices, first.slices)
    # a result with another worker count is the same result: nothing is curated again
    calls["load"] = 0
    curate.curate_cohort(
        root, out, CurationConfig(**{**vars(seed1), "workers": 3}), open_cohort=opener
    )
    assert calls["load"] == 0


def test_interrupted_run_keeps_previous_result(fake_cohort, tmp_path, monkeypatch):
    root, calls, opener = fake_cohort
    out = tmp_path / "curated"
    first = curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    before = json.loads((out / "manifest.json").read_text())
    other = CurationConfig(**{**vars(SMALL), "seed": 5})

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(curated, "write_json", broken)  # dies after arrays and tables are written
    with pytest.raises(RuntimeError, match="disk full"):
        curate.curate_cohort(root, out, other, progress=False, open_cohort=opener)
    monkeypatch.undo()
    assert json.loads((out / "manifest.json").read_text()) == before
    kept = curated.load_curated(out)
    np.testing.assert_array_equal(kept.tumour_images, first.tumour_images)
    assert not list(tmp_path.glob(".curated.*"))


def test_interrupt_during_patients_keeps_previous_result(fake_cohort, tmp_path, monkeypatch):
    root, _, opener = fake_cohort
    out = tmp_path / "curated"
    curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    stamp = (out / "arrays.npz").stat().st_mtime_ns

    def interrupted(pid):
        raise KeyboardInterrupt

    monkeypatch.setattr(opener(root), "load_scan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        curate.curate_cohort(
            root,
            out,
            CurationConfig(**{**vars(SMALL), "seed": 2}),
            progress=False,
            open_cohort=opener,
        )
    assert (out / "arrays.npz").stat().st_mtime_ns == stamp
    curated.load_curated(out)


def test_load_curated_names_broken_file(fake_cohort, tmp_path):
    root, _, opener = fake_cohort
    out = tmp_path / "curated"
    curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    data = (out / "arrays.npz").read_bytes()
    (out / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CohortError, match="arrays.npz"):
        curated.load_curated(out)
    os.remove(out / "slices.csv")
    with pytest.raises(CohortError, match="slices.csv is missing"):
        curated.load_curated(out)
    # a corrupt result is not reused: the next run rebuilds it
    c = curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    assert Path(c.path) == out and curated.load_curated(out).patients == list(GOOD)


def test_refuses_to_replace_a_foreign_folder(fake_cohort, tmp_path):
    root, _, opener = fake_cohort
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CohortError, match="not a curated cohort"):
        curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    assert (out / "keep.txt").read_text() == "mine"


DEAD_PID = 99_999_999  # above any pid_max: no such process


def test_another_source_needs_replace_and_killed_runs_leave_nothing_behind(
    fake_cohort, tmp_path, monkeypatch
):
    root, calls, opener = fake_cohort
    out = tmp_path / "curated"
    old_umask = os.umask(0o027)
    try:
        curate.curate_cohort(root, out, SMALL, progress=False, open_cohort=opener)
    finally:
        os.umask(old_umask)
    # files and folder follow the umask (mkstemp alone would leave 0600)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        n: 0o640 for n in ("arrays.npz", "manifest.json", "patients.csv", "slices.csv")
    }
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    stamp = (out / "manifest.json").read_bytes()

    other = tmp_path / "other-download"
    other.mkdir()
    with pytest.raises(CohortError, match=f"curated from {root.resolve()}.*pass --replace"):
        curate.curate_cohort(other, out, SMALL, progress=False, open_cohort=opener)
    assert (out / "manifest.json").read_bytes() == stamp
    calls["load"] = 0
    replaced = curate.curate_cohort(
        other, out, SMALL, progress=False, replace=True, open_cohort=opener
    )
    assert calls["load"] == 6 and replaced.manifest["root"] == str(other.resolve())

    # a run killed between its two renames left the result as .old-PID and no folder: it is
    # put back (and reused); a dead run's half-written .tmp-PID is removed, a live one's kept
    os.replace(out, tmp_path / f".curated.old-{DEAD_PID}")
    (tmp_path / f".curated.tmp-{DEAD_PID + 1}").mkdir()
    (tmp_path / f".curated.tmp-{os.getppid()}").mkdir()
    calls["load"] = 0
    again = curate.curate_cohort(other, out, SMALL, progress=False, open_cohort=opener)
    assert calls["load"] == 0 and again.manifest["root"] == str(other.resolve())
    curate.curate_cohort(
        other, out, CurationConfig(**{**vars(SMALL), "seed": 3}), progress=False, open_cohort=opener
    )
    assert sorted(p.name for p in tmp_path.glob(".curated.*")) == [f".curated.tmp-{os.getppid()}"]


def test_a_patient_whose_files_raise_anything_is_skipped(fake_cohort, tmp_path, monkeypatch):
    root, _, opener = fake_cohort
    real = opener(root).load_scan

    def odd(pid):
        if pid == "R01-004":
            raise AttributeError("'FileDataset' object has no attribute 'Rows'")
        return real(pid)

    monkeypatch.setattr(opener(root), "load_scan", odd)
    c = curate.curate_cohort(root, tmp_path / "c", SMALL, progress=False, open_cohort=opener)
    skipped = {s["patient"]: s["reason"] for s in c.manifest["skipped"]}
    assert skipped["R01-004"] == "AttributeError: 'FileDataset' object has no attribute 'Rows'"
    assert len(c.patients) == 3
    report = curated.curation_report(c)
    assert "4 patient(s) left out:" in report  # R01-099 by the loader, three here
    assert any(line.startswith("  R01-004: AttributeError") for line in report)
    assert c.manifest["counts"]["subjects_found"] == 7


def test_too_few_patients_for_split(fake_cohort, tmp_path, monkeypatch):
    root, _, opener = fake_cohort
    real = opener(root).load_scan

    def only_two(pid):
        if pid in ("R01-003", "R01-004"):
            raise CohortError(f"patient {pid}: no CT")
        return real(pid)

    monkeypatch.setattr(opener(root), "load_scan", only_two)
    with pytest.raises(CohortError, match="cannot split 2 patients.*R01-003: CohortError"):
        curate.curate_cohort(root, tmp_path / "c", SMALL, progress=False, open_cohort=opener)


def test_explain_background_sampling_shows_the_band_and_centres():
    from radiolib.config import CurationConfig

    ct, mask = make_chest()
    cfg = CurationConfig(spacing_mm=1.5, background_vois=3)
    view = curate.explain_background_sampling(ct, mask, cfg, seed=0, patient_id="P1")
    assert view.ct.shape == view.band.shape == view.lungs.shape
    assert 0 <= view.ct.min() and view.ct.max() <= 1
    assert view.band.any() and not (view.band & ~view.lungs).any()
    assert len(view.centres) >= 1
    ys, xs = view.centres.T
    assert view.band[ys, xs].all()  # drawn centres lie in the 5-25 mm band
    # the band excludes voxels closer than 5 mm to the lung boundary (2D lower bound)
    from scipy import ndimage

    d2 = ndimage.distance_transform_edt(np.pad(view.lungs, 1), sampling=1.5)[1:-1, 1:-1]
    assert (d2[view.band] >= 5.0 - 1e-6).all()


def test_soft_tissue_share_counts_dense_pixels_outside_the_tumour():
    from radiolib.data.geometry import soft_tissue_share

    hu_window = (-1000.0, 400.0)
    lung, tissue = (-850 + 1000) / 1400, (40 + 1000) / 1400  # windowed HU
    images = np.full((2, 10, 10), lung, np.float32)
    images[:, :, :3] = tissue  # chest wall: 30 of 100 pixels
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[1, 4:8, 4:8] = 1  # a 16-pixel tumour, itself dense
    images[1][masks[1] > 0] = tissue
    share = soft_tissue_share(images, hu_window, masks)
    assert share[0] == pytest.approx(0.30)
    assert share[1] == pytest.approx(30 / 84)  # the tumour does not count as context
    assert soft_tissue_share(images[:1], hu_window)[0] == pytest.approx(0.30)
    with pytest.raises(ValueError, match="outside the window"):
        soft_tissue_share(images, hu_window, threshold_hu=500)


def test_one_or_two_workers_curate_the_same_cohort(tmp_path):
    """Patients curated in two processes: the same patients, arrays, tables and manifest, in
    the same order, as one at a time in this process."""
    from radiolib.data.phantom import write_phantom

    raw = tmp_path / "raw"
    write_phantom(raw, patients=5, matrix=64, progress=False)
    cfg = CurationConfig(**{**vars(SMALL), "background_vois": 1, "background_slices": 4})
    one = curate.curate_cohort(raw, tmp_path / "one", cfg, progress=False)
    two = curate.curate_cohort(
        raw, tmp_path / "two", CurationConfig(**{**vars(cfg), "workers": 2}), progress=False
    )
    assert one.patients == two.patients and len(one.patients) >= 3
    np.testing.assert_array_equal(one.split, two.split)
    assert one.gene_names == two.gene_names
    for name in curated.ARRAY_KEYS[2:]:
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    for table in ("slices.csv", "patients.csv"):
        assert (one.path / table).read_bytes() == (two.path / table).read_bytes(), table
    m1, m2 = ({k: v for k, v in c.manifest.items() if k != "created"} for c in (one, two))
    assert m1 == m2
