"""The study runner: order from the table of contents, failures named, last good book kept."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from radiolib import cli
from radiolib.study import StudyError, notebook_order, reproducing_page, run_study

ROOT = Path(__file__).parents[1]

TOC = """format: jb-book
root: book/intro
chapters:
{entries}
  - file: book/_executed/reproducing
"""


def _notebook(path: Path, body: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = new_code_cell('profile = "smoke"\ndata = "phantom"\ndevice = "auto"\noverrides = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("x = 1"), new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture()
def project(tmp_path):
    """A tiny study: the real book configuration, two small notebooks."""
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", tmp_path / "book" / "references.bib")
    (tmp_path / "book" / "intro.md").write_text("# Tiny study\n\nA page.\n")
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_ok.ipynb", "print('all good', x)")
    _notebook(tmp_path / "notebooks" / "02_fail.ipynb", "raise ValueError('planted failure')")
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
    assert not list((project / "book").glob("*.staging-*"))
    assert set(record.notebook_seconds) == {"01_ok"}
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
    from radiolib.study import RunRecord

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
        total_seconds=3.0,
    )
    page = reproducing_page(record)
    assert page.startswith("# Reproducing this study")
    assert "| `train.steps` | `12` |" in page and "| 01_ok | 1.5 |" in page
    assert "-p train.steps=12" in page
