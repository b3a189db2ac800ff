"""Tests of radiolib.radiogenomics on planted structure with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from radiolib import metrics as M
from radiolib import radiogenomics as R


class LinearGeneCode(nn.Module):
    """Stand-in with the GAN's ``gene_code`` interface: phi(g) = g W, W nonzero only on the rows
    of the genes it uses."""

    name = "proposed"

    def __init__(self, n_genes: int, used: list[int], code_dim: int = 4, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.zeros(n_genes, code_dim)
        w[used] = torch.randn(len(used), code_dim, generator=gen)
        self.weight = nn.Parameter(w)

    def gene_code(self, genes: torch.Tensor) -> torch.Tensor:
        return genes @ self.weight


class NoCode:
    name = "inpainting"

    def gene_code(self, genes):
        return None


def _blobs(p: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0]], float)
    truth = np.repeat(np.arange(3), p // 3)
    return centres[truth] + rng.normal(0, 0.5, (len(truth), 3)), truth


# ------------------------------------------------------------------ codes, embeddings, clusters


def test_gene_codes_batches_and_rejects_no_code():
    gan = LinearGeneCode(10, [0, 1, 2])
    g = np.random.default_rng(0).normal(size=(7, 10)).astype(np.float32)
    c = R.gene_codes(gan, g, batch_size=3)
    np.testing.assert_allclose(c, g @ gan.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="inpainting"):
        R.gene_codes(NoCode(), g)


def test_clusters_separated_and_shuffled():
    x, truth = _blobs(30)
    for method in ("ward", "kmeans"):
        labels = R.cluster(x, 3, seed=0, method=method)
        assert R.cluster_agreement(labels, truth)["ari"] == pytest.approx(1.0)
        assert R.cluster_agreement(labels, truth)["nmi"] == pytest.approx(1.0)
        assert labels[0] == 0  # numbered in order of first appearance
    shuffled = np.random.default_rng(1).permutation(truth)
    assert abs(R.cluster_agreement(shuffled, truth)["ari"]) < 0.15
    assert R.silhouette(x, truth) > 0.7
    assert R.silhouette(x, shuffled) < 0.1
    with pytest.raises(ValueError, match="k must"):
        R.cluster(x, 1)


def test_tsne_deterministic_and_clips_perplexity():
    x, _ = _blobs(15)
    with pytest.warns(UserWarning, match="perplexity"):
        a = R.embed_tsne(x, perplexity=30.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = R.embed_tsne(x, perplexity=30.0, seed=3)
    assert a.shape == (15, 2)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ probes


def test_linear_probe_r2_linear_vs_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = x @ np.array([1.0, -2.0, 0.5, 0, 0, 0]) + 0.01 * rng.normal(size=40)
    assert R.linear_probe_r2(x, y, folds=5, seed=0) > 0.98
    assert R.linear_probe_r2(x, rng.normal(size=40), folds=5, seed=0) < 0.1
    y_nan = y.copy()
    y_nan[3] = np.nan
    assert R.linear_probe_r2(x, y_nan) > 0.98
    table = R.probe_table(
        {"good": x, "bad": rng.normal(size=(40, 6))},
        pd.DataFrame({"t": y, "noise": rng.normal(size=40)}),
    )
    assert table.loc["good", "t"] > 0.98 and table.loc["bad", "t"] < 0.2
    assert table.loc["good", "noise"] < 0.2
    with pytest.raises(ValueError, match="not numeric"):
        R.probe_table({"good": x}, pd.DataFrame({"s": ["a"] * 40}))


# ------------------------------------------------------------------ attribution


def test_gene_attribution_ranks_used_genes_first():
    used = [2, 5, 11]
    gan = LinearGeneCode(20, used)
    g = np.random.default_rng(0).normal(size=(25, 20))
    linked = np.zeros(20, bool)
    linked[used] = True
    for target in ("norm", "variance"):
        a = R.gene_attribution(gan, g, target=target)
        assert a.shape == (20,)
        assert np.all(a[~linked] == 0) and np.all(a[linked] > 0)
        s = R.attribution_scores(a, linked)
        assert s == {"precision_at_k": 1.0, "auroc": 1.0, "k": 3}
    # a reversed ranking scores 0
    assert R.attribution_scores(-a, linked)["precision_at_k"] == 0.0
    assert R.attribution_scores(-a, linked)["auroc"] == 0.0


def test_trait_attribution_and_end_to_end_links():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 12))
    gan = LinearGeneCode(12, [0, 1, 2, 3], code_dim=4)
    gan.weight.data[:4] = torch.eye(4)  # code = genes 0..3
    traits = pd.DataFrame(
        {"size": g[:, 0] + 0.05 * rng.normal(size=40), "density": g[:, 3] - g[:, 2]}
    )
    att = R.trait_attribution(gan, g, traits)
    assert att.shape == (12, 2)
    assert int(att["size"].idxmax()) == 0
    assert set(np.argsort(-att["density"].to_numpy())[:2]) == {2, 3}
    names = [f"G{i}" for i in range(12)]
    found = R.end_to_end_links(att, names, {"size": 1, "density": 2})
    assert found == {("G0", "size"), ("G2", "density"), ("G3", "density")}
    rec = R.link_recovery(found, {("G0", "size"), ("G2", "density"), ("G5", "density")})
    assert rec == {"true_positives": 2, "false_positives": 1, "recall": 2 / 3, "precision": 2 / 3}


# ------------------------------------------------------------------ conventional map


def _planted_expression(p: int = 30, per_module: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(p, 3))
    planted = np.repeat(np.arange(3), per_module)
    expr = latent[:, planted] + 0.3 * rng.normal(size=(p, len(planted)))
    order = rng.permutation(len(planted))  # genes of a module not adjacent
    return expr[:, order], planted[order], latent


def test_metagenes_recover_planted_modules():
    expr, planted, latent = _planted_expression()
    matrix, labels = R.metagenes(expr, n_modules=3)
    assert matrix.shape == (30, 3) and labels.shape == (24,)
    assert R.cluster_agreement(labels, planted)["ari"] == pytest.approx(1.0)
    for k in range(3):  # each metagene tracks its latent factor
        factor = planted[labels == k][0]
        assert abs(np.corrcoef(matrix[:, k], latent[:, factor])[0, 1]) > 0.95
    _, labels_t = R.metagenes(expr, distance_threshold=0.6)
    assert R.cluster_agreement(labels_t, planted)["ari"] == pytest.approx(1.0)
    mods = R.module_genes(labels, [f"g{i}" for i in range(24)])
    assert sorted(len(v) for v in mods.values()) == [8, 8, 8]
    with pytest.raises(ValueError, match="exactly one"):
        R.metagenes(expr)


def test_benjamini_hochberg_by_hand():
    q = R.benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    # worked by hand: p m / rank, then the running minimum from the largest p down
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    expect = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.74 / 7, 0.216, 0.216, 0.216]
    np.testing.assert_allclose(R.benjamini_hochberg(p), expect)
    np.testing.assert_allclose(R.benjamini_hochberg(p[::-1]), expect[::-1])
    q = R.benjamini_hochberg([0.5, np.nan, 0.9])
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.9) and q[2] == pytest.approx(0.9)
    assert R.benjamini_hochberg([0.9, 0.95])[0] <= 1.0
    with pytest.raises(ValueError):
        R.benjamini_hochberg([1.5])


def test_spearman_map_planted_and_links():
    expr, planted, latent = _planted_expression(p=40)
    matrix, labels = R.metagenes(expr, n_modules=3)
    ids = [f"R01-{i:03d}" for i in range(40)]
    mg = R.metagene_frame(matrix, ids)
    rng = np.random.default_rng(5)
    target = int(labels[np.flatnonzero(planted == 1)[0]])  # metagene of latent factor 1
    feats = pd.DataFrame(
        {
            "diameter_mm": np.exp(mg[f"M{target}"]) + 0.01 * rng.normal(size=40),
            "noise": rng.normal(size=40),
            "constant": np.ones(40),
        },
        index=ids,
    )
    feats = feats.iloc[::-1]  # order must not matter: rows are matched by patient id
    smap = R.spearman_map(feats, mg)
    assert len(smap) == 9 and smap.loc[smap.feature == "constant", "q"].isna().all()
    row = smap[(smap.feature == "diameter_mm") & (smap.metagene == f"M{target}")].iloc[0]
    assert row.rho > 0.95 and row.q < 1e-6
    a = feats.loc[ids, "diameter_mm"].to_numpy()
    assert row.p == pytest.approx(stats.spearmanr(a, mg[f"M{target}"]).pvalue)
    sig = R.significant_links(smap, alpha=0.05)
    assert (sig.feature == "diameter_mm").all() and sig.iloc[0].metagene == f"M{target}"
    names = [f"g{i}" for i in range(24)]
    found = R.conventional_links(sig.iloc[:1], R.module_genes(labels, names))
    truth = {(names[i], "diameter_mm") for i in np.flatnonzero(planted == 1)}
    assert R.link_recovery(found, truth)["recall"] == 1.0
    assert R.link_recovery(found, truth)["precision"] == 1.0
    with pytest.raises(ValueError, match="shared"):
        R.spearman_map(feats.set_index(pd.Index([f"X{i}" for i in range(40)])), mg)


def test_spearman_map_semantic_frame_with_missing_values():
    # AIM-style semantic features: ordinal codes, one patient without an annotation
    sem = pd.DataFrame(
        {
            "attenuation": [1, 1, 2, 2, 3, 3, np.nan, 1],
            "margin_spiculated": [0, 1, 0, 1, 0, 1, 0, 1],
        },
        index=[f"R01-{i}" for i in range(8)],
    )
    mg = pd.DataFrame({"M0": [0.1, 0.2, 0.5, 0.4, 0.9, 1.0, 0.0, 0.15]}, index=sem.index)
    smap = R.spearman_map(sem, mg)
    att = smap[smap.feature == "attenuation"].iloc[0]
    assert att.n == 7
    ok = sem.attenuation.notna()
    assert att.rho == pytest.approx(stats.spearmanr(sem.attenuation[ok], mg.M0[ok]).statistic)
    with pytest.raises(ValueError, match="not numeric"):
        R.spearman_map(sem.assign(shape=["round"] * 8), mg)


def test_radiomic_features_on_disks():
    sizes = [3.0, 5.0, 7.0]
    imgs = np.stack([np.where(M.disk((32, 32), None, r), 0.7, 0.05) for r in sizes])
    masks = np.stack([M.disk((32, 32), None, r) for r in sizes]).astype(np.uint8)
    df = R.radiomic_features(imgs, masks, index=["a", "b", "c"], voi_mm=32.0)
    assert list(df.index) == ["a", "b", "c"]
    assert {"shape2D_MaximumDiameter", "firstorder_Mean", "glcm_Contrast"} <= set(df.columns)
    assert df["shape2D_MaximumDiameter"].is_monotonic_increasing
    np.testing.assert_allclose(df["firstorder_Mean"], -1000 + 0.7 * 1400, rtol=1e-4)
    np.testing.assert_allclose(df["shape2D_PixelSurface"], masks.sum((1, 2)))
    masks[1] = 0
    with pytest.raises(Exception, match="slice of b"):
        R.radiomic_features(imgs, masks, index=["a", "b", "c"])


def test_representative_slices():
    masks = np.zeros((4, 8, 8))
    masks[0, :2, :2] = 1
    masks[1, :3, :3] = 1
    masks[2, :1, :1] = 1
    masks[3, :2, :1] = 1
    imgs = np.arange(4)[:, None, None] * np.ones((4, 8, 8))
    im, mk, ids = R.representative_slices(imgs, masks, np.array([5, 5, 2, 2]))
    assert list(ids) == [2, 5]
    assert im[0, 0, 0] == 3 and im[1, 0, 0] == 1
