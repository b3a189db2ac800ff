"""The phantom's truth about a cohort, the maps read as gene-trait links, and their scoring.

The synthetic cohort knows each patient's hidden subtype and traits (:func:`truth_table`) and,
for every module gene, its driver (:func:`linked_genes`, :func:`true_trait_links`,
:func:`module_composition`). A TRUE link is a pair (gene, trait) such that the gene is among
the curated cohort's genes and its driver is that trait (one of
:data:`radiolib.data.phantom.TRAITS`); genes driven by the subtype or by nuisance factors have no
true link, even when the subtype makes them correlate with a trait.

Both maps are read as sets of (gene, trait) links. The conventional map
(:func:`conventional_links`): every significant (feature, metagene) pair whose feature measures
a phantom trait (:data:`PHANTOM_FEATURE_TRAITS`) links every gene of that metagene's module to
that trait; significant pairs of features that measure no single trait (texture, most shape
features) are counted as ``unscored_pairs``, not as false links. The end-to-end map
(:func:`end_to_end_links`): for each trait, the genes whose gradient x input drives a probe of
that trait most. Claims are scored by :func:`link_recovery`: true positives = claimed and true;
false positives = claimed, not true; recall = TP / all true links (all six traits, whether or
not the feature set measures them); precision = TP / claimed (:func:`score_against_truth`,
:func:`end_to_end_link_table`). :func:`attribution_scores` scores a ranking of genes against the
truly linked ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from radiolib.data.phantom import TRAITS
from radiolib.errors import CohortError
from radiolib.io import atomic_write
from radiolib.radiogenomics.codes import trait_attribution

if TYPE_CHECKING:
    from torch import nn

    from radiolib.data.curated import CuratedCohort
    from radiolib.data.phantom import PhantomTruth
    from radiolib.radiogenomics.conventional import ConventionalMap

IMAGE_DRIVERS = ("subtype", *TRAITS)  # gene-module drivers that shape the tumour image

# pyradiomics feature (prefix "original_" dropped) -> the measured trait it reads
RADIOMIC_TRAITS = {
    "shape2D_MaximumDiameter": "diameter_mm",
    "shape2D_MajorAxisLength": "diameter_mm",
    "shape2D_PixelSurface": "diameter_mm",
    "firstorder_Mean": "attenuation_hu",
    "firstorder_Median": "attenuation_hu",
}
# measured trait (radiolib.metrics) -> phantom trait it reads; the phantom renders solidity as
# the tumour's mean density
MEASURED_PHANTOM_TRAITS = {
    "diameter_mm": "diameter_mm",
    "attenuation_hu": "solidity",
    "margin_sharpness": "margin_sharpness",
}
# image feature -> the phantom trait it measures; features not listed measure none on their own
PHANTOM_FEATURE_TRAITS: dict[str, str] = {
    **{f: MEASURED_PHANTOM_TRAITS.get(t, t) for f, t in RADIOMIC_TRAITS.items()},
    "shape2D_Elongation": "elongation",
    **MEASURED_PHANTOM_TRAITS,
}

MAP_LINKS_COLUMNS = (
    "approach",
    "signal",
    "true_positives",
    "false_positives",
    "recall",
    "precision",
)


# --------------------------------------------------------------------------- the phantom's truth


def truth_table(truth: PhantomTruth, patients: Sequence[str]) -> pd.DataFrame:
    """The hidden subtype and traits of ``patients`` (rows in that order) from a
    :class:`radiolib.data.phantom.PhantomTruth`: columns ``subtype`` and the TRAITS."""
    missing = [p for p in patients if p not in truth.patients.index]
    if missing:
        raise CohortError(
            f"patients {missing[:5]} of the cohort are not in the phantom's ground truth "
            f"(ground_truth/truth.json); was the cohort curated from another phantom?"
        )
    return truth.patients.loc[list(patients), ["subtype", *TRAITS]].copy()


def linked_genes(
    truth: PhantomTruth, gene_names: Sequence[str], drivers: Iterable[str] = IMAGE_DRIVERS
) -> np.ndarray:
    """(G,) bool: which of ``gene_names`` the phantom's truth links to one of ``drivers``
    (default: the subtype and the image traits; nuisance modules are not linked)."""
    drivers = set(drivers)
    links = truth.gene_links
    linked = set(links.loc[links["driver"].isin(drivers), "gene"])
    return np.array([g in linked for g in gene_names], dtype=bool)


def true_trait_links(
    truth: PhantomTruth, gene_names: Sequence[str], traits: Sequence[str] = TRAITS
) -> set[tuple[str, str]]:
    """The true (gene, trait) links among ``gene_names``: genes whose phantom driver is one of
    ``traits``."""
    links = truth.gene_links
    sel = links["driver"].isin(list(traits)) & links["gene"].isin(set(gene_names))
    return set(zip(links.loc[sel, "gene"], links.loc[sel, "driver"], strict=True))


def module_composition(
    modules: Mapping[str, Sequence[str]], truth: PhantomTruth, share: bool = False
) -> pd.DataFrame:
    """Genes of each module (rows ``M0``...) by their phantom driver (columns; ``none`` for
    genes no factor drives), with a ``genes`` total column; ``share``: the driver columns as
    fractions of the module's genes instead of counts."""
    driver = truth.gene_links.drop_duplicates("gene").set_index("gene")["driver"]
    rows = {
        m: pd.Series([driver.get(g, "none") for g in genes]).value_counts()
        for m, genes in modules.items()
    }
    table = pd.DataFrame(rows).T.fillna(0).astype(int)
    table = table[sorted(table.columns, key=lambda c: (c == "none", c))]
    total = table.sum(axis=1)
    if share:
        table = table.div(total, axis=0)
    table.insert(0, "genes", total)
    table.index.name = "module"
    return table


def attribution_scores(
    attribution: np.ndarray, linked_genes_mask: np.ndarray
) -> dict[str, float | int]:
    """How well an attribution (G,) ranks the truly linked genes (G,) bool first.

    ``precision_at_k``: share of linked genes among the top k, k = number of linked genes;
    ``auroc``: probability a linked gene outranks an unlinked one.
    """
    a = np.asarray(attribution, dtype=np.float64).ravel()
    linked = np.asarray(linked_genes_mask, dtype=bool).ravel()
    if a.shape != linked.shape:
        raise ValueError(f"attribution {a.shape} and mask {linked.shape} differ")
    k = int(linked.sum())
    if k == 0 or k == len(a):
        raise ValueError(f"need both linked and unlinked genes (linked: {k} of {len(a)})")
    top = np.argsort(-a, kind="stable")[:k]
    return {
        "precision_at_k": float(linked[top].mean()),
        "auroc": float(roc_auc_score(linked, a)),
        "k": k,
    }


# --------------------------------------------------------------------------- maps read as links


def conventional_links(
    links_df: pd.DataFrame,
    modules: Mapping[str, Sequence[str]],
    feature_traits: Mapping[str, str] | None = None,
) -> set[tuple[str, str]]:
    """The conventional map read as (gene, trait) links.

    A significant (feature, metagene) pair (rows of
    :func:`radiolib.radiogenomics.conventional.significant_links`) links every gene of that
    metagene's module (``modules``: :func:`radiolib.radiogenomics.conventional.module_genes`)
    to the trait the feature measures (``feature_traits``; a feature not in it is taken to be a
    trait itself, as when the measured traits of :func:`radiolib.metrics.measure_traits` serve
    as image features).
    """
    feature_traits = feature_traits or {}
    found = set()
    for row in links_df.itertuples():
        trait = feature_traits.get(row.feature, row.feature)
        if row.metagene not in modules:
            raise ValueError(f"metagene {row.metagene!r} is not among modules {list(modules)[:5]}")
        found.update((gene, trait) for gene in modules[row.metagene])
    return found


def end_to_end_links(
    attribution_df: pd.DataFrame,
    gene_names: Sequence[str],
    top_k: int | Mapping[str, int],
) -> set[tuple[str, str]]:
    """The end-to-end map read as (gene, trait) links: for each trait (column of
    :func:`radiolib.radiogenomics.codes.trait_attribution`, rows genes), its ``top_k`` genes by
    attribution. ``top_k`` is one number or one per trait (e.g. the conventional map's number
    of linked genes, so that both maps claim as many links)."""
    if len(attribution_df) != len(gene_names):
        raise ValueError(f"{len(attribution_df)} attribution rows, {len(gene_names)} gene names")
    names = np.asarray(gene_names)
    found = set()
    for trait in attribution_df.columns:
        k = top_k[trait] if isinstance(top_k, Mapping) else top_k
        if k <= 0:
            continue
        top = np.argsort(-attribution_df[trait].to_numpy(), kind="stable")[:k]
        found.update((str(names[i]), trait) for i in top)
    return found


def link_recovery(
    found_links: Iterable[tuple], true_links: Iterable[tuple]
) -> dict[str, float | int]:
    """Score claimed links against the true ones (both iterables of hashable pairs, e.g.
    (gene, trait)): ``true_positives``, ``false_positives``, ``recall`` (of the truth),
    ``precision`` (of the claims; NaN when nothing is claimed)."""
    found, truth = set(found_links), set(true_links)
    if not truth:
        raise ValueError("true_links is empty: nothing to recover")
    tp = len(found & truth)
    return {
        "true_positives": tp,
        "false_positives": len(found - truth),
        "recall": tp / len(truth),
        "precision": tp / len(found) if found else float("nan"),
    }


# --------------------------------------------------------------------------- scored against truth


def _per_trait(claims: set[tuple[str, str]], true: set[tuple[str, str]]) -> pd.DataFrame:
    """True links, claims, true and false positives of each phantom trait (index trait)."""
    rows = [
        {
            "trait": t,
            "true_links": sum(1 for link in true if link[1] == t),
            "claimed": sum(1 for link in claims if link[1] == t),
            "true_positives": sum(1 for link in claims & true if link[1] == t),
            "false_positives": sum(1 for link in claims - true if link[1] == t),
        }
        for t in TRAITS
    ]
    return pd.DataFrame(rows).set_index("trait")


def score_against_truth(
    cmap: ConventionalMap,
    truth: PhantomTruth,
    cohort: CuratedCohort,
    feature_traits: Mapping[str, str] = PHANTOM_FEATURE_TRAITS,
) -> dict[str, dict]:
    """Link recovery of each feature set of ``cmap`` against the phantom's truth.

    Returns ``{feature_set: {true_positives, false_positives, recall, precision,
    claimed_links, true_links, significant_pairs, unscored_pairs, traits_measured,
    recall_measured_traits, per_trait}}``; ``per_trait`` is a DataFrame (index trait; columns
    true_links, claimed, true_positives, false_positives). See the module docstring for the
    definitions.
    """
    unknown = set(feature_traits.values()) - set(TRAITS)
    if unknown:
        raise ValueError(f"feature_traits map to {sorted(unknown)}, not phantom traits")
    true = true_trait_links(truth, cohort.gene_names)
    if not true:
        raise ValueError("the cohort's genes hold no true trait link (is this the phantom?)")
    out: dict[str, dict] = {}
    for name, df in cmap.features.items():
        sig = cmap.significant[cmap.significant["feature_set"] == name]
        scored = sig[sig["feature"].isin(list(feature_traits))]
        claims = conventional_links(scored, cmap.modules, feature_traits)
        measured = sorted({feature_traits[f] for f in df.columns if f in feature_traits})
        true_measured = {link for link in true if link[1] in measured}
        out[name] = {
            **link_recovery(claims, true),
            "claimed_links": len(claims),
            "true_links": len(true),
            "significant_pairs": len(sig),
            "unscored_pairs": len(sig) - len(scored),
            "traits_measured": measured,
            "recall_measured_traits": (
                len(claims & true_measured) / len(true_measured) if true_measured else np.nan
            ),
            "per_trait": _per_trait(claims, true),
        }
    return out


def recovery_table(scores: Mapping[str, dict], signal: float) -> pd.DataFrame:
    """Scores of :func:`score_against_truth` in the shared link-table format (columns
    :data:`MAP_LINKS_COLUMNS` plus claimed_links and true_links), approach
    ``conventional (<feature set>)``, at phantom ``signal``."""
    rows = [
        {
            "approach": f"conventional ({name})",
            "signal": float(signal),
            **{k: s[k] for k in MAP_LINKS_COLUMNS[2:]},
            "claimed_links": s["claimed_links"],
            "true_links": s["true_links"],
        }
        for name, s in scores.items()
    ]
    return pd.DataFrame(rows)


def end_to_end_link_table(
    gans: Mapping[str, nn.Module],
    cohort: CuratedCohort,
    cmap: ConventionalMap,
    truth: PhantomTruth,
    signal: float,
    feature_set: str = "measured",
    feature_traits: Mapping[str, str] = PHANTOM_FEATURE_TRAITS,
) -> pd.DataFrame:
    """The end-to-end maps read as (gene, trait) links and scored like the conventional one.

    Each GAN's gene code is read with the SAME image features the conventional map correlates
    (``cmap.features[feature_set]``, per patient): a ridge probe from the code to each feature,
    and the genes whose gradient x input drives that probe most
    (:func:`radiolib.radiogenomics.codes.trait_attribution`) are claimed for the feature's
    trait, as many genes as the truth links to that trait (precision at k). The truth only
    scores the claims. One row per GAN in the link-table format (:data:`MAP_LINKS_COLUMNS`),
    approach ``end to end (<name>)``.
    """
    features = cmap.features.get(feature_set)
    if features is None:
        raise ValueError(f"the conventional map has no {feature_set!r} features")
    columns = [f for f in features.columns if f in feature_traits]
    if not columns:
        raise ValueError(f"no feature of {feature_set!r} measures a phantom trait")
    true = true_trait_links(truth, cohort.gene_names)
    per_trait = pd.Series([t for _, t in true]).value_counts()
    rows_of = {p: i for i, p in enumerate(cohort.patients)}
    idx = [rows_of[p] for p in features.index]
    measured = features[columns].rename(columns=dict(feature_traits))
    top_k = {t: int(per_trait.get(t, 0)) for t in measured.columns}
    rows = []
    for name, gan in gans.items():
        attribution = trait_attribution(gan, cohort.genes[idx], measured)
        claims = end_to_end_links(attribution, cohort.gene_names, top_k)
        rows.append(
            {
                "approach": f"end to end ({name})",
                "signal": float(signal),
                **link_recovery(claims, true),
                "claimed_links": len(claims),
                "true_links": len(true),
            }
        )
    return pd.DataFrame(rows)


def write_map_links(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a link table (columns :data:`MAP_LINKS_COLUMNS` first, extra columns kept) as CSV,
    atomically. Raises ValueError naming missing columns."""
    missing = [c for c in MAP_LINKS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"link table lacks columns {missing}")
    rest = [c for c in table.columns if c not in MAP_LINKS_COLUMNS]
    path = Path(path)
    with atomic_write(path, "w") as fh:
        table[[*MAP_LINKS_COLUMNS, *rest]].to_csv(fh, index=False)
    return path


def side_by_side(conventional: pd.DataFrame, other: pd.DataFrame | None) -> pd.DataFrame:
    """Both link tables in one (columns :data:`MAP_LINKS_COLUMNS`), sorted by signal then
    approach; ``other`` may be None (only the conventional rows)."""
    parts = [conventional[list(MAP_LINKS_COLUMNS)]]
    if other is not None:
        parts.append(other[list(MAP_LINKS_COLUMNS)])
    both = pd.concat(parts, ignore_index=True)
    return both.sort_values(["signal", "approach"], kind="stable").reset_index(drop=True)
