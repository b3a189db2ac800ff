"""Tests of radiolib.metrics and of the evaluation built on it (radiolib.pairs, radiolib.evaluation,
radiolib.subtype_classifier): every number against scikit-image, scipy or a hand computation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)
from torch import nn

from radiolib import evaluation as E
from radiolib import metrics as M
from radiolib import pairs as P
from radiolib import subtype_classifier as SC
from radiolib.config import get_profile


def _pair(seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    return a, b


def _blob(size: int, radius: float, level: float, bg: float = 0.1, blur: float = 0.0):
    m = M.disk((size, size), None, radius)
    img = np.where(m, level, bg).astype(np.float64)
    if blur > 0:
        img = ndimage.gaussian_filter(img, blur)
    return img, m


# ------------------------------------------------------------------ image metrics


def test_metrics_match_skimage_whole_image():
    a, b = _pair()
    assert M.mse(a, b) == pytest.approx(mean_squared_error(a, b), rel=1e-12)
    assert M.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), rel=1e-12)
    assert M.ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=1), rel=1e-12)
    d = M.region_metrics(a, b)
    assert d["region_px"] == a.size and d["mse"] == pytest.approx(np.mean((a - b) ** 2))


def test_metrics_in_region_by_hand():
    a, b = _pair(1)
    region = np.zeros_like(a, bool)
    region[5:15, 8:20] = True
    expect_mse = np.mean((a[5:15, 8:20] - b[5:15, 8:20]) ** 2)
    _, full = structural_similarity(a, b, data_range=1, full=True)
    d = M.region_metrics(a, b, region)
    assert d["mse"] == pytest.approx(expect_mse, rel=1e-12)
    assert d["psnr"] == pytest.approx(10 * np.log10(1 / expect_mse), rel=1e-12)
    assert d["ssim"] == pytest.approx(full[5:15, 8:20].mean(), rel=1e-12)
    assert d["region_px"] == 120


def test_identical_images_and_psnr_inf():
    a, _ = _pair(2)
    d = M.region_metrics(a, a.copy())
    assert d["mse"] == 0 and d["ssim"] == pytest.approx(1.0) and d["psnr"] == np.inf
    # a hand case: a constant shift of 0.1 -> MSE 0.01, PSNR 20 dB
    x = np.full((16, 16), 0.4)
    assert M.mse(x, x + 0.1) == pytest.approx(0.01)
    assert M.psnr(x, x + 0.1) == pytest.approx(20.0)


def test_bad_inputs_raise():
    a, b = _pair()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.mse(a * 2 - 1, b)
    with pytest.raises(ValueError, match="empty"):
        M.mse(a, b, np.zeros_like(a, bool))
    with pytest.raises(ValueError, match="shape"):
        M.mse(a, b[:-1])
    with pytest.raises(ValueError, match="NaN"):
        M.mse(np.where(a > 0.5, np.nan, a), b)


def test_disk_area_and_centre():
    for r in (3.0, 7.5, 12.0):
        d = M.disk((64, 64), (31.5, 31.5), r)
        assert abs(d.sum() - np.pi * r**2) <= 2 * np.pi * r * 1.5  # within 1.5 px of the rim
        assert abs(np.sqrt(d.sum() / np.pi) - r) < 1.5
    d = M.disk((9, 9), (4, 4), 1)
    assert d.sum() == 5 and d[4, 4] and d[3, 4] and not d[3, 3]


# ------------------------------------------------------------------ aggregation


def test_bootstrap_ci_coverage():
    rng = np.random.default_rng(123)
    covered = 0
    reps = 200
    for k in range(reps):
        x = rng.normal(0, 1, 200)
        mean, lo, hi = M.bootstrap_ci(x, n=300, level=0.95, seed=k)
        assert lo <= mean <= hi
        covered += lo <= 0 <= hi
    assert 0.88 <= covered / reps <= 0.99


def test_bootstrap_ci_deterministic_and_validates():
    x = np.arange(10.0)
    assert M.bootstrap_ci(x, seed=3) == M.bootstrap_ci(x, seed=3)
    assert M.bootstrap_ci(x)[0] == 4.5
    with pytest.raises(ValueError):
        M.bootstrap_ci([1.0, np.nan])


def test_table1_caps_psnr_and_compares_with_paper():
    df = pd.DataFrame(
        {
            "method": ["proposed"] * 3 + ["baseline"] * 2,
            "mse": [0.0, 0.01, 0.02, 0.005, 0.007],
            "ssim": [1.0, 0.8, 0.9, 0.7, 0.75],
            "psnr": [np.inf, 20.0, 10 * np.log10(50), 23.0, 21.0],
        }
    )
    t = E.table1(df, n=200)
    assert t.loc["proposed", "mse"] == pytest.approx(0.01)
    assert t.loc["proposed", "psnr_capped"] == 1
    assert t.loc["proposed", "psnr"] == pytest.approx((100 + 20 + 10 * np.log10(50)) / 3)
    assert t.loc["baseline", "n"] == 2
    assert t.loc["baseline", "ssim_low"] <= 0.725 <= t.loc["baseline", "ssim_high"]
    side = E.compare_with_paper(t)
    assert side.loc[("proposed", "ssim"), "paper"] == 0.88
    assert side.loc[("proposed", "ssim"), "ours"] == pytest.approx(0.9)
    assert np.isnan(side.loc[("inpainting", "mse"), "ours"])
    assert E.PAPER_TABLE1.loc["inpainting", "psnr"] == 20.94


# ------------------------------------------------------------------ realism


def _blobs(n: int, seed: int, level: float = 0.6, size: int = 24):
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    for _ in range(n):
        img, m = _blob(size, rng.uniform(3, 6), level + rng.normal(0, 0.05), blur=0.7)
        imgs.append(np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1))
        masks.append(m)
    return np.stack(imgs), np.stack(masks)


def test_mmd_and_kid_same_vs_shifted():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 5))
    z = rng.normal(size=(60, 5)) + np.array([1.0, 0, 0, 0, 0])
    mmd_same, p_same = M.mmd_test(x, y, n_perm=200, seed=0)
    mmd_shift, p_shift = M.mmd_test(x, z, n_perm=200, seed=0)
    assert p_same > 0.05 and p_shift < 0.01
    assert abs(mmd_same) < mmd_shift
    assert abs(M.kid(x, y)) < 0.1 * M.kid(x, z)


def test_kid_by_hand():
    x = np.array([[0.0], [1.0]])
    y = np.array([[2.0], [3.0]])
    # k(a, b) = (ab + 1)^3 with F = 1: kxx off-diagonal 1, kyy off-diagonal 7^3, kxy mean
    kxy = np.mean([(0 * 2 + 1) ** 3, (0 * 3 + 1) ** 3, (1 * 2 + 1) ** 3, (1 * 3 + 1) ** 3])
    assert M.kid(x, y, standardise=False) == pytest.approx(1 + 343 - 2 * kxy)


def test_realism_on_slices():
    ri, rm = _blobs(40, 1)
    si, sm = _blobs(40, 2)
    bi, bm = _blobs(40, 3, level=0.35)
    same = M.realism(ri, rm, si, sm, n_perm=200)
    diff = M.realism(ri, rm, bi, bm, n_perm=200)
    assert same["p"] > 0.05 and diff["p"] < 0.01 and diff["kid"] > same["kid"]
    f = M.realism_features(ri[:2], np.zeros_like(rm[:2]))  # empty masks are defined
    assert f.shape == (2, 17) and np.all(np.isfinite(f)) and np.all(f[:, 0] == 0)


# ------------------------------------------------------------------ gene control


def test_measure_traits_known_disk():
    img, m = _blob(64, 10.0, 0.5, bg=0.0)
    t = M.measure_traits(img, m, (-1000.0, 400.0), voi_mm=64.0)  # 1 mm per pixel
    assert t["diameter_mm"] == pytest.approx(20.0, rel=0.02)
    assert t["attenuation_hu"] == pytest.approx(-300.0)
    t2 = M.measure_traits(img, m, (-1000.0, 400.0), voi_mm=32.0)
    assert t2["diameter_mm"] == pytest.approx(t["diameter_mm"] / 2)
    sharp = [
        M.measure_traits(*_blob(64, 10.0, 0.5, bg=0.0, blur=s), (-1000.0, 400.0))[
            "margin_sharpness"
        ]
        for s in (0.5, 1.5, 3.0)
    ]
    assert sharp[0] > sharp[1] > sharp[2] > 0
    # a denser tumour with the same blur keeps its sharpness (contrast-normalised)
    dense = M.measure_traits(*_blob(64, 10.0, 0.9, bg=0.0, blur=1.5), (-1000.0, 400.0))
    assert dense["margin_sharpness"] == pytest.approx(sharp[1], rel=0.05)
    empty = M.measure_traits(img, np.zeros_like(m), (-1000.0, 400.0))
    assert empty["diameter_mm"] == 0 and np.isnan(empty["attenuation_hu"])


def test_trait_correlation():
    rng = np.random.default_rng(0)
    truth = pd.DataFrame({"diameter_mm": rng.uniform(5, 30, 30), "other": rng.random(30)})
    measured = pd.DataFrame(
        {"diameter_mm": truth["diameter_mm"] ** 2, "attenuation_hu": rng.random(30)},
        index=truth.index,
    )
    r = M.trait_correlation(measured, truth)
    assert list(r.index) == ["diameter_mm"]
    assert r.loc["diameter_mm", "rho"] == pytest.approx(1.0) and r.loc["diameter_mm", "p"] < 1e-6
    r2 = M.trait_correlation(measured, truth, columns={"attenuation_hu": "other"})
    assert abs(r2.loc["attenuation_hu", "rho"]) < 0.5
    with pytest.raises(ValueError, match="no trait"):
        M.trait_correlation(measured[["attenuation_hu"]], truth)


def test_subtype_classifier_learns_and_is_deterministic():
    rng = np.random.default_rng(0)
    imgs, labels = [], []
    for k in range(48):
        label = k % 2
        img, _ = _blob(16, 5.0 if label else 2.5, 0.7, blur=0.5)
        imgs.append(np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1))
        labels.append(label)
    imgs, labels = np.stack(imgs).astype(np.float32), np.array(labels)
    state = torch.get_rng_state()
    m1 = SC.train_subtype_classifier(imgs[:32], labels[:32], steps=80, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    m2 = SC.train_subtype_classifier(imgs[:32], labels[:32], steps=80, seed=1)
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)
    assert SC.classifier_accuracy(m1, imgs[32:], labels[32:]) >= 0.9


# ------------------------------------------------------------------ counterfactual, diversity


def test_counterfactual_effect_by_hand():
    bg = np.full((8, 8), 0.2)
    imgs = np.stack([bg.copy(), bg.copy()])
    imgs[0, 2:4, 2:4] = 0.8
    imgs[1, 2:4, 2:4] = 0.4
    imgs[1, 7, 7] = 0.3  # one changed background pixel
    masks = np.zeros_like(imgs)
    masks[:, 2:4, 2:4] = 1
    e = M.counterfactual_effect(imgs, masks, bg)
    assert e["inside"] == pytest.approx(0.4)
    assert e["outside"] == pytest.approx(0.1 / 60)
    assert e["background_change"] == pytest.approx(0.1 / 120)
    assert e["union_px"] == 4 and e["ratio"] == pytest.approx(0.4 / (0.1 / 60))


def test_diversity():
    x = np.zeros((3, 8, 8))
    x[1] += 0.5
    x[2] += 1.0
    assert M.diversity(x) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert M.diversity(np.repeat(x[:1], 4, 0)) == 0
    assert M.diversity(np.repeat(x[:1], 4, 0) + 0.3, metric="1-ssim") == pytest.approx(0, abs=1e-9)
    assert M.diversity(x, max_pairs=2, seed=0) in (pytest.approx(0.5), pytest.approx(0.75))


# ------------------------------------------------------------------ GAN helpers


@dataclass
class _Out:
    image: torch.Tensor
    mask: torch.Tensor


class DiskPainterGAN(nn.Module):
    """Stand-in with the GAN evaluation interface: paints a centred disk whose brightness is
    the first gene, radius the second, and leaves the rest of the background unchanged."""

    name = "proposed"

    def __init__(self, inpaint: bool = False):
        super().__init__()
        self.inpaint = inpaint
        self.name = "inpainting" if inpaint else "proposed"

    def synthesize(self, background, genes, noise=None, hole=None):
        b, _, s, _ = background.shape
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        r2 = (yy - (s - 1) / 2) ** 2 + (xx - (s - 1) / 2) ** 2
        radius = 3.0 + genes[:, 1].abs().clamp(max=4.0)
        mask = (r2[None] <= radius[:, None, None] ** 2).float()[:, None]
        if self.inpaint:
            mask = hole
        level = torch.tanh(genes[:, 0])[:, None, None, None]
        return _Out(image=torch.where(mask > 0.5, level, background), mask=mask)


def _eval_pairs(n: int = 6, s: int = 32):
    rng = np.random.default_rng(0)
    genes = rng.normal(size=(n, 4)).astype(np.float32)
    donor = np.stack([_blob(s, 3 + abs(g[1]), 0.6)[0] for g in genes])
    return {
        "background": rng.uniform(0.0, 0.3, (n, s, s)).astype(np.float32),
        "genes": genes,
        "real_tumour": donor.astype(np.float32),
        "real_mask": (donor > 0.3).astype(np.uint8),
        "donor_patient": np.arange(n),
    }


def test_synthesize_and_evaluate_pairs():
    cfg = get_profile("smoke")
    pairs = _eval_pairs()
    synths = {
        "proposed": P.synthesize_pairs(DiskPainterGAN(), pairs, batch_size=4),
        "inpainting": P.synthesize_pairs(
            DiskPainterGAN(inpaint=True), pairs, batch_size=4, inpaint_margin=1.2
        ),
    }
    s = synths["proposed"]
    assert s["image"].shape == (6, 32, 32) and s["image"].min() >= 0 and s["image"].max() <= 1
    assert s["method"] == "proposed"
    radius = 1.2 * np.sqrt(pairs["real_mask"].sum((1, 2)) / np.pi)
    np.testing.assert_allclose(s["hole_radius"], radius)
    keep = P.background_keep_region(synths, dilation_px=cfg.model.erosion_px)
    assert not (keep & synths["inpainting"]["hole"]).any()
    frames = [P.evaluate_pairs(m, synths[m], pairs, cfg, keep) for m in synths]
    df = pd.concat(frames, ignore_index=True)
    assert len(df) == 12
    # the painter leaves the kept region untouched: only float rounding of 2x - 1 remains
    assert np.all(df["bg_mse"] < 1e-12) and np.all(df["bg_psnr"] > 100)
    assert np.all(df["bg_ssim"] > 0.999999)
    # Table 1 region of inpainting: disk of 1.5 x the hole radius
    inp = df[df.method == "inpainting"].reset_index()
    expect = [M.disk((32, 32), None, 1.5 * r).sum() for r in synths["inpainting"]["hole_radius"]]
    assert list(inp["region_px"]) == expect
    prop = df[df.method == "proposed"].reset_index()
    i = 2
    img, bg = synths["proposed"]["image"][i], pairs["background"][i]
    assert prop.loc[i, "mse"] == pytest.approx(np.mean((img - bg) ** 2), rel=1e-6)
    # gene control: synthetic diameter follows the donor's (both set by gene 1)
    r = M.trait_correlation(
        prop[["synth_diameter_mm"]].rename(columns=lambda c: c[6:]),
        prop[["donor_diameter_mm"]].rename(columns=lambda c: c[6:]),
    )
    assert r.loc["diameter_mm", "rho"] > 0.8
    t = E.table1(df, n=100)
    assert set(t.index) == {"proposed", "inpainting"} and t.loc["proposed", "psnr_capped"] == 0


def test_pairs_validation():
    pairs = _eval_pairs()
    del pairs["genes"]
    with pytest.raises(ValueError, match="genes"):
        P.synthesize_pairs(DiskPainterGAN(), pairs)
    pairs = _eval_pairs()
    pairs["real_mask"][1] = 0
    with pytest.raises(ValueError, match=r"pairs \[1\]"):
        P.synthesize_pairs(DiskPainterGAN(), pairs)


def test_bootstrap_over_donors_covers_what_pairs_cannot():
    """Pairs drawn from few donors are not independent: an interval over pairs is too narrow
    for the population mean, one over donors covers it near the nominal rate."""
    rng = np.random.default_rng(7)
    reps, covered_pairs, covered_donors = 80, 0, 0
    for k in range(reps):
        donor = np.repeat(np.arange(12), 20)
        x = rng.normal(0, 1, 12)[donor] + rng.normal(0, 0.1, donor.size)
        _, lo_p, hi_p = M.bootstrap_ci(x, n=200, seed=k)
        _, lo_d, hi_d = M.bootstrap_ci(x, [donor], n=200, seed=k)
        assert hi_d - lo_d > 2 * (hi_p - lo_p)
        covered_pairs += lo_p <= 0 <= hi_p
        covered_donors += lo_d <= 0 <= hi_d
    assert covered_pairs / reps < 0.5
    assert covered_donors / reps > 0.8


def test_bootstrap_crosses_donors_and_seeds_and_takes_any_statistic():
    donor = np.tile(np.arange(5), 3)
    seed = np.repeat(np.arange(3), 5)
    x = seed * 10.0 + donor  # seeds dominate the spread
    est, lo, hi = M.bootstrap(lambda r: x[r].mean(), x.size, [donor, seed], n=300)
    assert est == pytest.approx(x.mean())
    assert hi - lo > 8  # the seed-to-seed spread shows
    _, lo1, hi1 = M.bootstrap(lambda r: x[r].mean(), x.size, [donor], n=300)
    assert hi1 - lo1 < hi - lo
    with pytest.raises(ValueError, match="shape"):
        M.bootstrap(lambda r: 0.0, x.size, [donor[:3]])


def test_table1_names_its_units():
    df = pd.DataFrame(
        {
            "method": ["a"] * 6,
            "mse": [1.0, 2, 3, 4, 5, 6],
            "donor_patient": [0, 0, 1, 1, 2, 2],
            "seed": [0, 1, 0, 1, 0, 1],
        }
    )
    t = E.table1(df, ["mse"], n=50)
    assert t.loc["a", "units"] == "3 donor_patient x 2 seed"
    assert E.table1(df.drop(columns=["donor_patient", "seed"]), ["mse"], n=50).loc[
        "a", "units"
    ] == ("pairs")


def test_anchors_bound_table1():
    pairs = _eval_pairs()
    anchors = P.anchor_syntheses(pairs)
    bg, real = pairs["background"], pairs["real_mask"].astype(bool)
    assert np.array_equal(anchors["unchanged"]["image"], bg)
    assert anchors["unchanged"]["mask"].sum() == 0
    oracle = anchors["oracle"]
    assert np.array_equal(oracle["image"][real], pairs["real_tumour"][real])
    assert np.array_equal(oracle["image"][~real], bg[~real])
    assert np.array_equal(oracle["mask"] > 0.5, real)


def test_mechanism_per_pair_reads_maps_inside_and_outside_the_mask():
    n, s = 2, 16
    mask = np.zeros((n, s, s), np.float32)
    mask[:, 6:10, 6:10] = 1
    mask[1] = 0  # an empty prediction
    fine = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    fine[1] = 0.3
    coarse = np.full((n, s, s), 0.5, np.float32)
    synth = {"mask": mask, "weight_maps": [coarse, fine], "weight_levels": [8, 16]}
    out = P.mechanism_per_pair(synth, dilation_px=5)
    assert list(out["mask_px"]) == [16, 0] and list(out["mask_empty"]) == [0, 1]
    assert out.loc[0, "w16_inside"] == pytest.approx(0.9)
    assert out.loc[0, "w16_outside"] == pytest.approx(0.1)
    assert np.isnan(out.loc[1, "w16_inside"]) and out.loc[1, "w16_outside"] == pytest.approx(0.3)
    assert out.loc[0, "w8_inside"] == pytest.approx(0.5)
