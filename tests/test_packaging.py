"""pyproject.toml says what the code needs: the Python the pins need, every package imported."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# declared, used as programs or by name, never imported: why each is there
NOT_IMPORTED = {
    "ipykernel": "the kernel papermill and jupyter lab run the notebooks in",
    "jupyterlab": "make lab",
    "jupyter-book": "builds the book (radiolib.study runs its command line)",
    "sphinx-mathjax-offline": "maths in the book without a CDN (_config.yml)",
    "tensorboard": "torch.utils.tensorboard writes the training event files through it",
}


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def _python_floor() -> Version:
    """The oldest Python that every pinned package installed here accepts: the highest of their
    ``Requires-Python`` lower bounds."""
    specs = []
    for name, version in _pins().items():
        try:
            meta = metadata.metadata(name)
        except metadata.PackageNotFoundError:
            continue
        if meta["Version"] == version and meta.get("Requires-Python"):
            specs.append(SpecifierSet(meta["Requires-Python"]))
    floor = max(Version(s.version) for spec in specs for s in spec if s.operator in (">=", "~="))
    assert all(floor in spec for spec in specs), f"no Python {floor} satisfies every pin"
    return floor


def test_python_version_matches_the_pins():
    floor = _python_floor()
    assert (floor.major, floor.minor) == (3, 11)
    assert PYPROJECT["project"]["requires-python"].split("#")[0].strip() == f">={floor}"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{floor.major}{floor.minor}"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith(f"python>={floor},") for d in env["dependencies"])


def _imported_top_level() -> set[str]:
    sources = [p.read_text() for p in (ROOT / "radiolib").rglob("*.py")]
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        sources.append("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "radiolib"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared_and_every_declared_one_used():
    declared = {_normal(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    by_module = metadata.packages_distributions()
    imported = {_normal(by_module[m][0]) for m in _imported_top_level()}
    assert not imported - declared, f"imported but not declared: {sorted(imported - declared)}"
    unused = declared - imported - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_analysis_never_imports_the_trainer():
    """Evaluation, the maps and the radiogenomic analysis read runs (radiolib.runs); importing
    them loads neither the training loop nor the modules that train on phantom variants."""
    code = (
        "import sys\n"
        "import radiolib.evaluation, radiolib.pairs, radiolib.metrics, radiolib.maps\n"
        "from radiolib.radiogenomics import codes, conventional, ground_truth, reference, scoring\n"
        "print(sorted(m for m in ('radiolib.train', 'radiolib.sweeps', 'radiolib.recorder')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_no_module_is_a_house_of_many_jobs():
    """About 600 lines per module at most, about 80 per function."""
    for path in sorted((ROOT / "radiolib").rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 85, f"{path}: {node.name}"
