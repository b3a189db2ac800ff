"""Tests of the conventional map (radiolib.radiogenomics.conventional, reference, ground_truth):
planted modules driving planted image traits, hand-counted link scores, and the vendored real
reference data."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from radiolib.config import get_profile
from radiolib.errors import CohortError
from radiolib.radiogenomics import codes, conventional, ground_truth, reference

S = 32  # image size of the constructed cohort
VOI_MM = 60.0


def _disk(radius: float, size: int = S) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= radius**2).astype(np.uint8)


def _cohort(p: int = 30, seed: int = 0) -> SimpleNamespace:
    """P patients. Genes: A0..A9 follow driver d (tumour radius), B0..B9 follow driver e
    (tumour density), N0..N9 are noise. Each patient has a large slice (radius 4 + 2 d px) and
    a smaller one (radius halved) of the same tumour."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 3, p)
    e = rng.uniform(0, 3, p)
    za, ze = (d - d.mean()) / d.std(), (e - e.mean()) / e.std()
    genes = np.concatenate(
        [
            za[:, None] + 0.15 * rng.standard_normal((p, 10)),
            ze[:, None] + 0.15 * rng.standard_normal((p, 10)),
            rng.standard_normal((p, 10)),
        ],
        axis=1,
    ).astype(np.float32)
    names = (
        [f"A{i}" for i in range(10)] + [f"B{i}" for i in range(10)] + [f"N{i}" for i in range(10)]
    )
    images, masks, owner = [], [], []
    for i in range(p):
        for scale in (0.5, 1.0):  # the smaller slice first: the largest must be picked anyway
            m = _disk((4 + 2 * d[i]) * scale)
            img = 0.1 + 0.01 * rng.standard_normal((S, S)) + m * (0.35 + 0.1 * e[i])
            images.append(np.clip(img, 0, 1).astype(np.float32))
            masks.append(m)
            owner.append(i)
    return SimpleNamespace(
        patients=[f"R01-{i + 1:03d}" for i in range(p)],
        genes=genes,
        gene_names=names,
        tumour_images=np.stack(images),
        tumour_masks=np.stack(masks),
        tumour_patient=np.array(owner),
        d=d,
        e=e,
    )


def _truth(gene_names):
    """A7..A9 are 'subtype' genes in the truth (they ride on diameter through the subtype);
    N0..N4 are said to be driven by lobulation, which no image feature here measures."""
    driver = {}
    for g in gene_names:
        if g.startswith("A"):
            driver[g] = "subtype" if g in ("A7", "A8", "A9") else "diameter_mm"
        elif g.startswith("B"):
            driver[g] = "solidity"
        elif g in ("N0", "N1", "N2", "N3", "N4"):
            driver[g] = "lobulation"
    links = pd.DataFrame(
        {"gene": list(driver), "module": "m", "driver": list(driver.values()), "weight": 1.0}
    )
    return SimpleNamespace(gene_links=links)


CFG = get_profile("smoke")
FEATURE_TRAITS = {"diameter_mm": "diameter_mm", "attenuation_hu": "solidity"}


@pytest.fixture(scope="module")
def planted():
    cohort = _cohort()
    cmap = conventional.conventional_map(cohort, CFG, feature_sets=("measured",), min_module_size=5)
    return cohort, cmap


# ------------------------------------------------------------------ step 1


def test_module_metagenes_finds_planted_modules_and_drops_noise(planted):
    cohort, cmap = planted
    assert sorted(map(sorted, cmap.modules.values())) == [
        [f"A{i}" for i in range(10)],
        [f"B{i}" for i in range(10)],
    ]
    assert list(cmap.metagenes.columns) == ["M0", "M1"]
    assert list(cmap.metagenes.index) == cohort.patients
    # a metagene is the mean of its genes' z-scores
    idx = [cohort.gene_names.index(g) for g in cmap.modules["M0"]]
    x = cohort.genes[:, idx].astype(np.float64)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(cmap.metagenes["M0"], z.mean(1), atol=1e-6)


def test_module_metagenes_orders_by_size_and_checks_input():
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((2, 20, 1))
    expr = np.concatenate(
        [f1 + 0.1 * rng.standard_normal((20, 4)), f2 + 0.1 * rng.standard_normal((20, 7))], 1
    )
    names = [f"g{i}" for i in range(11)]
    mg, mods = conventional.module_metagenes(
        expr, names, [f"p{i}" for i in range(20)], min_module_size=3
    )
    assert mods == {"M0": names[4:], "M1": names[:4]}
    mg2, mods2 = conventional.module_metagenes(expr, names, range(20), n_modules=3)
    assert mg2.shape == (20, 3) and sum(map(len, mods2.values())) == 11  # n_modules keeps all
    with pytest.raises(ValueError, match="no co-expression module"):
        conventional.module_metagenes(expr, names, range(20), min_module_size=8)
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        conventional.module_metagenes(expr, names[:5], range(20))
    with pytest.raises(ValueError, match="cut"):
        conventional.module_metagenes(expr, names, range(20), cut=2.5)


# ------------------------------------------------------------------ step 2


def test_image_features_use_each_patients_largest_slice():
    cohort = _cohort(p=6, seed=3)
    feats = conventional.image_features(cohort, CFG, ("measured", "radiomics"))
    measured, radiomics = feats["measured"], feats["radiomics"]
    assert list(measured.columns) == ["diameter_mm", "attenuation_hu", "margin_sharpness"]
    assert list(measured.index) == cohort.patients
    mm = VOI_MM / S
    area = np.array([_disk(4 + 2 * d).sum() for d in cohort.d])
    np.testing.assert_allclose(measured["diameter_mm"], 2 * np.sqrt(area / np.pi) * mm)
    # pyradiomics' 2-D pixel surface is the pixel count times the pixel area
    np.testing.assert_allclose(radiomics["shape2D_PixelSurface"], area * mm**2, rtol=1e-6)
    assert stats.spearmanr(radiomics["firstorder_Mean"], cohort.e)[0] > 0.9
    assert all(radiomics[c].nunique() > 1 for c in radiomics.columns)
    with pytest.raises(ValueError, match="feature_sets"):
        conventional.image_features(cohort, CFG, ("semantic",))


# ------------------------------------------------------------------ step 3 and scoring


def test_planted_links_are_significant_and_noise_is_not(planted):
    cohort, cmap = planted
    sig = cmap.significant
    pairs = set(zip(sig["feature"], sig["metagene"], strict=True))
    a = next(m for m, g in cmap.modules.items() if "A0" in g)
    b = next(m for m, g in cmap.modules.items() if "B0" in g)
    assert ("diameter_mm", a) in pairs and ("attenuation_hu", b) in pairs
    assert ("diameter_mm", b) not in pairs and ("attenuation_hu", a) not in pairs
    assert (sig["q"] <= cmap.alpha).all() and (np.diff(sig["q"]) >= 0).all()
    ok = cmap.map_df["p"].notna()
    assert (cmap.map_df.loc[ok, "q"] >= cmap.map_df.loc[ok, "p"] - 1e-15).all()
    rho = cmap.matrix("rho")
    assert rho.shape == (3, 2) and rho.loc["diameter_mm", a] > 0.9


def test_score_against_truth_counts_by_hand(planted):
    cohort, cmap = planted
    scores = ground_truth.score_against_truth(
        cmap, _truth(cohort.gene_names), cohort, FEATURE_TRAITS
    )
    s = scores["measured"]
    # claimed: A0..A9 -> diameter_mm (A7..A9 are subtype genes: false), B0..B9 -> solidity;
    # true: A0..A6 diameter, B0..B9 solidity, N0..N4 lobulation (never claimed)
    assert (s["true_positives"], s["false_positives"], s["claimed_links"]) == (17, 3, 20)
    assert s["true_links"] == 22
    assert s["recall"] == pytest.approx(17 / 22) and s["precision"] == pytest.approx(17 / 20)
    assert s["traits_measured"] == ["diameter_mm", "solidity"]
    assert s["recall_measured_traits"] == pytest.approx(17 / 17)
    n_margin = int((cmap.significant["feature"] == "margin_sharpness").sum())
    assert s["unscored_pairs"] == n_margin
    per = s["per_trait"]
    assert per.loc["diameter_mm"].tolist() == [7, 10, 7, 3]
    assert per.loc["lobulation"].tolist() == [5, 0, 0, 0]
    table = ground_truth.recovery_table(scores, signal=1.0)
    assert list(table.columns[:6]) == list(ground_truth.MAP_LINKS_COLUMNS)
    assert table.loc[0, "approach"] == "conventional (measured)"
    with pytest.raises(ValueError, match="not phantom traits"):
        ground_truth.score_against_truth(
            cmap, _truth(cohort.gene_names), cohort, {"diameter_mm": "size"}
        )


def test_true_links_and_module_composition(planted):
    cohort, cmap = planted
    truth = _truth(cohort.gene_names)
    true = ground_truth.true_trait_links(truth, cohort.gene_names)
    assert len(true) == 22 and ("A0", "diameter_mm") in true and ("A7", "diameter_mm") not in true
    assert ground_truth.true_trait_links(truth, ["B0", "Z9"]) == {("B0", "solidity")}
    comp = ground_truth.module_composition(cmap.modules, truth)
    a = next(m for m, g in cmap.modules.items() if "A0" in g)
    assert comp.loc[a, "genes"] == 10 and comp.loc[a, "diameter_mm"] == 7
    assert comp.loc[a, "subtype"] == 3 and comp.loc[a, "solidity"] == 0
    shares = ground_truth.module_composition(cmap.modules, truth, share=True)
    assert shares.loc[a, "diameter_mm"] == pytest.approx(0.7) and shares.loc[a, "genes"] == 10
    np.testing.assert_allclose(shares.drop(columns="genes").sum(axis=1), 1.0)


def test_correlate_adjusts_each_feature_set_separately():
    rng = np.random.default_rng(2)
    idx = [f"p{i}" for i in range(25)]
    mg = pd.DataFrame(rng.standard_normal((25, 3)), index=idx, columns=["M0", "M1", "M2"])
    f1 = pd.DataFrame(rng.standard_normal((25, 4)), index=idx)
    f2 = pd.DataFrame(rng.standard_normal((25, 2)), index=idx, columns=["x", "y"])
    f2["y"] = mg["M1"] + 0.01 * rng.standard_normal(25)
    map_df, sig = conventional.correlate({"one": f1, "two": f2}, mg, alpha=0.05)
    assert len(map_df) == 3 * 4 + 3 * 2
    for name in ("one", "two"):
        part = map_df[map_df["feature_set"] == name]
        np.testing.assert_allclose(part["q"], conventional.benjamini_hochberg(part["p"].to_numpy()))
    assert ("two", "y", "M1") in set(
        zip(sig["feature_set"], sig["feature"], sig["metagene"], strict=True)
    )
    with pytest.raises(ValueError, match="alpha"):
        conventional.correlate({"one": f1}, mg, alpha=1.5)


def test_conventional_map_rejects_misshaped_genes():
    cohort = _cohort(p=8)
    cohort.genes = cohort.genes[:5]
    with pytest.raises(CohortError, match="8 patients"):
        conventional.conventional_map(cohort, CFG, feature_sets=("measured",))


def test_link_tables_side_by_side(tmp_path):
    ours = pd.DataFrame(
        [["conventional (measured)", 1.0, 5, 20, 0.1, 0.2, 25, 50]],
        columns=[*ground_truth.MAP_LINKS_COLUMNS, "claimed_links", "true_links"],
    )
    other = pd.DataFrame(
        [["end-to-end", 0.5, 1, 2, 0.0, 0.3], ["end-to-end", 1.0, 9, 9, 0.2, 0.5]],
        columns=list(ground_truth.MAP_LINKS_COLUMNS),
    )
    both = ground_truth.side_by_side(ours, other)
    assert list(both.columns) == list(ground_truth.MAP_LINKS_COLUMNS)
    assert both["approach"].tolist() == ["end-to-end", "conventional (measured)", "end-to-end"]
    assert ground_truth.side_by_side(ours, None).shape == (1, 6)
    again = pd.read_csv(ground_truth.write_map_links(ours, tmp_path / "ours.csv"))
    pd.testing.assert_frame_equal(again, ours)
    with pytest.raises(ValueError, match="recall"):
        ground_truth.write_map_links(ours.drop(columns=["recall"]), tmp_path / "bad.csv")


# ------------------------------------------------------------------ helpers for real data


def test_partial_spearman_matches_rank_residuals():
    rng = np.random.default_rng(4)
    c = rng.standard_normal(60)
    a = c + rng.standard_normal(60)
    b = c + 0.5 * a + rng.standard_normal(60)
    rho, p = reference.partial_spearman(a, b, c)
    ra, rb, rc = (stats.rankdata(v) for v in (a, b, c))
    design = np.column_stack([np.ones(60), rc])

    def resid(v):
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    expected = np.corrcoef(resid(ra), resid(rb))[0, 1]
    assert rho == pytest.approx(expected, abs=1e-12)
    t = expected * np.sqrt(57 / (1 - expected**2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 57))
    # a link carried only by the common driver vanishes once it is held fixed
    x, y = c + 0.1 * rng.standard_normal(60), c + 0.1 * rng.standard_normal(60)
    assert stats.spearmanr(x, y)[0] > 0.9 and abs(reference.partial_spearman(x, y, c)[0]) < 0.4
    a[:3] = np.nan
    assert np.isfinite(reference.partial_spearman(a, b, c)[0])
    assert np.isnan(reference.partial_spearman(a[:4], b[:4], c[:4])[0])


def test_patient_number():
    np.testing.assert_array_equal(reference.patient_number(["R01-023", "AMC-101"]), [23.0, 101.0])
    with pytest.raises(CohortError, match="R01-xyz"):
        reference.patient_number(["R01-xyz"])


def test_clinical_labels_by_hand():
    clinical = pd.DataFrame(
        {col: ["Unknown"] * 3 for col, _ in reference.CLINICAL_LABELS.values()},
        index=pd.Index(["R01-001", "R01-002", "R01-003"], name="patient_id"),
    )
    clinical["EGFR mutation status"] = ["Mutant", "Wildtype", "Not collected"]
    clinical["%GG"] = ["0%", "25 - 50%", "Not Assessed"]
    clinical["Pack Years"] = ["38", "Not Collected", np.nan]
    clinical["Pathological T stage"] = ["T2b", "Tis", "T1a"]
    clinical["Histology"] = [
        "Squamous cell carcinoma",
        "Adenocarcinoma",
        "NSCLC NOS (not otherwise specified)",
    ]
    out = reference.clinical_labels(clinical)
    assert list(out.columns) == list(reference.CLINICAL_LABELS)
    np.testing.assert_array_equal(out["egfr_mutant"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(out["ground_glass_percent"], [0.0, 37.5, np.nan])
    np.testing.assert_array_equal(out["pack_years"], [38.0, np.nan, np.nan])
    np.testing.assert_array_equal(out["t_stage"], [4.0, 0.0, 1.0])
    np.testing.assert_array_equal(out["squamous_histology"], [1.0, 0.0, np.nan])
    assert out["smoking"].isna().all()
    with pytest.raises(CohortError, match="Gender"):
        reference.clinical_labels(clinical.drop(columns=["Gender"]))
    clinical.loc["R01-002", "KRAS mutation status"] = "maybe"
    with pytest.raises(CohortError, match="R01-002.*maybe"):
        reference.clinical_labels(clinical)


def test_informative_features_by_hand():
    df = pd.DataFrame(
        {
            "rare": [1.0] * 3 + [0.0] * 17,  # 3 < 5 in the rarer group
            "fine": [1.0] * 5 + [0.0] * 15,
            "constant": [1.0] * 20,
            "sparse": [0.1, 0.2, 0.3] + [np.nan] * 17,  # 3 < 10 values
            "ordinal": np.arange(20.0) % 3,
        }
    )
    assert list(reference.informative_features(df, min_minority=5).columns) == ["fine", "ordinal"]


# ------------------------------------------------------------------ the vendored real data


@pytest.fixture(scope="module")
def real():
    return reference.real_reference_map()


def test_reference_data_is_what_provenance_says():
    ref = reference.load_reference()
    assert ref.expression.shape == (436, 130)
    assert np.isfinite(ref.expression.to_numpy()).all()
    np.testing.assert_allclose(ref.expression.mean(axis=1), 0, atol=1e-9)  # z-scored per gene
    assert len(ref.semantic) == 120 and set(ref.semantic.index) <= set(ref.expression.columns)
    assert ref.clinical.shape == (211, 39)
    assert (reference.reference_dir() / "PROVENANCE.md").is_file()


def test_real_reference_map_shapes_and_counts(real):
    c = real.counts
    assert (c["genes"], c["rna_seq_patients"], c["aim_patients"]) == (436, 130, 120)
    assert c["rna_seq_and_aim"] == 120 and c["rna_seq_and_clinical"] == 130
    assert real.metagenes.shape == (130, c["metagenes"]) and c["metagenes"] >= 2
    genes = [g for gs in real.modules.values() for g in gs]
    assert len(genes) == len(set(genes)) == c["genes_in_modules"]
    assert min(map(len, real.modules.values())) >= conventional.MIN_MODULE_SIZE
    assert len(real.features["semantic"]) == 120 and len(real.features["clinical"]) == 130
    assert "alk_translocated" not in real.features["clinical"]  # 2 translocated patients
    n_tests = (c["semantic_features"] + c["clinical_labels"]) * c["metagenes"]
    assert len(real.map_df) == n_tests
    ok = real.map_df["p"].notna()
    assert (real.map_df.loc[ok, "q"] >= real.map_df.loc[ok, "p"] - 1e-15).all()
    assert (real.map_df.loc[real.map_df["feature_set"] == "semantic", "n"] <= 120).all()


def test_real_data_known_structure(real):
    # the radiologists' attenuation and the pathologists' ground-glass share agree
    s = real.features["semantic"]["nodule_attenuation"]
    gg = real.features["clinical"]["ground_glass_percent"]
    both = pd.concat([s, gg], axis=1, join="inner").dropna()
    assert stats.spearmanr(both.iloc[:, 0], both.iloc[:, 1])[0] < -0.7
    # histology is the strongest expression signal in NSCLC: it survives the FDR
    assert "squamous_histology" in set(real.significant["feature"])
    check = reference.enrolment_check(real)
    assert len(check) == len(real.significant)
    assert check["partial_rho"].abs().max() <= 1.0
    first = check.iloc[0]
    feat = real.features[first.feature_set][first.feature].dropna()
    order = reference.patient_number(list(feat.index))
    assert first.feature_vs_order == pytest.approx(stats.spearmanr(feat, order)[0])


def test_load_reference_reports_bad_folders(tmp_path):
    with pytest.raises(CohortError, match="expression"):
        reference.load_reference(tmp_path)
    shutil.copy(reference.reference_dir() / reference.REFERENCE_EXPRESSION, tmp_path)
    with pytest.raises(CohortError, match="AIM folder"):
        reference.load_reference(tmp_path)
    path = tmp_path / reference.REFERENCE_EXPRESSION
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3] = ""
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CohortError, match="missing"):
        reference.load_reference(tmp_path)


def test_end_to_end_links_are_read_with_the_same_features_and_scored(planted):
    from tests.test_radiogenomics import LinearGeneCode

    cohort, cmap = planted
    truth = _truth(cohort.gene_names)
    names = cohort.gene_names
    # a code built from the diameter (A) and density (B) genes, and one from noise genes only
    informed = LinearGeneCode(
        len(names),
        [names.index(f"A{i}") for i in range(7)] + [names.index(f"B{i}") for i in range(10)],
        code_dim=6,
    )
    blind = LinearGeneCode(len(names), [names.index(f"N{i}") for i in range(5, 10)], code_dim=6)
    table = ground_truth.end_to_end_link_table(
        {"informed": informed, "blind": blind}, cohort, cmap, truth, signal=1.0
    )
    assert list(table.approach) == ["end to end (informed)", "end to end (blind)"]
    assert set(ground_truth.MAP_LINKS_COLUMNS) <= set(table.columns)
    informed_row, blind_row = table.iloc[0], table.iloc[1]
    # 7 true diameter genes and 10 true solidity genes: as many claims, so k = 17 in all
    assert informed_row.claimed_links == blind_row.claimed_links == 17
    # random 6-D mixes of the used genes: most claims right, against near none for noise genes
    assert informed_row.true_positives >= 10 and blind_row.true_positives <= 4
    assert informed_row.recall > 2 * blind_row.recall
    # a code of the 7 diameter genes alone: its diameter claims are exactly those 7 genes
    diameter_only = LinearGeneCode(len(names), [names.index(f"A{i}") for i in range(7)], code_dim=6)
    row = ground_truth.end_to_end_link_table({"d": diameter_only}, cohort, cmap, truth, 1.0).iloc[0]
    assert row.true_positives == 7
    with pytest.raises(ValueError, match="no 'radiomics' features"):
        ground_truth.end_to_end_link_table(
            {"x": informed}, cohort, cmap, truth, 1.0, feature_set="radiomics"
        )


# ------------------------------------------------------------------ as a representation


def _split(cohort: SimpleNamespace, test: int) -> SimpleNamespace:
    """``cohort`` with its last ``test`` patients held out."""
    p = len(cohort.patients)
    return SimpleNamespace(**vars(cohort), split=np.array(["train"] * (p - test) + ["test"] * test))


def test_conventional_representation_uses_the_training_split():
    cohort = _split(_cohort(p=40, seed=1), test=10)
    fit = conventional.conventional_representation(
        cohort, CFG, feature_sets=("measured",), min_module_size=5
    )
    train = cohort.patients[:30]
    assert list(fit.cmap.metagenes.index) == train  # the map never sees the test patients
    assert not fit.fallback and fit.linked == ["M0", "M1"]
    assert fit.cmap.modules["M0"] == [f"A{i}" for i in range(10)]
    assert fit.cmap.modules["M1"] == [f"B{i}" for i in range(10)]
    code = codes.gene_codes(fit.code, cohort.genes)
    assert code.shape == (40, 2) and fit.code.metagenes == ["M0", "M1"]
    # on the training patients: the map's own metagenes, standardised
    mg = fit.cmap.metagenes[fit.linked].to_numpy()
    np.testing.assert_allclose(code[:30], (mg - mg.mean(0)) / mg.std(0), atol=1e-5)
    np.testing.assert_allclose(code[:30].std(0), 1.0, atol=1e-5)
    # the test patients get the same affine map of their genes: their traits still show
    assert stats.spearmanr(code[30:, 0], cohort.d[30:])[0] > 0.8
    assert stats.spearmanr(code[30:, 1], cohort.e[30:])[0] > 0.8
    # only the linked modules' genes move the code
    attribution = codes.gene_attribution(fit.code, cohort.genes, target="variance")
    used = np.array([g[0] in "AB" for g in cohort.gene_names])
    assert attribution[used].min() > 0 and attribution[~used].max() == 0
    assert fit.flops == conventional.conventional_flops(30, 30) == 2 * 30 * 30**2 + 3 * 30**2
    assert fit.cpu_seconds > 0


def test_conventional_representation_falls_back_to_all_metagenes_without_links():
    cohort = _split(_cohort(p=40, seed=1), test=10)
    # genes of other patients: the modules stay, their link to the images is gone
    shuffled = SimpleNamespace(
        **{**vars(cohort), "genes": cohort.genes[np.random.default_rng(3).permutation(40)]}
    )
    fit = conventional.conventional_representation(
        shuffled, CFG, feature_sets=("measured",), min_module_size=5
    )
    assert fit.fallback and fit.linked == [] and fit.cmap.significant.empty
    assert fit.code.metagenes == list(fit.cmap.metagenes.columns) == ["M0", "M1"]
    assert codes.gene_codes(fit.code, shuffled.genes).shape == (40, 2)
    few = _split(_cohort(p=6), test=3)
    with pytest.raises(CohortError, match="4 training patients"):
        conventional.conventional_representation(few, CFG, feature_sets=("measured",))
    with pytest.raises(ValueError, match="weight"):
        conventional.MetageneCode(np.ones((3, 2)), np.ones(3), ["M0", "M1"])
