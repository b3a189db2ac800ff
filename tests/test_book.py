"""Build the book from a smoke run and read every page in headless Chromium."""

import os
import shutil
from pathlib import Path

import pytest

from radiolib.study import run_study

from .browser import find_chromium, inspect_pages

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    found = find_chromium()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed (CI must install Debian's chromium)")
        pytest.skip("Chromium is not installed")
    return found


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The real study (notebooks, book sources) run with the smoke profile in a scratch copy."""
    root = tmp_path_factory.mktemp("study")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(
        ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    shutil.copytree(
        ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_build*", "_executed*")
    )
    record = run_study(profile="smoke", root=root, progress=False)
    return root / "book" / "_build" / "html", record


def test_every_page_loads_offline_without_errors_and_figures_draw(built_book, chromium):
    html, record = built_book
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts)
    executed = [p for p in pages if "_executed" in p.parts]
    assert len(executed) == len(record.notebook_seconds) + 1  # notebooks + reproducing page
    reports = inspect_pages(html, pages, chromium)
    problems = [
        r for r in reports if r.errors or r.remote_requests or r.plotly_drawn != r.plotly_figures
    ]
    assert not problems, "\n".join(map(str, problems))
    assert sum(r.plotly_figures for r in reports) >= len(record.notebook_seconds), (
        "the executed notebooks should show plotly figures"
    )


def test_reproducing_page_shows_the_run(built_book):
    html, record = built_book
    page = (html / "book" / "_executed" / "reproducing.html").read_text()
    assert "Reproducing this study" in page and "smoke" in page
    for name in record.notebook_seconds:
        assert name in page


def test_plotly_js_is_shipped_once_and_the_book_stays_small(built_book):
    html, _ = built_book
    bundles = [p for p in html.rglob("*.js") if "plotly" in p.name]
    assert bundles == [html / "_static" / "plotly.min.js"]
    pages = [p for p in html.rglob("*.html") if "_static" not in p.parts]
    with_figures = [p for p in pages if "plotly-graph-div" in p.read_text()]
    assert with_figures
    for page in with_figures:
        assert page.read_text().count("_static/plotly.min.js") == 1, page
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    assert size < 30e6, f"the book is {size / 1e6:.1f} MB"
