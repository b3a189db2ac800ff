"""Sphinx extension of the study's book: what the pages load, shipped once and kept small.

* **plotly.js once per book, not once per page.** The notebooks' figures are rendered
  (:func:`radiolib.plots.setup_notebook`) as a ``<div>`` and the script that draws it, without
  plotly.js. This extension writes plotly.js (the copy in the installed plotly package, so it
  matches the figures) once into the book's ``_static/`` folder and loads it in the ``<head>`` of
  every page that shows a figure, before the page's figure scripts run.
* **Downloadable notebooks without the figures' HTML.** The book offers each executed notebook
  for download (``_sources/``); there a figure's HTML copy (made for the page) is dropped, as
  jupyter lab draws the figure from plotly's own mime type, which stays.
* **MathJax without the bundles no page loads.** ``sphinx-mathjax-offline`` copies the whole
  MathJax distribution (24 MB); the pages load one combined bundle (``mathjax_path``), which
  fetches its fonts and extensions from the component folders. The other combined bundles
  (``tex-svg-full.js`` ...) are removed; every component folder stays. The speech rule engine
  (``sre/``, read aloud by the accessibility menu) keeps the rules of the book's language only
  (``language`` in ``_config.yml``'s Sphinx settings, English by default) and the Nemeth braille
  rules, not those of 11 other languages.
* **No source maps.** The theme's ``*.map`` files serve only a developer's debugger (3.4 MB).

The book stays offline: nothing is loaded from a CDN.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"
FIGURE_CLASS = "plotly-graph-div"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# MathJax's combined bundles (core + input + output in one file); components live in folders
_MATHJAX_BUNDLE = re.compile(r"(tex|mml)-[a-z-]+\.js|node-main\.js")


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


def _slim_notebook_downloads(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for path in (Path(app.outdir) / "_sources").rglob("*.ipynb"):
        nb = json.loads(path.read_text(encoding="utf-8"))
        slimmed = False
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if PLOTLY_MIME in data and FIGURE_CLASS in "".join(data.get("text/html", "")):
                    del data["text/html"]
                    slimmed = True
        if slimmed:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _drop_unused_mathjax_bundles(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    used = static / app.config.mathjax_path
    if used.parent.name != "mathjax" or not used.is_file():
        return  # MathJax from elsewhere (a CDN, another layout): nothing of ours to trim
    for bundle in used.parent.glob("*.js"):
        if bundle != used and _MATHJAX_BUNDLE.fullmatch(bundle.name):
            bundle.unlink()


def _drop_other_speech_languages(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    maps = Path(app.outdir) / "_static" / "mathjax" / "sre" / "mathmaps"
    keep = f"{(app.config.language or 'en').split('_')[0]}.json"
    if not (maps / keep).is_file():
        return  # a language the speech rules do not have: leave them all
    for rules in maps.glob("*.json"):
        if rules.name not in (keep, "base.json", "nemeth.json"):  # Nemeth: braille
            rules.unlink()


def _drop_source_maps(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for source_map in (Path(app.outdir) / "_static").rglob("*.map"):
        source_map.unlink()


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _load_on_figure_pages)
    app.connect("build-finished", _write_plotly_js)
    app.connect("build-finished", _slim_notebook_downloads)
    # after sphinx-mathjax-offline has copied MathJax (its handler has the default priority 500)
    app.connect("build-finished", _drop_unused_mathjax_bundles, priority=900)
    app.connect("build-finished", _drop_other_speech_languages, priority=900)
    app.connect("build-finished", _drop_source_maps, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
