"""Notebooks are committed clean: no outputs, no execution counts, one `parameters` cell."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [i for i, c in enumerate(code) if c.outputs], f"{path.name} has outputs"
    assert not [i for i, c in enumerate(code) if c.execution_count], (
        f"{path.name} has execution counts"
    )
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name} has {len(params)} cells tagged 'parameters'"
    assert "default_profile_name()" in params[0].source, (
        f"{path.name}: the profile default must come from $RADIOLIB_PROFILE"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_every_notebook_is_in_the_book():
    toc = (Path(__file__).parents[1] / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"book/_executed/{path.stem}" in toc, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_plumbing_is_collapsed_in_the_book(path):
    """The cells up to the one that opens the workspace (imports, parameters, the workspace) are
    one click away in the book: whole cells collapsed, except the workspace cell, whose printout
    says what the run is; every later cell shows its code and results."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    opens = [i for i, c in enumerate(code) if "open_workspace(" in c.source]
    assert opens, f"{path.name}: no cell opens the workspace"
    for cell in code[: opens[0]]:
        assert "hide-cell" in cell.metadata.get("tags", []), (
            f"{path.name}: `{cell.source.splitlines()[0]}` is not tagged hide-cell"
        )
    assert "hide-input" in code[opens[0]].metadata.get("tags", []), (
        f"{path.name}: the workspace cell is not tagged hide-input"
    )
    hidden = [
        c.source.splitlines()[0]
        for c in code[opens[0] + 1 :]
        if {"hide-cell", "hide-input", "remove-cell", "remove-input"}
        & set(c.metadata.get("tags", []))
    ]
    assert not hidden, f"{path.name}: later cells hidden from the book: {hidden}"
