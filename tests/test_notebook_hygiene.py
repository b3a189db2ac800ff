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
