"""Sphinx extension of the study's book: plotly.js once per book, not once per page.

The notebooks' figures are rendered (:func:`radiolib.plots.setup_notebook`) as a ``<div>`` and the
script that draws it, without plotly.js. This extension writes plotly.js (the copy in the installed
plotly package, so it matches the figures) once into the book's ``_static/`` folder and loads it
in the ``<head>`` of every page that shows a figure, before the page's figure scripts run. The book
stays offline: nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"
FIGURE_CLASS = "plotly-graph-div"


def _load_on_figure_pages(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    if FIGURE_CLASS in context.get("body", ""):
        app.add_js_file(PLOTLY_JS)  # called here, it is added to this page only


def _write_plotly_js(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    from plotly.offline import get_plotlyjs

    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    (static / PLOTLY_JS).write_text(get_plotlyjs(), encoding="utf-8")


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _load_on_figure_pages)
    app.connect("build-finished", _write_plotly_js)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
