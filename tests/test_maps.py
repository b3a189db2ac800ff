"""Tests of radiolib.maps: one scoring frame for every map, settings, the comparison run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiolib import cli, maps, sweeps
from radiolib.config import get_profile
from radiolib.data.phantom import load_truth
from radiolib.radiogenomics import codes, scoring
from tests.test_radiogenomics import LinearGeneCode, _planted_cohort, _workspace

CFG = get_profile("smoke")


def test_score_maps_is_one_tidy_frame_for_every_representation():
    cohort, truth = _planted_cohort()
    gans = {
        "baseline": LinearGeneCode(60, list(range(21, 60)), code_dim=8),
        "proposed": LinearGeneCode(60, list(range(21)), code_dim=21),
    }
    costs = {"proposed": {"cpu_seconds": 2.0, "flops": 10.0, "steps": 5.0}}
    frame = maps.score_maps(cohort, gans, truth, CFG, seed=3, costs=costs)
    assert tuple(frame.columns) == maps.TIDY_COLUMNS
    assert list(dict.fromkeys(frame["representation"])) == [codes.RAW, "baseline", "proposed"]
    assert (frame["seed"] == 3).all()
    assert not frame.duplicated(["representation", "measure"]).any()
    per_rep = frame.groupby("representation")["measure"].apply(frozenset)
    assert per_rep.nunique() == 1  # every representation has every measure
    value = frame.set_index(["representation", "measure"])["value"]
    # the numbers are score_representations' own
    wide = scoring.score_representations(cohort, gans, truth, CFG, seed=3)
    for rep in wide.index:
        for measure in ("ari", "nmi", "mean_r2", "attribution_auroc"):
            np.testing.assert_equal(value[rep, measure], wide.loc[rep, measure])
    assert value["proposed", "ari"] > 0.9 and value["proposed", "attribution_auroc"] == 1.0
    assert np.isnan(value[codes.RAW, "attribution_auroc"])
    # widths and costs: raw genes learn nothing; a cost not given is unknown
    assert [value[r, "dimensions"] for r in (codes.RAW, "baseline", "proposed")] == [60, 8, 21]
    assert value[codes.RAW, "cpu_seconds"] == value[codes.RAW, "flops"] == 0.0
    assert np.isnan(value["baseline", "cpu_seconds"]) and np.isnan(value["baseline", "steps"])
    assert value["proposed", "cpu_seconds"] == 2.0 and value["proposed", "steps"] == 5.0
    assert np.isnan(value["proposed", "wall_seconds"])
    with pytest.raises(ValueError, match=r"\['inpainting'\]"):
        maps.score_maps(cohort, gans, truth, CFG, costs={"inpainting": {"flops": 1.0}})
    with pytest.raises(ValueError, match="truth"):
        maps.score_maps(cohort, gans, None, CFG)


def test_summary_table_by_hand():
    tidy = pd.DataFrame(
        {
            "representation": ["a", "a", "a", "a", "b", "b"],
            "seed": [0, 1, 0, 1, 0, 1],
            "measure": ["ari", "ari", "flops", "flops", "ari", "ari"],
            "value": [0.2, 0.4, 1.0, 1.0, 0.5, 0.5],
        }
    )
    table = maps.summary_table(tidy, ["ari", "flops"])
    assert list(table.columns) == [
        ("ari", "mean"),
        ("ari", "std"),
        ("flops", "mean"),
        ("flops", "std"),
    ]
    assert table.loc["a", ("ari", "mean")] == pytest.approx(0.3)
    assert table.loc["a", ("ari", "std")] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert table.loc["b", ("ari", "std")] == 0.0 and np.isnan(table.loc["b", ("flops", "mean")])
    # two phantoms that differ in two settings: one row per representation and phantom, none
    # for the combinations of settings that were not run
    settings = pd.DataFrame({"signal": [1.0] * 6 + [0.5] * 6, "phantom_seed": [0] * 6 + [1] * 6})
    both = pd.concat([tidy, tidy.assign(value=tidy["value"] * 2)], ignore_index=True)
    by_setting = maps.summary_table(pd.concat([settings.assign(subtypes=3), both], axis=1), ["ari"])
    assert list(by_setting.index) == [
        (1.0, 0, 3, "a"),
        (1.0, 0, 3, "b"),
        (0.5, 1, 3, "a"),
        (0.5, 1, 3, "b"),
    ]
    assert by_setting.loc[(0.5, 1, 3, "a"), ("ari", "mean")] == pytest.approx(0.6)
    assert not by_setting.isna().any().any()
    with pytest.raises(ValueError, match="nmi"):
        maps.summary_table(tidy, ["nmi"])
    with pytest.raises(ValueError, match="columns"):
        maps.summary_table(tidy.drop(columns="seed"), ["ari"])


def test_leaders_paragraph_counts_only_resolved_leads():
    rows = [
        # setting, representation, mean, lowest seed, highest seed
        ("A", "conventional", 0.9, 0.9, 0.9),
        ("A", "contrastive", 0.5, 0.3, 0.7),
        ("B", "conventional", 0.2, 0.2, 0.2),
        ("B", "contrastive", 0.3, 0.1, 0.5),  # ahead, but its lowest seed is below 0.2
        ("C", "conventional", 0.1, 0.1, 0.1),
        ("C", "contrastive", 0.4, 0.35, 0.45),
    ]
    summary = pd.DataFrame(rows, columns=["setting", "representation", "value", "low", "high"])
    text = maps.leaders_paragraph(summary.assign(measure="ari"), "ari")
    assert text.startswith("On 3 phantoms, by ari")
    assert "conventional leads on 1 (A)" in text and "contrastive leads on 1 (C)" in text
    assert "Not resolved on 1: B (contrastive ahead of conventional)" in text
    with pytest.raises(ValueError, match="nmi"):
        maps.leaders_paragraph(summary.assign(measure="ari"), "nmi")


def test_map_settings_change_one_parameter_at_a_time(tmp_path):
    cfg = get_profile(
        "smoke",
        {
            "evaluation.map_signals": "0.5,1.0",
            "evaluation.map_phantom_seeds": "1",
            "evaluation.map_subtypes": "2,3,5",
        },
    )
    settings = maps.map_settings(cfg)
    assert list(settings.itertuples(index=False, name=None)) == [
        (1.0, 0, 3),  # the profile's own phantom, once
        (0.5, 0, 3),
        (1.0, 1, 3),
        (1.0, 0, 2),
        (1.0, 0, 5),
    ]
    ws = _workspace(tmp_path)
    plan = maps.comparison_plan(ws, settings, steps=2)
    assert list(plan["changed"]) == [
        {},
        {"signal": 0.5},
        {"seed": 1},
        {"subtypes": 2},
        {"subtypes": 5},
    ]
    assert plan.loc[0, "curated"] == ws.curated and plan.loc[0, "tag"] == ""
    assert plan.loc[1, "curated"] == tmp_path / "curated-signal0.5"  # the signal sweep's
    assert plan.loc[1, "tag"] == "signal0.5-steps2"
    assert plan.loc[4, "curated"] == tmp_path / "curated-subtypes5"
    # other step counts never reuse the study's own models
    assert maps.comparison_plan(ws, settings.iloc[:1], steps=3).loc[0, "tag"] == "signal1-steps3"
    with pytest.raises(ValueError, match="differ"):
        maps.comparison_plan(ws, pd.concat([settings.iloc[:1]] * 2), steps=2)
    with pytest.raises(ValueError, match="subtypes >= 2"):
        maps.comparison_plan(ws, settings.assign(subtypes=1), steps=2)
    with pytest.raises(ValueError, match="columns"):
        maps.comparison_plan(ws, settings.drop(columns="subtypes"), steps=2)
    with pytest.raises(ValueError, match="phantom"):
        maps.comparison_plan(_workspace(tmp_path, data=str(tmp_path)), settings, steps=2)


def test_compare_maps_on_a_tiny_phantom(tmp_path, capsys):
    ws = _workspace(tmp_path, **{"contrastive.steps": 5})
    settings = pd.DataFrame({"signal": [1.0], "phantom_seed": [0], "subtypes": [4]})
    out = tmp_path / "comparison.csv"
    frame = sweeps.compare_maps(
        ws, settings, seeds=[0, 1], gan_models=["proposed"], steps=2, out=out
    )
    assert list(frame.columns) == [*maps.SETTING_COLUMNS, *maps.TIDY_COLUMNS]
    pd.testing.assert_frame_equal(pd.read_csv(out), frame, check_dtype=False)
    assert load_truth(tmp_path / "phantom-subtypes4").params["subtypes"] == 4
    assert (frame["subtypes"] == 4).all() and set(frame["seed"]) == {0, 1}
    reps = list(dict.fromkeys(frame["representation"]))
    assert reps == [codes.RAW, "proposed", maps.CONTRASTIVE, maps.CONVENTIONAL]
    value = frame.set_index(["seed", "representation", "measure"])["value"]
    for seed in (0, 1):
        for rep in reps:
            assert -1 <= value[seed, rep, "ari"] <= 1 and 0 <= value[seed, rep, "nmi"] <= 1
        for rep in reps[1:]:
            assert 0 <= value[seed, rep, "attribution_auroc"] <= 1
            assert value[seed, rep, "flops"] > 0 and value[seed, rep, "wall_seconds"] >= 0
        assert value[seed, maps.CONVENTIONAL, maps.FALLBACK] in (0.0, 1.0)
        assert value[seed, maps.CONTRASTIVE, "cpu_seconds"] > 0
    assert value[0, "proposed", "cpu_seconds"] > 0  # trained in this call
    # the conventional map is found once: the same code and cost for every seed
    assert value[0, maps.CONVENTIONAL, "cpu_seconds"] == value[1, maps.CONVENTIONAL, "cpu_seconds"]
    # FLOPs depend on the sizes, not on the seed
    assert value[0, maps.CONTRASTIVE, "flops"] == value[1, maps.CONTRASTIVE, "flops"]
    # a second call reuses the GAN runs: same scores, CPU time unknown
    again = sweeps.compare_maps(ws, settings, seeds=[0], gan_models=["proposed"], steps=2, out=out)
    second = again.set_index(["seed", "representation", "measure"])["value"]
    assert np.isnan(second[0, "proposed", "cpu_seconds"])
    assert second[0, "proposed", "ari"] == value[0, "proposed", "ari"]
    assert second[0, "proposed", "wall_seconds"] == value[0, "proposed", "wall_seconds"]

    # the console command scores one curated cohort the same way
    args = [
        "compare-maps",
        "--data",
        str(tmp_path / "curated-subtypes4"),
        "--truth",
        str(tmp_path / "phantom-subtypes4"),
        "--out",
        str(tmp_path / "one.csv"),
        "--seeds",
        "0",
        "--profile",
        "smoke",
    ]
    args += ["-p", "contrastive.steps=5", "-p", "model.code_dim=8", "-p", "model.gene_hidden=16"]
    assert cli.main(args) == 0
    one = pd.read_csv(tmp_path / "one.csv").set_index(["representation", "measure"])["value"]
    assert one[maps.CONVENTIONAL, "ari"] == value[0, maps.CONVENTIONAL, "ari"]
    assert one[maps.CONTRASTIVE, "ari"] == pytest.approx(value[0, maps.CONTRASTIVE, "ari"])
    assert "contrastive" in capsys.readouterr().out
    assert cli.main([*args[:3], "--out", str(tmp_path / "x.csv")]) == 1  # --data, no --truth


def test_settings_summary_labels_and_leaders_by_hand():
    cfg = get_profile("smoke")  # phantom: signal 1, seed 0, 3 subtypes
    rows = []
    for setting, base in (((1.0, 0, 3), 0.0), ((0.25, 1, 3), 0.5), ((1.0, 0, 5), 0.2)):
        for seed in (0, 1):
            rows.append((*setting, "raw genes", seed, "ari", base))
            rows.append((*setting, "contrastive", seed, "ari", base + 0.1 * (seed + 1)))
            rows.append((*setting, "contrastive", seed, "flops", 7.0))
    tidy = pd.DataFrame(rows, columns=[*maps.SETTING_COLUMNS, *maps.TIDY_COLUMNS])
    summary = maps.settings_summary(tidy, ["ari"], cfg)
    assert list(dict.fromkeys(summary["setting"])) == [
        "the profile's phantom",
        "signal 0.25, phantom seed 1",
        "5 subtypes",
    ]
    assert set(summary["measure"]) == {"ari"} and (summary["seeds"] == 2).all()
    row = summary.set_index(["setting", "representation"]).loc[("5 subtypes", "contrastive")]
    assert row["value"] == pytest.approx(0.35) and row["low"] == pytest.approx(0.3)
    assert row["high"] == pytest.approx(0.4)
    board = maps.leaders(summary, "ari")
    assert list(board.columns) == ["raw genes", "contrastive", "leader"]
    assert list(board["leader"]) == ["contrastive"] * 3
    assert board.loc["signal 0.25, phantom seed 1", "raw genes"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="nmi"):
        maps.settings_summary(tidy, ["nmi"], cfg)
    with pytest.raises(ValueError, match="subtypes"):
        maps.settings_summary(tidy.drop(columns="subtypes"), ["ari"], cfg)
    with pytest.raises(ValueError, match="flops"):
        maps.leaders(summary, "flops")
    from radiolib import map_figures

    fig = map_figures.settings_figure(summary, ["ari"])
    assert [t.name for t in fig.data] == ["raw genes", "contrastive"]
    assert list(fig.data[1].error_y.array) == pytest.approx([0.05, 0.05, 0.05])
