"""Figures the notebooks show: plotly for what people explore, rendered offline in the book.

``setup_notebook()`` makes plotly embed plotly.js in the notebook's HTML output (renderer
``notebook``: no CDN), and also emits plotly's own mime type so jupyter lab shows live figures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import NotebookRenderer

_CDN_MATHJAX = re.compile(r'<script src="https://[^"]*mathjax[^"]*"></script>')


class OfflineNotebookRenderer(NotebookRenderer):
    """plotly's ``notebook`` renderer (plotly.js embedded once per notebook) without the
    MathJax ``<script>`` it adds from a CDN to every figure; our figures use no LaTeX."""

    def to_mimebundle(self, fig_dict: dict) -> dict:
        bundle = super().to_mimebundle(fig_dict)
        bundle["text/html"] = _CDN_MATHJAX.sub("", bundle["text/html"])
        return bundle


pio.renderers["radiolib"] = OfflineNotebookRenderer(connected=False)


def setup_notebook() -> None:
    """Offline plotly for the book (HTML with plotly.js inlined) and for jupyter lab."""
    pio.renderers.default = "radiolib+plotly_mimetype"


def table_figure(
    rows: Mapping[str, Any] | pd.DataFrame, title: str = "", header: tuple[str, str] = ("", "")
) -> go.Figure:
    """A plotly table of a mapping (two columns) or of a DataFrame (its columns)."""
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index() if rows.index.name else rows
        columns = [str(c) for c in frame.columns]
        values = [frame[c].astype(str).tolist() for c in frame.columns]
    else:
        columns = list(header)
        values = [list(map(str, rows.keys())), list(map(str, rows.values()))]
    fig = go.Figure(
        go.Table(
            header={"values": columns, "align": "left"}, cells={"values": values, "align": "left"}
        )
    )
    fig.update_layout(
        title=title,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        height=min(900, 60 + 28 * max(len(v) for v in values)),
    )
    return fig
