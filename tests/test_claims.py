"""radiolib.claims: the paper's claims answered from planted results, by the stated rules."""

from __future__ import annotations

import pandas as pd

from radiolib.claims import FAILS, HOLDS, OPEN, claims_table


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


def _results(proposed_mse=(0.01, 0.008, 0.012), kid=((1.0, 2.0), (1.5, 1.0))):
    rows = [
        _row("table1", "proposed", "mse", *proposed_mse),
        _row("table1", "baseline", "mse", 0.03, 0.02, 0.04),
        _row("table1", "proposed", "ssim", 0.9, 0.85, 0.95),
        _row("table1", "baseline", "ssim", 0.7, 0.6, 0.8),
        _row("background_kept", "proposed", "ssim", 0.8, 0.7, 0.9),
        _row("background_kept", "baseline", "ssim", 0.75, 0.7, 0.8),
        _row("weight_map", "proposed", "inside_mean", 0.3, level="8"),
        _row("weight_map", "proposed", "outside_mean", 0.5, level="8"),
        _row("weight_map", "proposed", "inside_mean", 0.85, level="32"),
        _row("weight_map", "proposed", "outside_mean", 0.09, level="32"),
        _row("gene_control", "proposed", "diameter_mm", 0.6, 0.3, 0.8),
        _row("gene_control", "proposed", "attenuation_hu", 0.0, -0.2, 0.2),
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
    no_truth = _results()
    no_truth = no_truth[no_truth.section != "gene_control"]
    assert claims_table(no_truth)["answer"].iloc[4] == OPEN
