"""The paper's claims about synthesis, read off one evaluation: which hold on this run.

:func:`claims_table` takes the tidy results of :func:`radiolib.evaluation.evaluate_synthesis` and
answers, for the proposed GAN against the MC-GAN baseline, each claim the paper makes about its
syntheses, with the numbers that decide it. A claim *holds* or *does not hold* only where the
data can tell (intervals over donors and seeds apart from each other or from the criterion, or,
for KID, which has no interval, every training seed the same way); otherwise it is *not
resolved*. Nothing here is tuned to an expected answer: the rules are fixed
before the numbers are read, and stated in each row.
"""

from __future__ import annotations

import pandas as pd

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved"
LOWER_IS_BETTER = {"mse", "kid", "mmd2"}
PAIRWISE_MEASURES = ("mse", "ssim", "psnr")  # Table 1's, and the background kept's
# the separation the fusion block is built for: its finest map open on the nodule, shut around it
MAP_INSIDE_AT_LEAST, MAP_OUTSIDE_AT_MOST = 0.6, 0.2


def verdicts(results: pd.DataFrame, section: str, first: str, second: str) -> pd.DataFrame:
    """Which of two methods does better on each measure of ``section``, and whether the data
    can tell: ``first better`` / ``second better`` only when their pooled 95 % intervals
    (``seed == "all"`` rows of :func:`evaluate_synthesis` results) do not overlap, else
    ``not resolved``. Lower is better for MSE-like measures, higher for the rest.
    Returns index ``measure`` with both values and the verdict."""
    part = results[(results.section == section) & (results.seed == "all")]
    if part.empty:
        raise ValueError(f"no pooled rows in section {section!r}")
    rows = {}
    for measure, group in part.groupby("measure", sort=False):
        by = group.set_index("method")
        if first not in by.index or second not in by.index:
            continue
        a, b = by.loc[first], by.loc[second]
        low = measure in LOWER_IS_BETTER
        if (a.high < b.low) if low else (a.low > b.high):
            verdict = f"{first} better"
        elif (b.high < a.low) if low else (b.low > a.high):
            verdict = f"{second} better"
        else:
            verdict = "not resolved"
        rows[measure] = {first: a.value, second: b.value, "verdict": verdict}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "measure"
    return out


def _pairwise(results: pd.DataFrame, section: str, first: str, second: str) -> tuple[str, str]:
    """(answer, evidence) for "first beats second on every measure of section": holds when
    every measure's intervals are apart in first's favour, does not hold when any is apart the
    other way."""
    if results[(results.section == section) & (results.seed == "all")].empty:
        return OPEN, f"no pooled rows in section {section}"
    calls = verdicts(results, section, first, second)
    missing = [m for m in PAIRWISE_MEASURES if m not in calls.index]
    if missing:
        return OPEN, f"{section} lacks {', '.join(missing)} for {first} or {second}"
    calls = calls.loc[list(PAIRWISE_MEASURES)]
    said = [f"{m}: {r[first]:.4g} vs {r[second]:.4g}, {r.verdict}" for m, r in calls.iterrows()]
    if (calls.verdict == f"{first} better").all():
        answer = HOLDS
    elif (calls.verdict == f"{second} better").any():
        answer = FAILS
    else:
        answer = OPEN
    return answer, "; ".join(said)


def _realism(results: pd.DataFrame, first: str, second: str) -> tuple[str, str]:
    """KID has no interval: the claim holds (or fails) only when every training seed agrees."""
    kid = results[(results.section == "realism") & (results.measure == "kid")]
    per_seed = kid.pivot_table(index="seed", columns="method", values="value")
    if first not in per_seed or second not in per_seed:
        return OPEN, "no realism rows for both methods"
    both = per_seed[[first, second]].dropna()
    if both.empty:
        return OPEN, f"no training seed has a KID for both {first} and {second}"
    diff = both[first] - both[second]
    answer = HOLDS if (diff < 0).all() else FAILS if (diff > 0).all() else OPEN
    said = ", ".join(f"seed {s}: {a:.3g} vs {b:.3g}" for s, (a, b) in both.iterrows())
    return answer, f"KID (lower is more realistic; decided only where every seed agrees), {said}"


def _gene_control(results: pd.DataFrame, method: str) -> tuple[str, str]:
    """Each trait is shown to follow the donor when its interval lies above 0, shown to run
    against the donor when it lies below 0, and not resolved otherwise."""
    part = results[
        (results.section == "gene_control") & (results.method == method) & (results.seed == "all")
    ].set_index("measure")
    traits = [t for t in ("diameter_mm", "attenuation_hu") if t in part.index]
    if not traits:
        return OPEN, "no gene control rows (the hidden truth is known on the synthetic cohort only)"
    follows = [t for t in traits if part.loc[t, "low"] > 0]
    against = [t for t in traits if part.loc[t, "high"] < 0]
    if len(follows) == len(traits):
        answer = HOLDS
    elif against:
        answer = FAILS
    elif follows:
        answer = "partly: " + ", ".join(follows)
    else:
        answer = OPEN
    said = [
        f"{t}: rho {r['value']:.2f} ({r['low']:.2f} to {r['high']:.2f})"
        for t, r in part.loc[traits].iterrows()
    ]
    return answer, "; ".join(said) + " (95 % CI over donors and seeds; shown where above 0)"


def _separation(results: pd.DataFrame, method: str) -> tuple[str, str]:
    """The finest map's pooled intervals: holds when inside lies wholly at or above the
    criterion and outside wholly at or below it, does not hold when either lies wholly on the
    wrong side."""
    maps = results[
        (results.section == "weight_map") & (results.method == method) & (results.seed == "all")
    ]
    if maps.empty:
        return OPEN, "no weight map"
    finest = maps.level.astype(int).max()
    at = maps[maps.level.astype(int) == finest].set_index("measure")
    if not {"inside_mean", "outside_mean"} <= set(at.index):
        return OPEN, f"the finest map ({finest} px) lacks its inside or outside mean"
    inside, outside = at.loc["inside_mean"], at.loc["outside_mean"]
    if inside.low >= MAP_INSIDE_AT_LEAST and outside.high <= MAP_OUTSIDE_AT_MOST:
        answer = HOLDS
    elif inside.high < MAP_INSIDE_AT_LEAST or outside.low > MAP_OUTSIDE_AT_MOST:
        answer = FAILS
    else:
        answer = OPEN
    return answer, (
        f"finest map ({finest} px) {inside.value:.2f} ({inside.low:.2f} to {inside.high:.2f}) "
        f"inside the mask, {outside.value:.2f} ({outside.low:.2f} to {outside.high:.2f}) outside "
        f"(criterion: >= {MAP_INSIDE_AT_LEAST} and <= {MAP_OUTSIDE_AT_MOST})"
    )


def claims_table(
    results: pd.DataFrame, first: str = "proposed", second: str = "baseline"
) -> pd.DataFrame:
    """One row per claim of the paper about its syntheses: ``claim``, ``answer`` (holds, does
    not hold, not resolved, or partly) and ``evidence`` (the numbers, and the rule). ``results``:
    the tidy frame of :func:`radiolib.evaluation.evaluate_synthesis`."""
    rows = [
        (
            f"Table 1: {first} better than {second} on MSE, SSIM and PSNR",
            _pairwise(results, "table1", first, second),
        ),
        (
            f"{first} keeps the background better than {second}",
            _pairwise(results, "background_kept", first, second),
        ),
        (f"{first} more realistic than {second}", _realism(results, first, second)),
        (f"{first}'s weight map separates nodule from background", _separation(results, first)),
        (
            f"held-out genes steer {first}'s nodule (diameter and attenuation)",
            _gene_control(results, first),
        ),
    ]
    return pd.DataFrame([{"claim": c, "answer": a, "evidence": e} for c, (a, e) in rows]).set_index(
        "claim"
    )
