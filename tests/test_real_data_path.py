"""The study on a cohort folder given by path, as a real NSCLC Radiogenomics download is given.

A phantom written without its hidden truth stands in for the real cohort: the notebooks must
take the path through the same loaders and skip, with a note, only what needs the truth.
"""

import shutil
from pathlib import Path

import pytest

from radiolib.data.phantom import TRUTH_FILE, write_phantom
from radiolib.study import run_study

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def test_study_runs_on_a_cohort_folder_without_truth(tmp_path):
    cohort = tmp_path / "download"
    write_phantom(cohort, patients=10, matrix=160, progress=False)
    shutil.rmtree(cohort / TRUTH_FILE.parent)
    project = tmp_path / "study"
    project.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "notebooks",
        project / "notebooks",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints"),
    )
    shutil.copytree(
        ROOT / "book", project / "book", ignore=shutil.ignore_patterns("_build*", "_executed*")
    )
    record = run_study(profile="smoke", data=str(cohort), root=project, build=False, progress=False)
    assert record.data == str(cohort.resolve())
    assert set(record.notebook_seconds) >= {
        "01_data_curation",
        "03_synthesis_quality",
        "04_radiogenomic_map",
    }
    run_dir = project / record.run_dir  # keyed by the data source and the parameters
    assert run_dir.parent == project / "runs" and run_dir.name.startswith("smoke-")
    assert not (run_dir / "phantom").exists()  # nothing synthetic was made
    assert (run_dir / "curated" / "manifest.json").is_file()
    results = (run_dir / "results" / "synthesis_quality.csv").read_text()
    assert "table1" in results and "gene_control" not in results
