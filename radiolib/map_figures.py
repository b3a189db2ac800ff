"""Figures of the radiogenomic maps (notebooks 04 and 05): gene-code embeddings, attributions,
the signal sweep, cluster and interpolation browsers, the conventional map and its links.

They render like every figure of the study (:func:`radiolib.plots.setup_notebook`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from radiolib import plots


def embedding_panels(
    embeddings: Mapping[str, Any], labels: Any, hover: list[str], title: str = ""
) -> go.Figure:
    """Side-by-side 2-D embeddings of the same points, coloured by ``labels`` in every panel."""
    import numpy as np
    from plotly.subplots import make_subplots

    labels = np.asarray(labels)
    names = list(embeddings)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for j, name in enumerate(names, start=1):
        xy = np.asarray(embeddings[name])
        for lab in sorted(set(labels.tolist())):
            sel = labels == lab
            fig.add_trace(
                go.Scatter(
                    x=xy[sel, 0],
                    y=xy[sel, 1],
                    mode="markers",
                    name=f"cluster {lab}",
                    legendgroup=str(lab),
                    showlegend=j == 1,
                    marker={
                        "color": plots.colour(lab),
                        "size": 8,
                        "line": {"width": 0.5, "color": "white"},
                    },
                    text=[f"{h}<br>cluster {lab}" for h, s in zip(hover, sel, strict=True) if s],
                    hovertemplate="%{text}<extra></extra>",
                ),
                1,
                j,
            )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, height=420)
    return fig


def attribution_figure(
    attributions: Mapping[str, Any],
    linked: Any,
    gene_names: list[str],
    top: int = 100,
    title: str = "",
) -> go.Figure:
    """Each model's ``top`` genes by attribution (one panel per entry of ``attributions``, each
    ``(G,)``), ranked left to right; genes truly linked to the image (``linked`` (G,) bool)
    in red, the others grey. Hover: gene name and rank."""
    import numpy as np
    from plotly.subplots import make_subplots

    linked = np.asarray(linked, dtype=bool)
    names = list(attributions)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for j, name in enumerate(names, start=1):
        a = np.asarray(attributions[name], dtype=float)
        order = np.argsort(-a, kind="stable")[:top]
        for is_linked, label, col in (
            (True, "linked to the image", "#d62728"),
            (False, "not linked", "#7f7f7f"),
        ):
            sel = order[linked[order] == is_linked]
            rank = np.flatnonzero(linked[order] == is_linked) + 1
            fig.add_trace(
                go.Scatter(
                    x=rank,
                    y=a[sel],
                    mode="markers",
                    name=label,
                    legendgroup=label,
                    showlegend=j == 1,
                    marker={"color": col, "size": 6},
                    text=[gene_names[i] for i in sel],
                    hovertemplate="%{text}<br>rank %{x}<br>attribution %{y:.3g}<extra></extra>",
                ),
                1,
                j,
            )
        fig.update_xaxes(title_text="rank", row=1, col=j)
    fig.update_yaxes(title_text="mean |gradient x input|", row=1, col=1)
    fig.update_layout(title=title, height=400)
    return fig


def sweep_figure(sweep: pd.DataFrame, metrics: list[str], title: str = "") -> go.Figure:
    """One panel per metric: its value against the signal, one line per representation
    (``sweep``: the tidy frame of ``radiogenomics.scoring.signal_sweep``)."""
    return plots.line_panels(sweep, "signal", "representation", "metric", metrics, title)


def cluster_browser(images: Any, masks: Any, labels: Any, names: list[str]):
    """ipywidgets for jupyter lab: pick a cluster, step through its patients' tumour slices.

    ``images``, ``masks`` (P, S, S): one slice per patient; ``labels`` (P,) cluster of each;
    ``names`` (P,) caption of each (e.g. the patient id)."""
    import ipywidgets as widgets
    import numpy as np

    labels = np.asarray(labels)
    clusters = sorted(set(labels.tolist()))
    scale = max(1, 320 // images.shape[-1])
    choose = widgets.Dropdown(
        options=[(f"cluster {c}", c) for c in clusters], description="cluster"
    )
    slider = widgets.IntSlider(min=0, max=0, value=0, description="patient")
    picture = widgets.Image(format="png")
    caption = widgets.Label()

    def members() -> np.ndarray:
        return np.flatnonzero(labels == choose.value)

    def show(change: Any = None) -> None:
        idx = members()
        i = idx[min(slider.value, len(idx) - 1)]
        picture.value = plots.slice_png(images[i], masks[i], scale)
        caption.value = f"cluster {choose.value}: {names[i]} ({slider.value + 1} of {len(idx)})"

    def pick(change: Any = None) -> None:
        slider.value = 0
        slider.max = len(members()) - 1
        show()

    choose.observe(pick, names="value")
    slider.observe(show, names="value")
    pick()
    return widgets.VBox([choose, slider, caption, picture])


def interpolation_browser(names: list[str], frames: Any, first: int, second: int, steps: int):
    """ipywidgets for jupyter lab: pick two patients, slide t from the first to the second.

    ``frames(a, b)`` returns ``(images, masks)`` ``(steps, S, S)`` for patients ``a`` and ``b``
    (indices into ``names``); it is called again whenever a patient changes."""
    import ipywidgets as widgets

    options = [(n, i) for i, n in enumerate(names)]
    pick_a = widgets.Dropdown(options=options, value=first, description="from")
    pick_b = widgets.Dropdown(options=options, value=second, description="to")
    slider = widgets.IntSlider(min=0, max=steps - 1, value=0, description="step")
    picture = widgets.Image(format="png")
    caption = widgets.Label()
    current: dict[str, Any] = {}

    def show(change: Any = None) -> None:
        images, masks = current["frames"]
        i = slider.value
        picture.value = plots.slice_png(images[i], masks[i], max(1, 320 // images.shape[-1]))
        t = i / (steps - 1)
        caption.value = (
            f"t = {t:.2f}: {1 - t:.2f} x {names[pick_a.value]} + {t:.2f} x {names[pick_b.value]}"
        )

    def recompute(change: Any = None) -> None:
        current["frames"] = frames(pick_a.value, pick_b.value)
        show()

    pick_a.observe(recompute, names="value")
    pick_b.observe(recompute, names="value")
    slider.observe(show, names="value")
    recompute()
    return widgets.VBox([widgets.HBox([pick_a, pick_b]), slider, caption, picture])


def conventional_map_figure(
    rho: pd.DataFrame, q: pd.DataFrame, alpha: float = 0.05, title: str = ""
) -> go.Figure:
    """The conventional radiogenomic map: Spearman rho of features (rows) x metagenes
    (columns), cells with BH q <= ``alpha`` marked with a black dot; NaN cells (untestable)
    stay blank. ``q`` has the same rows and columns as ``rho``."""
    import numpy as np

    if rho.shape != q.shape or list(rho.index) != list(q.index):
        raise ValueError(f"rho {rho.shape} and q {q.shape} must share rows and columns")
    x = [str(c) for c in rho.columns]
    y = [str(i) for i in rho.index]
    qv = q.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=rho.to_numpy(dtype=float),
            x=x,
            y=y,
            customdata=qv,
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-1.0,
            zmax=1.0,
            colorbar={"title": "Spearman rho"},
            hovertemplate="%{y} / %{x}<br>rho %{z:.2f}<br>q %{customdata:.2g}<extra></extra>",
        )
    )
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(qv <= alpha)
    fig.add_trace(
        go.Scatter(
            x=[x[j] for j in cols],
            y=[y[i] for i in rows],
            mode="markers",
            marker={"symbol": "circle", "size": 6, "color": "black"},
            name=f"q <= {alpha:g}",
            hoverinfo="skip",
        )
    )
    # fixed ranges: the markers would otherwise pad the axes; first feature on top
    fig.update_yaxes(range=[len(y) - 0.5, -0.5], tickfont={"size": 9})
    fig.update_xaxes(range=[-0.5, len(x) - 0.5], tickfont={"size": 9}, title="metagene")
    fig.update_layout(
        title=title,
        height=max(320, 14 * len(y) + 160),
        showlegend=True,
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        margin={"l": 10, "r": 10, "t": 60 if title else 30, "b": 40},
    )
    return fig


def link_recovery_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """True and false (gene, trait) links claimed by each approach: grouped bars, one group
    per row of ``table`` (columns approach, signal, true_positives, false_positives, recall,
    precision)."""
    labels = [f"{r.approach} (signal {r.signal:g})" for r in table.itertuples()]
    hover = [f"recall {r.recall:.2f}<br>precision {r.precision:.2f}" for r in table.itertuples()]
    fig = go.Figure()
    for col, name, c in (
        ("true_positives", "true links found", "#2ca02c"),
        ("false_positives", "false links claimed", "#d62728"),
    ):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=table[col],
                name=name,
                marker={"color": c},
                text=table[col],
                hovertext=hover,
            )
        )
    fig.update_layout(title=title, barmode="group", height=420, yaxis={"title": "links"})
    return fig


def settings_figure(summary: pd.DataFrame, measures: list[str], title: str = "") -> go.Figure:
    """One panel per measure: each setting (x) and representation (side by side), the mean over
    training seeds with bars from the lowest to the highest seed (``summary``:
    :func:`radiolib.maps.settings_summary`)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(measures), cols=1, subplot_titles=measures, shared_xaxes=True)
    names = list(dict.fromkeys(summary["representation"]))
    for i, measure in enumerate(measures, start=1):
        part = summary[summary["measure"] == measure]
        for k, name in enumerate(names):
            rows = part[part["representation"] == name]
            if rows["value"].isna().all():
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows["setting"],
                    y=rows["value"],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=i == 1,
                    marker={"color": plots.colour(k), "size": 9},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": rows["high"] - rows["value"],
                        "arrayminus": rows["value"] - rows["low"],
                    },
                    customdata=rows["seeds"],
                    hovertemplate=(
                        f"{name}<br>%{{x}}<br>{measure} %{{y:.3f}} (%{{customdata}} seeds)"
                        "<extra></extra>"
                    ),
                ),
                i,
                1,
            )
    fig.update_layout(title=title, height=260 * len(measures), scattermode="group")
    return fig
