"""Figures the notebooks show: plotly for what people explore, rendered offline in the book.

``setup_notebook()`` makes every figure's HTML output a ``<div>`` and the script that draws it,
without plotly.js: the book loads plotly.js once, from its own ``_static/`` folder
(:mod:`radiolib.sphinx_assets`), instead of inlining 4.8 MB in every page. The output also
carries plotly's own mime type, which jupyter lab draws.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import HtmlRenderer

_CDN_MATHJAX = re.compile(r'<script src="https://[^"]*mathjax[^"]*"></script>')


class BookRenderer(HtmlRenderer):
    """Each figure as HTML that draws it with the page's plotly.js (none embedded, none from a
    CDN), without the MathJax ``<script>`` plotly adds from a CDN; our figures use no LaTeX."""

    def __init__(self) -> None:
        super().__init__(connected=False, global_init=False, include_plotlyjs=False)

    def to_mimebundle(self, fig_dict: dict) -> dict:
        bundle = super().to_mimebundle(fig_dict)
        bundle["text/html"] = _CDN_MATHJAX.sub("", bundle["text/html"])
        return bundle


pio.renderers["radiolib"] = BookRenderer()


def setup_notebook() -> None:
    """Figures for the book (HTML drawn by the book's one plotly.js) and for jupyter lab."""
    pio.renderers.default = "radiolib+plotly_mimetype"


def table_figure(
    rows: Mapping[str, Any] | pd.DataFrame, title: str = "", header: tuple[str, str] = ("", "")
) -> go.Figure:
    """A plotly table of a mapping (two columns) or of a DataFrame (its columns)."""
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index() if rows.index.name else rows
        columns = [str(c) for c in frame.columns]
        values = [[str(v) for v in frame[c]] for c in frame.columns]
    else:
        columns = list(header)
        values = [list(map(str, rows.keys())), list(map(str, rows.values()))]
    fig = go.Figure(
        go.Table(
            header={"values": columns, "align": "left", "height": 28},
            cells={"values": values, "align": "left", "height": 22},
        )
    )
    # tall enough for every row: long text wraps within a column (about 7 px a character)
    chars = max(8, 700 // max(1, len(columns)) // 7)
    lines = [max(-(-len(col[r]) // chars) for col in values) for r in range(max(map(len, values)))]
    top = 40 if title else 10
    fig.update_layout(
        title=title,
        margin={"l": 10, "r": 10, "t": top, "b": 10},
        height=min(1200, top + 28 + 22 * sum(max(1, n) for n in lines) + 30),
    )
    return fig


# --------------------------------------------------------------------------- image grids

_PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
]


def colour(i: int) -> str:
    """The study's colour for cluster or subtype ``i`` (the same in every figure)."""
    return _PALETTE[int(i) % len(_PALETTE)]


def grey_levels(image: Any, zrange: tuple[float, float] = (0.0, 1.0)) -> Any:
    """An image ``(Y, X)`` as 8-bit grey levels (0-255 over ``zrange``), flipped upright for a
    plotly heatmap: one byte a pixel in the figure instead of eight, a difference no screen shows,
    which keeps the book's pages small."""
    import numpy as np

    lo, hi = zrange
    scaled = np.clip((np.asarray(image, dtype=float) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)[::-1]


def _outline_z(mask: Any) -> Any:
    """A mask as the 0/1 bytes of an outline contour, flipped upright like :func:`grey_levels`."""
    import numpy as np

    return (np.asarray(mask) > 0.5).astype(np.uint8)[::-1]


def image_grid(
    rows: Mapping[str, Any],
    column_titles: list[str] | None = None,
    contours: Mapping[str, Any] | None = None,
    title: str = "",
    zrange: tuple[float, float] = (0.0, 1.0),
    cell_px: int | None = None,
) -> go.Figure:
    """A grid of grey images: one row per entry of ``rows`` (each ``(n, S, S)``), ``n`` columns.

    ``contours`` maps a row name to masks ``(n, S, S)`` drawn as red outlines on that row.
    Cells are ``cell_px`` wide (default: the grid fits a 760 px page).
    """
    from plotly.subplots import make_subplots

    names = list(rows)
    n = max(len(rows[r]) for r in names)
    cell_px = cell_px or max(60, min(140, 600 // n))
    fig = make_subplots(
        rows=len(names),
        cols=n,
        horizontal_spacing=0.004,
        vertical_spacing=0.02,
        column_titles=column_titles,
        row_titles=names,
    )
    for i, name in enumerate(names, start=1):
        for j, image in enumerate(rows[name], start=1):
            fig.add_trace(
                go.Heatmap(
                    z=grey_levels(image, zrange),
                    colorscale="gray",
                    zmin=0,
                    zmax=255,
                    showscale=False,
                    hoverinfo="skip",
                ),
                i,
                j,
            )
            if contours is not None and name in contours:
                fig.add_trace(
                    go.Contour(
                        z=_outline_z(contours[name][j - 1]),
                        contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
                        line={"width": 1.5},
                        colorscale=[[0, "red"], [1, "red"]],
                        showscale=False,
                        hoverinfo="skip",
                    ),
                    i,
                    j,
                )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, scaleanchor="x", constrain="domain")
    fig.update_layout(
        title=title,
        height=cell_px * len(names) + 80,
        width=cell_px * n + 160,
        margin={"l": 10, "r": 90, "t": 60 if title else 30, "b": 10},
        plot_bgcolor="white",
    )
    return fig


def slice_png(image: Any, mask: Any | None = None, scale: int = 4) -> bytes:
    """A grey slice in [0, 1] as PNG bytes, enlarged ``scale`` times, the mask outlined in red."""
    import io

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    grey = (np.clip(np.asarray(image, float), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if mask is not None:
        m = np.asarray(mask) > 0.5
        edge = m & ~ndimage.binary_erosion(m)
        rgb[edge] = (255, 0, 0)
    rgb = np.kron(rgb, np.ones((scale, scale, 1), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def slice_browser(images: Any, masks: Any | None = None, labels: list[str] | None = None):
    """An ipywidgets slider over ``images`` ``(n, S, S)`` (mask outlined) for jupyter lab."""
    import ipywidgets as widgets

    scale = max(1, 320 // images.shape[-1])
    picture = widgets.Image(format="png")
    caption = widgets.Label()
    slider = widgets.IntSlider(min=0, max=len(images) - 1, value=0, description="slice")

    def show(change: Any = None) -> None:
        i = slider.value
        picture.value = slice_png(images[i], None if masks is None else masks[i], scale)
        caption.value = labels[i] if labels else f"slice {i}"

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, caption, picture])


# --------------------------------------------------------------------------- curves and maps


def loss_curves(
    logs: Mapping[str, pd.DataFrame], terms: list[str] | None = None, title: str = "Training losses"
) -> go.Figure:
    """One panel per loss term, one line per run (``logs`` maps run name to its log frame)."""
    from plotly.subplots import make_subplots

    skip = {"step", "epoch", "seconds", "images_per_s", "time"}
    if terms is None:
        terms = sorted({c for df in logs.values() for c in df.columns if c not in skip})
    cols = 3
    nrows = max(1, -(-len(terms) // cols))
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=terms, vertical_spacing=0.12)
    for k, (run, df) in enumerate(logs.items()):
        for t, term in enumerate(terms):
            if term not in df:
                continue
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=df[term],
                    mode="lines",
                    name=run,
                    legendgroup=run,
                    showlegend=t == 0,
                    line={"color": colour(k)},
                ),
                t // cols + 1,
                t % cols + 1,
            )
    fig.update_layout(title=title, height=260 * nrows + 80)
    return fig


def heatmap(
    frame: pd.DataFrame,
    title: str = "",
    zmid: float | None = 0.0,
    colorscale: str = "RdBu_r",
    zlabel: str = "",
) -> go.Figure:
    """A labelled heatmap of a DataFrame (rows x columns)."""
    fig = go.Figure(
        go.Heatmap(
            z=frame.to_numpy(),
            x=[str(c) for c in frame.columns],
            y=[str(i) for i in frame.index],
            colorscale=colorscale,
            zmid=zmid,
            colorbar={"title": zlabel},
        )
    )
    fig.update_layout(title=title, height=max(300, 22 * len(frame) + 120))
    return fig


def metric_bars(table: pd.DataFrame, metrics: list[str], title: str = "") -> go.Figure:
    """Bars of ``table[m]`` per method with error bars from ``m_low``/``m_high`` columns."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for j, m in enumerate(metrics, start=1):
        err = None
        if f"{m}_low" in table and f"{m}_high" in table:
            err = {
                "type": "data",
                "symmetric": False,
                "array": (table[f"{m}_high"] - table[m]).tolist(),
                "arrayminus": (table[m] - table[f"{m}_low"]).tolist(),
            }
        fig.add_trace(
            go.Bar(
                x=[str(i) for i in table.index],
                y=table[m],
                error_y=err,
                marker={"color": [colour(i) for i in range(len(table))]},
                showlegend=False,
            ),
            1,
            j,
        )
    fig.update_layout(title=title, height=380)
    return fig


def background_sampling_figure(view: Any) -> go.Figure:
    """CT slice with the lung mask, the 5-25 mm band and the drawn centres (curate's view)."""
    import numpy as np

    fig = go.Figure(
        go.Heatmap(
            z=grey_levels(view.ct),
            colorscale="gray",
            zmin=0,
            zmax=255,
            showscale=False,
            hoverinfo="skip",
        )
    )
    for mask, colour_, name in (
        (view.lungs, "#1f77b4", "lung (tumour excluded)"),
        (view.band, "#2ca02c", "allowed centres (distance band)"),
        (view.tumour, "#d62728", "tumour"),
    ):
        if mask.any():
            fig.add_trace(
                go.Contour(
                    z=_outline_z(mask),
                    showscale=False,
                    name=name,
                    contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
                    line={"width": 2},
                    colorscale=[[0, colour_], [1, colour_]],
                    showlegend=True,
                    hoverinfo="skip",
                )
            )
    if len(view.centres):
        ny = view.ct.shape[0]
        fig.add_trace(
            go.Scatter(
                x=view.centres[:, 1],
                y=ny - 1 - view.centres[:, 0],
                mode="markers",
                name="background centre",
                marker={"symbol": "x", "size": 12, "color": "orange"},
            )
        )
    size = np.array(view.ct.shape) * view.spacing_mm
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, scaleanchor="x", constrain="domain")
    fig.update_layout(
        title=f"Patient {view.patient_id}: one axial slice "
        f"({size[1]:.0f} x {size[0]:.0f} mm at {view.spacing_mm:g} mm)",
        height=520,
        legend={"orientation": "h"},
    )
    return fig


def gene_matrix_figure(
    genes: Any, patients: list[str], top: int = 100, title: str = ""
) -> go.Figure:
    """The ``top`` most variable standardised genes (columns) x patients (rows), both ordered
    by hierarchical clustering so that co-expressed blocks stand out."""
    import numpy as np
    from scipy.cluster.hierarchy import leaves_list, linkage

    genes = np.asarray(genes)
    keep = np.argsort(genes.var(axis=0))[::-1][:top]
    sub = genes[:, keep]
    rows = leaves_list(linkage(sub, "average", metric="correlation")) if len(sub) > 2 else [0]
    cols = leaves_list(linkage(sub.T, "average", metric="correlation"))
    fig = go.Figure(
        go.Heatmap(
            z=sub[np.ix_(rows, cols)],
            y=[patients[i] for i in rows],
            colorscale="RdBu_r",
            zmid=0,
            zmin=-3,
            zmax=3,
            colorbar={"title": "z"},
        )
    )
    fig.update_xaxes(showticklabels=False, title=f"{len(keep)} most variable genes")
    fig.update_layout(title=title, height=max(380, 9 * len(patients) + 120))
    return fig


def line_panels(
    frame: pd.DataFrame, x: str, series: str, panel: str, panels: list[str], title: str
) -> go.Figure:
    """One panel per value of ``panel`` (in ``panels`` order): ``value`` against ``x``, one
    line per ``series``; with ``low``/``high`` columns, error bars from them."""
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(frame[series]))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels)
    for j, name in enumerate(panels, start=1):
        part = frame[frame[panel] == name]
        for k, item in enumerate(names):
            line = part[part[series] == item].sort_values(x)
            if line["value"].isna().all():
                continue
            bars = None
            if {"low", "high"} <= set(line.columns):
                bars = {
                    "type": "data",
                    "symmetric": False,
                    "array": line["high"] - line["value"],
                    "arrayminus": line["value"] - line["low"],
                }
            fig.add_trace(
                go.Scatter(
                    x=line[x],
                    y=line["value"],
                    error_y=bars,
                    mode="lines+markers",
                    name=str(item),
                    legendgroup=str(item),
                    showlegend=str(item) not in {t.name for t in fig.data},
                    line={"color": colour(k)},
                    hovertemplate=f"{item}<br>{x} %{{x}}<br>{name} %{{y:.3f}}<extra></extra>",
                ),
                1,
                j,
            )
        fig.update_xaxes(title_text=x, row=1, col=j)
    fig.update_layout(title=title, height=380)
    return fig


def convergence_figure(frame: pd.DataFrame, measures: list[str], title: str = "") -> go.Figure:
    """The convergence study (``radiolib.convergence``): each ``section/measure`` of
    ``measures`` against training steps, one line per model: the mean over training seeds,
    bars from the lowest to the highest seed."""
    named = frame.assign(panel=frame["section"] + "/" + frame["measure"])
    spread = (
        named.groupby(["model", "step", "panel"], sort=False)["value"]
        .agg(value="mean", low="min", high="max")
        .reset_index()
    )
    return line_panels(spread, "step", "model", "panel", measures, title)
