"""The study runner: order from the table of contents, failures named, last good book kept."""

import dataclasses
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from radiolib import cli
from radiolib.run_record import reproducing_page
from radiolib.study import StudyError, notebook_order, run_study

ROOT = Path(__file__).parents[1]

TOC = """format: jb-book
root: book/intro
chapters:
{entries}
  - file: book/_executed/reproducing
"""


def _notebook(path: Path, *cells, parameter_tags: tuple[str, ...] = ("parameters",)) -> None:
    """A notebook: the parameters cell, then ``cells`` (source text or cells)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = new_code_cell('profile = "smoke"\ndata = "phantom"\ndevice = "auto"\noverrides = {}')
    params.metadata["tags"] = list(parameter_tags)
    nb.cells = [params, *(new_code_cell(c) if isinstance(c, str) else c for c in cells)]
    nbformat.write(nb, path)


@pytest.fixture()
def project(tmp_path):
    """A tiny study: the real book configuration, two small notebooks."""
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", tmp_path / "book" / "references.bib")
    (tmp_path / "book" / "intro.md").write_text("# Tiny study\n\nA page.\n")
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_ok.ipynb", "x = 1", "print('all good', x)")
    _notebook(
        tmp_path / "notebooks" / "02_fail.ipynb", "x = 1", "raise ValueError('planted failure')"
    )
    return tmp_path


def _toc(root: Path, *names: str) -> None:
    entries = "\n".join(f"  - file: book/_executed/{n}" for n in names)
    (root / "_toc.yml").write_text(TOC.format(entries=entries))


def test_order_follows_the_table_of_contents(project):
    _toc(project, "02_fail", "01_ok")
    assert notebook_order(project) == ["02_fail", "01_ok"]
    _toc(project, "01_ok", "03_missing")
    with pytest.raises(StudyError, match="03_missing"):
        notebook_order(project)


def test_failing_notebook_is_named_and_last_good_book_survives(project, monkeypatch, capsys):
    _toc(project, "01_ok")
    # staging folders of a run that was killed (no such process) are cleaned up
    for leftover in ("_executed.staging-99999999", "_build.staging-99999999"):
        (project / "book" / leftover / "html").mkdir(parents=True)
    record = run_study(profile="smoke", root=project, build=True, progress=False)
    assert set(record.notebook_seconds) == {"01_ok"}
    assert record.gemm_gflops > 0  # the device's matrix-product rate, beside the wall time
    index = project / "book" / "_build" / "html" / "index.html"
    executed = project / "book" / "_executed"
    assert index.is_file()
    assert (project / "book/_build/html/book/_executed/reproducing.html").is_file()
    saved = {
        p: p.read_bytes() for p in [index, executed / "01_ok.ipynb", executed / "run_record.json"]
    }
    run = json.loads((executed / "run_record.json").read_text())
    assert run["profile"] == "smoke" and "train.steps" in run["parameters"]
    assert run["book_seconds"] is not None and run["packages"]["torch"] != "not installed"

    # a run killed between the two renames of book/_executed: the next run puts it back
    executed.rename(executed.with_name("_executed.old"))
    _toc(project, "01_ok", "02_fail")
    with pytest.raises(StudyError) as info:
        run_study(profile="smoke", root=project, build=True, progress=False)
    message = str(info.value)
    assert (
        "02_fail.ipynb" in message
        and "cell 3 of 3 (`raise ValueError" in message
        and "planted failure" in message
    )

    # the command line says the same and exits non-zero
    monkeypatch.chdir(project)
    assert cli.main(["study", "--profile", "smoke"]) == 1
    assert "02_fail.ipynb failed in cell 3 of 3" in capsys.readouterr().err

    for path, content in saved.items():
        assert path.read_bytes() == content, f"{path} was changed by a failing run"
    assert not list((project / "book").glob("*.staging-*"))  # nor does a failing one leave any


def test_bad_parameters_fail_before_anything_runs(project):
    _toc(project, "01_ok")
    with pytest.raises(ValueError, match="unknown parameter"):
        run_study(profile="smoke", root=project, overrides={"train.nope": 1}, build=False)
    with pytest.raises(StudyError, match="no such folder"):
        run_study(profile="smoke", root=project, data=str(project / "nowhere"), build=False)
    assert not (project / "book" / "_executed").exists()


def test_reproducing_page_lists_parameters_and_times():
    from radiolib.run_record import RunRecord

    record = RunRecord(
        profile="smoke",
        data="phantom",
        device="cpu",
        parameters={"train.steps": 12},
        overrides={"train.steps": "12"},
        packages={"torch": "2.14.1"},
        git_commit="abc",
        environment={},
        started="now",
        notebook_seconds={"01_ok": 1.5},
        total_seconds=300.0,
        gemm_gflops=200.0,
    )
    page = reproducing_page(record)
    assert page.startswith("# Reproducing this study")
    assert "| `train.steps` | `12` |" in page and "-p train.steps=12" in page
    # wall time beside GEMM-time (seconds x the device's matrix-product rate), as runs compare
    assert "| 01_ok | 1.5 | 0.3 |" in page and "| 200 GFLOP/s |" in page
    assert "300 s = 60 TFLOP of GEMM-time" in page and "10 minutes are 138 TFLOP" in page
    unmeasured = reproducing_page(dataclasses.replace(record, gemm_gflops=None))
    assert "| 01_ok | 1.5 | nan |" in unmeasured


# ------------------------------------------------------------------ run folders


def test_run_folders_are_keyed_by_data_and_every_parameter_that_changes_results(tmp_path):
    from radiolib.config import get_profile
    from radiolib.study import run_name

    smoke = get_profile("smoke")
    cohort = tmp_path / "nsclc download"
    cohort.mkdir()
    phantom = run_name(smoke, "phantom")
    real = run_name(smoke, str(cohort))
    assert phantom.startswith("smoke-phantom-") and real.startswith("smoke-nsclc_download-")
    assert phantom != real
    assert run_name(smoke, str(cohort / ".." / cohort.name)) == real  # the folder, not its spelling
    changed = {
        run_name(get_profile("smoke", {name: value}), "phantom")
        for name, value in [
            ("train.steps", 7),
            ("model.g_channels", 16),
            ("curation.image_size", 64),
            ("phantom.signal", 0.5),
            ("evaluation.bootstrap", 50),
        ]
    }
    assert len(changed) == 5 and phantom not in changed
    # settings that change no result share the folder; the phantom's do not matter for real data
    assert run_name(get_profile("smoke", {"train.num_workers": 3}), "phantom") == phantom
    assert run_name(get_profile("smoke", {"phantom.signal": 0.5}), str(cohort)) == real
    assert run_name(get_profile("quick"), "phantom") != phantom


def test_workspaces_of_different_runs_never_share_a_folder(project, monkeypatch):
    from radiolib.study import RUN_IDENTITY, open_workspace

    _toc(project, "01_ok")
    monkeypatch.chdir(project / "notebooks")  # where papermill runs the notebooks
    first = open_workspace("smoke", device="cpu")
    (first.results / "table.csv").write_text("kept")
    other = open_workspace("smoke", device="cpu", overrides={"train.steps": "7"})
    again = open_workspace("smoke", device="cpu")
    assert first.run_dir.parent == project / "runs"
    assert other.run_dir != first.run_dir and again.run_dir == first.run_dir
    assert (first.results / "table.csv").read_text() == "kept"
    identity = json.loads((other.run_dir / RUN_IDENTITY).read_text())
    assert identity["profile"] == "smoke" and identity["data"] == "phantom"
    assert identity["parameters"]["train.steps"] == 7


def test_the_runner_and_its_notebooks_agree_on_the_run_folder(project):
    _notebook(
        project / "notebooks" / "03_where.ipynb",
        "from radiolib import study\n"
        "print(study.open_workspace(profile, data, 'cpu', overrides).run_dir)",
    )
    _toc(project, "03_where")
    record = run_study(
        profile="smoke", root=project, overrides={"train.steps": "5"}, build=False, progress=False
    )
    assert record.run_dir.startswith("runs/smoke-phantom-")
    executed = nbformat.read(project / "book" / "_executed" / "03_where.ipynb", as_version=4)
    printed = executed.cells[-1].outputs[0]["text"].strip()
    assert printed == str(project / record.run_dir)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "hide-cell" in injected[0].metadata["tags"]
    assert f"`{record.run_dir}`" in reproducing_page(record)


def test_make_clean_keeps_runs_and_clean_runs_says_what_it_removes(tmp_path):
    import subprocess

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "runs" / "quick-phantom-0123abcd" / "models").mkdir(parents=True)
    (tmp_path / "book" / "_build" / "html").mkdir(parents=True)
    (tmp_path / "book" / "_executed").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# kept\n")

    def make(target: str) -> str:
        done = subprocess.run(
            ["make", target], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return done.stdout

    make("clean")
    assert not (tmp_path / "book" / "_build").exists()
    assert not (tmp_path / "book" / "_executed").exists()
    assert (tmp_path / "book" / "intro.md").is_file()
    assert (tmp_path / "runs" / "quick-phantom-0123abcd" / "models").is_dir()
    said = make("clean-runs")
    assert "runs/quick-phantom-0123abcd" in said and not (tmp_path / "runs").exists()
    assert "nothing to remove" in make("clean-runs")


def test_the_book_ships_plotly_js_once_and_collapses_plumbing(project):
    from plotly.offline import get_plotlyjs

    from radiolib.sphinx_assets import PLOTLY_MIME

    setup = new_code_cell("from radiolib import plots\nplots.setup_notebook()\nprint('set up')")
    setup.metadata["tags"] = ["hide-input"]
    figures = new_code_cell(
        "for n in (1, 2):\n    plots.table_figure({'a': n}, title=f'table {n}').show()"
    )
    _notebook(
        project / "notebooks" / "04_figures.ipynb",
        setup,
        figures,
        parameter_tags=("parameters", "hide-cell"),
    )
    _toc(project, "01_ok", "04_figures")
    run_study(profile="smoke", root=project, build=True, progress=False)
    html = project / "book" / "_build" / "html"
    shipped = [p for p in html.rglob("*.js") if "plotly" in p.name]
    assert shipped == [html / "_static" / "plotly.min.js"]
    assert shipped[0].read_text() == get_plotlyjs()
    page = (html / "book" / "_executed" / "04_figures.html").read_text()
    assert page.count('<script src="../../_static/plotly.min.js') == 1
    assert page.count("plotly-graph-div") >= 2 and len(page) < 500_000  # no plotly.js inlined
    assert page.index("_static/plotly.min.js") < page.index("Plotly.newPlot(")
    for other in ("index.html", "book/_executed/01_ok.html"):  # no figure, no plotly.js
        assert "plotly.min.js" not in (html / other).read_text()
    # the notebook offered for download keeps plotly's mime type for jupyter lab, not the HTML
    executed = nbformat.read(project / "book/_executed/04_figures.ipynb", as_version=4)
    download = nbformat.read(html / "_sources/book/_executed/04_figures.ipynb", as_version=4)
    for nb, html_kept in ((executed, True), (download, False)):
        figures = [o.get("data", {}) for o in nb.cells[-1].outputs]
        assert len(figures) == 2 and all(PLOTLY_MIME in d for d in figures)
        assert all(("text/html" in d) == html_kept for d in figures)
    # MathJax: the bundle the pages load and every component folder, not the other bundles
    mathjax = html / "_static" / "mathjax"
    assert (mathjax / "tex-chtml.js").is_file() and (mathjax / "output" / "svg").is_dir()
    assert not [p.name for p in mathjax.glob("tex-*.js") if p.name != "tex-chtml.js"]
    speech = sorted(p.name for p in (mathjax / "sre" / "mathmaps").glob("*.json"))
    assert speech == ["base.json", "en.json", "nemeth.json"]
    assert not list((html / "_static").rglob("*.map"))  # no source maps
    # plumbing is one click away: the parameters cells whole, the set-up cell's code
    assert page.count("tag_hide-cell") == 2 and page.count("tag_hide-input") == 1
    assert "set up" in page


def test_the_terminal_shows_each_notebook_and_its_training_bars_not_the_book(project, capsys):
    _notebook(
        project / "notebooks" / "04_bar.ipynb",
        "from radiolib.progress import progress_bar\n"
        "bar = progress_bar(3, 'toy seed 0', unit='step')\n"
        "for _ in range(3):\n"
        "    bar.set_postfix({'d_total': '0.5'}, refresh=False)\n"
        "    bar.update(1)\n"
        "bar.close()\n"
        "print('trained')",
    )
    _toc(project, "01_ok", "04_bar")
    run_study(profile="smoke", root=project, build=False, progress=True)
    shown = capsys.readouterr()
    assert "[1/2] 01_ok.ipynb (smoke profile) ..." in shown.out
    assert "[2/2] 04_bar.ipynb (smoke profile) ..." in shown.out
    assert "[2/2] 04_bar.ipynb done in " in shown.out
    assert "toy seed 0: 100%" in shown.err and "3/3 [" in shown.err
    assert "d_total=0.5" in shown.err
    executed = nbformat.read(project / "book" / "_executed" / "04_bar.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert [o.get("text", "").strip() for o in outputs] == ["trained"]  # no bar in the book
