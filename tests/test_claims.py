"""radiolib.claims: the paper's claims answered from planted results, by the stated rules."""

from __future__ import annotations

import pandas as pd
import pytest

from radiolib.claims import FAILS, HOLDS, OPEN, claims_table, verdicts


def _row(section, method, measure, value, low=None, high=None, seed="all", level=""):
    return {
        "section": section,
        "method": method,
        "seed": seed,
        "measure": measure,
        "level": level,
        "value": value,
        "low": value if low is None else low,
        "high": value if high is None else high,
    }


def _results(
    proposed_mse=(0.01, 0.008, 0.012), kid=((1.0, 2.0), (1.5, 1.0)), inside=(0.85, 0.8, 0.9)
):
    rows = [
        _row("table1", "proposed", "mse", *proposed_mse),
        _row("table1", "baseline", "mse", 0.03, 0.02, 0.04),
        _row("table1", "proposed", "ssim", 0.9, 0.85, 0.95),
        _row("table1", "baseline", "ssim", 0.7, 0.6, 0.8),
        _row("table1", "proposed", "psnr", 24.0, 23.0, 25.0),
        _row("table1", "baseline", "psnr", 20.0, 19.0, 21.0),
        _row("weight_map", "proposed", "inside_mean", 0.3, level="8"),
        _row("weight_map", "proposed", "outside_mean", 0.5, level="8"),
        _row("weight_map", "proposed", "inside_mean", *inside, level="32"),
        _row("weight_map", "proposed", "outside_mean", 0.09, 0.08, 0.1, level="32"),
        _row("gene_control", "proposed", "diameter_mm", 0.6, 0.3, 0.8),
        _row("gene_control", "proposed", "attenuation_hu", 0.0, -0.2, 0.2),
    ]
    for measure in ("mse", "ssim", "psnr"):
        rows += [
            _row("background_kept", "proposed", measure, 0.8, 0.7, 0.9),
            _row("background_kept", "baseline", measure, 0.75, 0.7, 0.8),
        ]
    for seed, (p, b) in enumerate(kid):
        rows += [
            _row("realism", "proposed", "kid", p, seed=str(seed)),
            _row("realism", "baseline", "kid", b, seed=str(seed)),
        ]
    return pd.DataFrame(rows)


def test_each_claim_is_answered_by_its_rule():
    table = claims_table(_results())
    answers = table["answer"].tolist()
    # Table 1: both measures apart in the proposed GAN's favour
    assert answers[0] == HOLDS
    # background kept: intervals overlap
    assert answers[1] == OPEN
    # realism: the seeds disagree (1.0 < 2.0 but 1.5 > 1.0)
    assert answers[2] == OPEN
    # the finest map (32 px) is read, not the coarse one
    assert answers[3] == HOLDS and "32 px" in table["evidence"].iloc[3]
    # diameter above 0, attenuation's interval straddles it
    assert answers[4] == "partly: diameter_mm"
    assert "0.60 (0.30 to 0.80)" in table["evidence"].iloc[4]


def test_claims_fail_where_the_data_say_the_other_way():
    table = claims_table(_results(proposed_mse=(0.05, 0.045, 0.055), kid=((3.0, 1.0), (2.5, 1.5))))
    assert table["answer"].iloc[0] == FAILS  # baseline's MSE lower, intervals apart
    assert table["answer"].iloc[2] == FAILS  # higher KID at every seed
    assert claims_table(_results(inside=(0.5, 0.45, 0.55)))["answer"].iloc[3] == FAILS


def test_what_the_data_cannot_decide_is_not_resolved():
    results = _results()
    no_truth = results[results.section != "gene_control"]
    assert claims_table(no_truth)["answer"].iloc[4] == OPEN
    # a measure the claim names is missing: Table 1 without PSNR
    no_psnr = results[~((results.section == "table1") & (results.measure == "psnr"))]
    assert claims_table(no_psnr)["answer"].iloc[0] == OPEN
    # the map's interval straddles the criterion
    assert claims_table(_results(inside=(0.65, 0.55, 0.75)))["answer"].iloc[3] == OPEN
    # no training seed has a KID for both methods
    kid_apart = results[~((results.section == "realism") & (results.method == "baseline"))]
    assert claims_table(kid_apart)["answer"].iloc[2] == OPEN


def test_verdicts_only_when_intervals_are_apart():
    rows = [
        ("table1", "a", "mse", 0.01, 0.008, 0.012),
        ("table1", "b", "mse", 0.03, 0.02, 0.04),
        ("table1", "a", "ssim", 0.70, 0.6, 0.8),
        ("table1", "b", "ssim", 0.75, 0.7, 0.8),
        ("table1", "a", "psnr", 18.0, 17.0, 19.0),
        ("table1", "b", "psnr", 22.0, 21.0, 23.0),
    ]
    results = pd.DataFrame(
        [
            {"section": s, "method": m, "seed": "all", "measure": k, "value": v, "low": lo}
            | {"high": hi}
            for s, m, k, v, lo, hi in rows
        ]
    )
    v = verdicts(results, "table1", "a", "b")["verdict"]
    assert v["mse"] == "a better"  # lower MSE, intervals apart
    assert v["ssim"] == "not resolved"
    assert v["psnr"] == "b better"
    with pytest.raises(ValueError, match="no pooled rows"):
        verdicts(results, "realism", "a", "b")
