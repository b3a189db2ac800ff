"""Gene expression values: the one place they are checked and transformed.

:func:`check_values` is what every expression table must satisfy (numbers or NaN, none
infinite or negative, each sample once); :func:`preprocess_expression` turns the linear values
of a cohort's patients into the standardised gene vectors the networks see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from radiolib.errors import CohortError

EXPRESSION_TRANSFORM = (
    "genes with any missing value dropped; log2(x + 1); per-gene z-score (x - mean) / std with "
    "mean and population std (ddof=0) over the training patients; genes with zero variance "
    "over them dropped"
)


def check_values(table: pd.DataFrame, source: str, as_read: bool = False) -> np.ndarray:
    """The values of a genes x samples ``table`` as float64 ``(G, P)``, NaN where missing.

    Raises :class:`CohortError` naming ``source`` for a sample that appears twice, a value that
    is no number, a table without any number, or an infinite or negative value (expression is
    linear, e.g. FPKM). ``as_read``: ``table`` is a text file as read (header on line 1, genes
    in column 1), so a bad value is also located by line and column.
    """
    samples = [str(c) for c in table.columns]
    seen: set[str] = set()
    for s in samples:
        if s in seen:
            raise CohortError(f"{source}: sample {s!r} appears twice{' in line 1' * as_read}")
        seen.add(s)
    try:
        values = table.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise CohortError(f"{source}: non-numeric expression values ({exc})") from None
    if values.size == 0 or np.isnan(values).all():
        raise CohortError(f"{source} holds no numeric value (all NA or empty)")

    def where(g: int, s: int) -> str:
        at = f" (line {g + 2}, column {s + 2})" if as_read else ""
        return f"gene {table.index[g]!r}, sample {samples[s]!r}{at}"

    if np.isinf(values).any():
        g, s = np.argwhere(np.isinf(values))[0]
        raise CohortError(f"{source}: infinite value for {where(g, s)}")
    if (values < 0).any():  # NaN compares False
        g, s = np.argwhere(values < 0)[0]
        raise CohortError(
            f"{source}: negative expression {values[g, s]} for {where(g, s)}: a negative value "
            "where linear values >= 0 (e.g. FPKM) are expected"
        )
    return values


def preprocess_expression(
    expression: pd.DataFrame,
    reference: Sequence[str] | None = None,
    source: str = "expression table",
) -> tuple[np.ndarray, list[str], list[str], dict[str, object]]:
    """Genes x samples linear values -> standardised ``(P, G)`` float32, samples as rows.

    Transform: genes with any missing value (NaN) are dropped; ``y = log2(x + 1)``; per gene,
    ``z = (y - mean) / std`` with the mean and population standard deviation (ddof=0) over the
    ``reference`` samples (default: all samples); genes whose std over the reference is zero are
    dropped too. Returns ``(z, sample_ids, gene_names, report)``; ``report`` counts
    ``genes_in``, ``genes_with_missing``, ``genes_constant``, ``genes_kept``, ``samples``.

    Raises :class:`CohortError` naming ``source`` for an empty table, fewer than two samples,
    values :func:`check_values` refuses, or when no gene is complete.
    """
    if not isinstance(expression, pd.DataFrame) or expression.shape[0] == 0:
        raise CohortError(f"{source}: expected a non-empty genes x samples table")
    if expression.shape[1] < 2:
        raise CohortError(
            f"{source}: per-gene standardisation needs >= 2 samples, got {expression.shape[1]}"
        )
    values = check_values(expression, source)
    samples = [str(c) for c in expression.columns]
    complete = ~np.isnan(values).any(axis=1)
    if not complete.any():
        raise CohortError(
            f"no gene without missing values in {source} ({values.shape[0]} genes, "
            f"{values.shape[1]} samples)"
        )
    logged = np.log2(values[complete] + 1.0)
    if reference is None:
        ref_cols = np.arange(len(samples))
    else:
        missing = [r for r in reference if r not in samples]
        if missing or len(reference) < 2:
            raise CohortError(
                f"{source}: reference samples must be >= 2 columns of the table; "
                f"missing {missing[:5]}, given {len(reference)}"
            )
        ref_cols = np.array([samples.index(r) for r in reference])
    mean = logged[:, ref_cols].mean(axis=1, keepdims=True)
    std = logged[:, ref_cols].std(axis=1, keepdims=True)
    # log2 values span ~0-20: a std below 1e-8 is rounding noise of a constant gene
    varying = std[:, 0] > 1e-8
    if not varying.any():
        raise CohortError(f"{source}: every complete gene is constant over the reference samples")
    z = ((logged[varying] - mean[varying]) / std[varying]).T.astype(np.float32)
    genes = [str(g) for g in np.asarray(expression.index)[complete][varying]]
    report = {
        "genes_in": int(values.shape[0]),
        "genes_with_missing": int((~complete).sum()),
        "genes_constant": int((~varying).sum()),
        "genes_kept": int(varying.sum()),
        "samples": len(samples),
        "reference_samples": len(ref_cols),
        "transform": EXPRESSION_TRANSFORM,
    }
    return z, samples, genes, report
