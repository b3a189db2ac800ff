"""Tests of radiolib.radiogenomics on planted structure with known answers, and of the signal
sweep's training (radiolib.sweeps) and reading."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from radiolib import metrics as M
from radiolib import sweeps
from radiolib.config import get_profile
from radiolib.data.dataset import from_net, to_net
from radiolib.data.phantom import TRAITS, PhantomTruth, load_truth
from radiolib.errors import CohortError, MissingRunError
from radiolib.radiogenomics import codes, conventional, ground_truth, scoring
from radiolib.study import Workspace
from tests.train_worker import SIZE, tiny_cohort, tiny_gan, tiny_profile


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


class NoCode(nn.Module):
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
    c = codes.gene_codes(gan, g, batch_size=3)
    np.testing.assert_allclose(c, g @ gan.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="inpainting"):
        codes.gene_codes(NoCode(), g)


def test_clusters_separated_and_shuffled():
    x, truth = _blobs(30)
    for method in ("ward", "kmeans"):
        labels = codes.cluster(x, 3, seed=0, method=method)
        assert codes.cluster_agreement(labels, truth)["ari"] == pytest.approx(1.0)
        assert codes.cluster_agreement(labels, truth)["nmi"] == pytest.approx(1.0)
        assert labels[0] == 0  # numbered in order of first appearance
    shuffled = np.random.default_rng(1).permutation(truth)
    assert abs(codes.cluster_agreement(shuffled, truth)["ari"]) < 0.15
    assert codes.silhouette(x, truth) > 0.7
    assert codes.silhouette(x, shuffled) < 0.1
    with pytest.raises(ValueError, match="k must"):
        codes.cluster(x, 1)


def test_tsne_deterministic_and_clips_perplexity():
    x, _ = _blobs(15)
    with pytest.warns(UserWarning, match="perplexity"):
        a = codes.embed_tsne(x, perplexity=30.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = codes.embed_tsne(x, perplexity=30.0, seed=3)
    assert a.shape == (15, 2)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ probes


def test_linear_probe_r2_linear_vs_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = x @ np.array([1.0, -2.0, 0.5, 0, 0, 0]) + 0.01 * rng.normal(size=40)
    assert codes.linear_probe_r2(x, y, folds=5, seed=0) > 0.98
    assert codes.linear_probe_r2(x, rng.normal(size=40), folds=5, seed=0) < 0.1
    y_nan = y.copy()
    y_nan[3] = np.nan
    assert codes.linear_probe_r2(x, y_nan) > 0.98
    table = codes.probe_table(
        {"good": x, "bad": rng.normal(size=(40, 6))},
        pd.DataFrame({"t": y, "noise": rng.normal(size=40)}),
    )
    assert table.loc["good", "t"] > 0.98 and table.loc["bad", "t"] < 0.2
    assert table.loc["good", "noise"] < 0.2
    with pytest.raises(ValueError, match="not numeric"):
        codes.probe_table({"good": x}, pd.DataFrame({"s": ["a"] * 40}))


# ------------------------------------------------------------------ attribution


def test_gene_attribution_ranks_used_genes_first():
    used = [2, 5, 11]
    gan = LinearGeneCode(20, used)
    g = np.random.default_rng(0).normal(size=(25, 20))
    linked = np.zeros(20, bool)
    linked[used] = True
    for target in ("norm", "variance"):
        a = codes.gene_attribution(gan, g, target=target)
        assert a.shape == (20,)
        assert np.all(a[~linked] == 0) and np.all(a[linked] > 0)
        s = ground_truth.attribution_scores(a, linked)
        assert s == {"precision_at_k": 1.0, "auroc": 1.0, "k": 3}
    # a reversed ranking scores 0
    assert ground_truth.attribution_scores(-a, linked)["precision_at_k"] == 0.0
    assert ground_truth.attribution_scores(-a, linked)["auroc"] == 0.0


def test_trait_attribution_and_end_to_end_links():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 12))
    gan = LinearGeneCode(12, [0, 1, 2, 3], code_dim=4)
    gan.weight.data[:4] = torch.eye(4)  # code = genes 0..3
    traits = pd.DataFrame(
        {"size": g[:, 0] + 0.05 * rng.normal(size=40), "density": g[:, 3] - g[:, 2]}
    )
    att = codes.trait_attribution(gan, g, traits)
    assert att.shape == (12, 2)
    assert int(att["size"].idxmax()) == 0
    assert set(np.argsort(-att["density"].to_numpy())[:2]) == {2, 3}
    names = [f"G{i}" for i in range(12)]
    found = ground_truth.end_to_end_links(att, names, {"size": 1, "density": 2})
    assert found == {("G0", "size"), ("G2", "density"), ("G3", "density")}
    rec = ground_truth.link_recovery(found, {("G0", "size"), ("G2", "density"), ("G5", "density")})
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
    matrix, labels = conventional.metagenes(expr, n_modules=3)
    assert matrix.shape == (30, 3) and labels.shape == (24,)
    assert codes.cluster_agreement(labels, planted)["ari"] == pytest.approx(1.0)
    for k in range(3):  # each metagene tracks its latent factor
        factor = planted[labels == k][0]
        assert abs(np.corrcoef(matrix[:, k], latent[:, factor])[0, 1]) > 0.95
    _, labels_t = conventional.metagenes(expr, distance_threshold=0.6)
    assert codes.cluster_agreement(labels_t, planted)["ari"] == pytest.approx(1.0)
    mods = conventional.module_genes(labels, [f"g{i}" for i in range(24)])
    assert sorted(len(v) for v in mods.values()) == [8, 8, 8]
    with pytest.raises(ValueError, match="exactly one"):
        conventional.metagenes(expr)


def test_benjamini_hochberg_by_hand():
    q = conventional.benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    # worked by hand: p m / rank, then the running minimum from the largest p down
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    expect = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.74 / 7, 0.216, 0.216, 0.216]
    np.testing.assert_allclose(conventional.benjamini_hochberg(p), expect)
    np.testing.assert_allclose(conventional.benjamini_hochberg(p[::-1]), expect[::-1])
    q = conventional.benjamini_hochberg([0.5, np.nan, 0.9])
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.9) and q[2] == pytest.approx(0.9)
    assert conventional.benjamini_hochberg([0.9, 0.95])[0] <= 1.0
    with pytest.raises(ValueError):
        conventional.benjamini_hochberg([1.5])


def test_spearman_map_planted_and_links():
    expr, planted, latent = _planted_expression(p=40)
    matrix, labels = conventional.metagenes(expr, n_modules=3)
    ids = [f"R01-{i:03d}" for i in range(40)]
    mg = conventional.metagene_frame(matrix, ids)
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
    smap = conventional.spearman_map(feats, mg)
    assert len(smap) == 9 and smap.loc[smap.feature == "constant", "q"].isna().all()
    row = smap[(smap.feature == "diameter_mm") & (smap.metagene == f"M{target}")].iloc[0]
    assert row.rho > 0.95 and row.q < 1e-6
    a = feats.loc[ids, "diameter_mm"].to_numpy()
    assert row.p == pytest.approx(stats.spearmanr(a, mg[f"M{target}"]).pvalue)
    sig = conventional.significant_links(smap, alpha=0.05)
    assert (sig.feature == "diameter_mm").all() and sig.iloc[0].metagene == f"M{target}"
    names = [f"g{i}" for i in range(24)]
    found = ground_truth.conventional_links(sig.iloc[:1], conventional.module_genes(labels, names))
    truth = {(names[i], "diameter_mm") for i in np.flatnonzero(planted == 1)}
    assert ground_truth.link_recovery(found, truth)["recall"] == 1.0
    assert ground_truth.link_recovery(found, truth)["precision"] == 1.0
    with pytest.raises(ValueError, match="shared"):
        conventional.spearman_map(feats.set_index(pd.Index([f"X{i}" for i in range(40)])), mg)


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
    smap = conventional.spearman_map(sem, mg)
    att = smap[smap.feature == "attenuation"].iloc[0]
    assert att.n == 7
    ok = sem.attenuation.notna()
    assert att.rho == pytest.approx(stats.spearmanr(sem.attenuation[ok], mg.M0[ok]).statistic)
    with pytest.raises(ValueError, match="not numeric"):
        conventional.spearman_map(sem.assign(shape=["round"] * 8), mg)


def test_radiomic_features_on_disks():
    sizes = [3.0, 5.0, 7.0]
    imgs = np.stack([np.where(M.disk((32, 32), None, r), 0.7, 0.05) for r in sizes])
    masks = np.stack([M.disk((32, 32), None, r) for r in sizes]).astype(np.uint8)
    df = conventional.radiomic_features(imgs, masks, index=["a", "b", "c"], voi_mm=32.0)
    assert list(df.index) == ["a", "b", "c"]
    assert {"shape2D_MaximumDiameter", "firstorder_Mean", "glcm_Contrast"} <= set(df.columns)
    assert df["shape2D_MaximumDiameter"].is_monotonic_increasing
    np.testing.assert_allclose(df["firstorder_Mean"], -1000 + 0.7 * 1400, rtol=1e-4)
    np.testing.assert_allclose(df["shape2D_PixelSurface"], masks.sum((1, 2)))
    masks[1] = 0
    with pytest.raises(Exception, match="slice of b"):
        conventional.radiomic_features(imgs, masks, index=["a", "b", "c"])


def test_representative_slices():
    masks = np.zeros((4, 8, 8))
    masks[0, :2, :2] = 1
    masks[1, :3, :3] = 1
    masks[2, :1, :1] = 1
    masks[3, :2, :1] = 1
    imgs = np.arange(4)[:, None, None] * np.ones((4, 8, 8))
    im, mk, ids = conventional.representative_slices(imgs, masks, np.array([5, 5, 2, 2]))
    assert list(ids) == [2, 5]
    assert im[0, 0, 0] == 3 and im[1, 0, 0] == 1


# ------------------------------------------------------------------ scoring a study run


def _planted_cohort(p: int = 45, seed: int = 0):
    """A cohort whose first 9 genes follow the subtype and the next 12 two genes per trait;
    the other 39 follow a strong nuisance factor. Returns (cohort, truth)."""
    rng = np.random.default_rng(seed)
    ids = [f"R01-{i:03d}" for i in range(p)]
    subtype = np.repeat(np.arange(3), p // 3)
    traits = rng.normal(size=(p, len(TRAITS)))
    nuisance = rng.normal(size=p)
    genes = np.empty((p, 60))
    genes[:, :9] = 3.0 * (subtype[:, None] == np.repeat(np.arange(3), 3)[None])
    genes[:, 9:21] = np.repeat(traits, 2, axis=1)
    genes[:, 21:] = 4.0 * nuisance[:, None] * rng.choice([-1, 1], 39)
    genes += 0.1 * rng.normal(size=genes.shape)
    names = [f"GENE{i:05d}" for i in range(60)]
    drivers = ["subtype"] * 9 + [t for t in TRAITS for _ in range(2)] + ["batch"] * 39
    links = pd.DataFrame({"gene": names, "driver": drivers})
    pats = pd.DataFrame(traits, columns=list(TRAITS), index=pd.Index(ids, name="patient_id"))
    pats.insert(0, "subtype", subtype)
    pats = pats.iloc[::-1]  # truth in another order than the cohort: matched by id
    cohort = SimpleNamespace(patients=ids, genes=genes.astype(np.float32), gene_names=names)
    return cohort, PhantomTruth(pats, links)


def test_score_representations_planted_codes():
    cohort, truth = _planted_cohort()
    gans = {
        "baseline": LinearGeneCode(60, list(range(21, 60)), code_dim=8),  # nuisance genes only
        "proposed": LinearGeneCode(60, list(range(21)), code_dim=21),  # the linked genes
    }
    cfg = get_profile("smoke")
    scores = scoring.score_representations(cohort, gans, truth, cfg, seed=0)
    assert list(scores.index) == [codes.RAW, "baseline", "proposed"]
    p, b = scores.loc["proposed"], scores.loc["baseline"]
    # only the proposed code separates the subtypes and carries the traits
    assert p["ari"] > 0.9 and p["nmi"] > 0.9 and b["ari"] < 0.2
    assert p["silhouette_subtypes"] > b["silhouette_subtypes"]
    assert p["mean_r2"] > 0.8 and b["mean_r2"] < 0.3
    assert all(p[f"r2_{t}"] > 0.8 for t in TRAITS)
    # attribution: proposed uses exactly the linked genes, baseline none of them
    assert p["attribution_auroc"] == 1.0 and p["attribution_precision_at_k"] == 1.0
    assert b["attribution_auroc"] == 0.0 and b["attribution_precision_at_k"] == 0.0
    assert p["trait_attribution_auroc"] > 0.95
    assert scores.loc[codes.RAW, ["attribution_auroc", "trait_attribution_auroc"]].isna().all()
    # real data: no truth, only the unsupervised number
    unsup = scoring.score_representations(cohort, gans, None, cfg)
    assert list(unsup.columns) == ["silhouette"]
    assert unsup["silhouette"].to_numpy() == pytest.approx(scores["silhouette"].to_numpy())
    missing = PhantomTruth(truth.patients.drop(index="R01-004"), truth.gene_links)
    with pytest.raises(CohortError, match="R01-004"):
        scoring.score_representations(cohort, gans, missing, cfg)


def test_map_scores_is_tidy_over_seeds():
    cohort, truth = _planted_cohort()
    gans = {"proposed": LinearGeneCode(60, list(range(21)), code_dim=21)}
    cfg = get_profile("smoke")
    frame = scoring.map_scores(cohort, {0: gans, 1: gans}, truth, cfg)
    assert list(frame.columns) == ["representation", "seed", "measure", "value"]
    ari = frame[frame.measure == "ari"].set_index(["representation", "seed"])["value"]
    assert set(ari.index) == {(r, s) for r in (codes.RAW, "proposed") for s in (0, 1)}
    assert (ari.loc["proposed"] > 0.9).all()
    one = scoring.score_representations(cohort, gans, truth, cfg, seed=1)
    assert ari.loc[("proposed", 1)] == one.loc["proposed", "ari"]
    with pytest.raises(ValueError, match="at least one"):
        scoring.map_scores(cohort, {}, truth, cfg)


def test_linked_genes_and_cluster_examples():
    links = pd.DataFrame(
        {"gene": ["A", "B", "C", "D"], "driver": ["subtype", "solidity", "batch", "sex"]}
    )
    truth = PhantomTruth(pd.DataFrame(), links)
    names = ["D", "C", "B", "A", "E"]
    assert ground_truth.linked_genes(truth, names).tolist() == [False, False, True, True, False]
    assert ground_truth.linked_genes(truth, names, ("solidity",)).tolist() == [0, 0, 1, 0, 0]
    x = np.array([[0.0], [1.0], [3.0], [10.0], [11.0]])
    ex = codes.cluster_examples(x, np.array([0, 0, 0, 1, 1]), n=2)
    # cluster 0 has centroid 4/3: 1.0 is 1/3 away, 0.0 is 4/3, 3.0 is 5/3
    assert ex[0].tolist() == [1, 0] and sorted(ex[1].tolist()) == [3, 4]
    assert codes.cluster_examples(x, np.array([0, 0, 0, 1, 1]), n=9)[1].size == 2


def test_interpolate_genes_endpoints_and_midpoint():
    gan = tiny_gan("proposed", seed=1)
    cohort = tiny_cohort()
    bg, a, b = cohort.background_images[0], cohort.genes[0], cohort.genes[3]
    images, masks = codes.interpolate_genes(gan, bg, a, b, steps=5)
    assert images.shape == masks.shape == (5, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1 and masks.min() >= 0 and masks.max() <= 1
    gan.eval()
    with torch.no_grad():
        direct = gan.synthesize(
            to_net(torch.from_numpy(bg))[None, None].expand(3, 1, SIZE, SIZE),
            torch.from_numpy(np.stack([a, (a + b) / 2, b])),
        )
    np.testing.assert_allclose(images[[0, 2, 4]], from_net(direct.image[:, 0]).numpy(), atol=1e-5)
    np.testing.assert_allclose(masks[[0, 2, 4]], direct.mask[:, 0].numpy(), atol=1e-5)
    assert not np.allclose(images[0], images[4])  # the genes change the synthesis
    same, _ = codes.interpolate_genes(gan, bg, a, a, steps=3)
    np.testing.assert_allclose(same[0], same[2], atol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        codes.interpolate_genes(gan, bg, a, b, steps=1)
    with pytest.raises(ValueError, match="differ"):
        codes.interpolate_genes(gan, bg, a, b[:-1], steps=3)


# ------------------------------------------------------------------ the signal sweep


def _workspace(tmp_path, data: str = "phantom", **overrides) -> Workspace:
    cfg = tiny_profile(
        **{
            "phantom.patients": 6,
            "phantom.matrix": 64,
            "phantom.signal": 1.0,
            "curation.background_slices": 2,
            "train.steps": 2,
            **overrides,
        }
    )
    return Workspace(profile=cfg, data=data, device="cpu", run_dir=tmp_path)


def test_sweep_plan_reuses_only_what_matches(tmp_path):
    ws = _workspace(tmp_path)
    plan = scoring.sweep_plan(ws, [1.0, 0.5], steps=2).set_index("signal")
    assert plan.loc[1.0, "main_cohort"] and plan.loc[1.0, "curated"] == ws.curated
    assert plan.loc[1.0, "tag"] == ""  # the study's own models
    assert not plan.loc[0.5, "main_cohort"]
    assert plan.loc[0.5, "curated"] == tmp_path / "curated-signal0.5"
    assert plan.loc[0.5, "tag"] == "signal0.5-steps2"
    # other step counts never reuse the main models
    assert scoring.sweep_plan(ws, [1.0], steps=5).loc[0, "tag"] == "signal1-steps5"
    with pytest.raises(ValueError, match="differ"):
        scoring.sweep_plan(ws, [0.5, 0.5], steps=2)
    with pytest.raises(ValueError, match="steps"):
        scoring.sweep_plan(ws, [0.5], steps=0)
    with pytest.raises(ValueError, match="phantom"):
        scoring.sweep_plan(_workspace(tmp_path, data=str(tmp_path)), [0.5], steps=2)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Workspace:
    """A workspace whose signal sweep at signal 0.5 (2 steps) is trained, as notebook 02 does."""
    ws = _workspace(tmp_path_factory.mktemp("sweep"))
    sweeps.train_sweep(ws, [0.5], steps=2)
    return ws


def test_signal_sweep_on_a_tiny_phantom(swept):
    ws, tmp_path = swept, swept.run_dir
    sweep = scoring.signal_sweep(ws, [0.5], steps=2)
    assert list(sweep.columns) == ["signal", "representation", "metric", "value", "steps"]
    assert set(sweep["representation"]) == {codes.RAW, "proposed", "baseline"}
    value = sweep.set_index(["representation", "metric"])["value"]
    for rep in (codes.RAW, "proposed", "baseline"):
        assert -1 <= value[rep, "ari"] <= 1 and 0 <= value[rep, "nmi"] <= 1
        assert np.isfinite(value[rep, "mean_r2"])
    for rep in ("proposed", "baseline"):
        assert 0 <= value[rep, "attribution_auroc"] <= 1
    done = ws.model_dir("proposed", 0, tag="signal0.5-steps2") / "done.json"
    assert done.is_file() and (tmp_path / "curated-signal0.5" / "manifest.json").is_file()
    assert load_truth(tmp_path / "phantom-signal0.5").params["signal"] == 0.5
    # a second run reuses phantom, cohort and models and gives the same numbers
    stamp = done.stat().st_mtime_ns
    sweeps.train_sweep(ws, [0.5], steps=2)
    again = scoring.signal_sweep(ws, [0.5], steps=2)
    assert done.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(sweep, again)


def test_signal_sweep_reading_names_what_is_missing_and_never_trains(swept):
    # the cohort is curated, but no run of 3 steps was trained: every run is named
    with pytest.raises(
        MissingRunError, match=r"baseline seed 0 \(not trained.*proposed seed 0 .*02_training"
    ):
        scoring.signal_sweep(swept, [0.5], steps=3)
    assert not swept.model_dir("proposed", 0, tag="signal0.5-steps3").exists()
    # a signal never written: its cohort is named, and reading writes no phantom
    with pytest.raises(MissingRunError, match=r"signal 0.25 .*02_training"):
        scoring.signal_sweep(swept, [0.25], steps=2)
    assert not (swept.run_dir / "phantom-signal0.25").exists()


# ------------------------------------------------------------------ notebook 04 widgets


def test_browsers_follow_their_controls():
    from radiolib import map_figures, plots

    images = np.stack([np.full((8, 8), v) for v in (0.0, 0.25, 0.5, 0.75)])
    masks = np.zeros((4, 8, 8))
    box = map_figures.cluster_browser(images, masks, np.array([1, 0, 1, 1]), ["a", "b", "c", "d"])
    choose, slider, caption, picture = box.children
    assert caption.value.startswith("cluster 0: b (1 of 1)") and slider.max == 0
    choose.value = 1
    assert slider.max == 2 and caption.value == "cluster 1: a (1 of 3)"
    slider.value = 2
    assert caption.value == "cluster 1: d (3 of 3)"
    assert picture.value == plots.slice_png(images[3], masks[3], 40)

    calls = []

    def frames(a: int, b: int):
        calls.append((a, b))
        return np.stack([images[a], images[b], images[b]]), np.zeros((3, 8, 8))

    box = map_figures.interpolation_browser(["a", "b", "c", "d"], frames, 0, 2, 3)
    pickers, slider, caption, picture = box.children
    assert calls == [(0, 2)] and caption.value.startswith("t = 0.00")
    pickers.children[1].value = 3  # a new second patient recomputes the frames
    slider.value = 1
    assert calls[-1] == (0, 3) and caption.value == "t = 0.50: 0.50 x a + 0.50 x d"
    assert picture.value == plots.slice_png(images[3], np.zeros((8, 8)), 40)
