"""radiolib.runs: reading finished runs without ever training."""

from __future__ import annotations

import pytest

from radiolib.errors import MissingRunError
from radiolib.runs import DONE, finished_runs
from tests.train_worker import tiny_cohort, tiny_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_finished_runs_reads_what_train_models_wrote_and_names_what_is_missing(tmp_path):
    from radiolib.train import train_models

    cohort, cfg = tiny_cohort(), tiny_profile(**{"train.steps": 2, "train.seeds": "0,1"})
    folder = lambda model, seed: tmp_path / f"{model}-{seed}"  # noqa: E731
    trained = train_models(cohort, cfg, folder, models=("proposed",), device="cpu")
    found = finished_runs(cohort, cfg, folder, ("proposed",))
    columns = ["model", "seed", "steps", "out", "g_total"]
    assert found[columns].equals(trained[columns])
    # never trains: a model without runs is named, with the notebook that trains it
    with pytest.raises(MissingRunError, match=r"baseline seed 0 \(not trained.*02_training"):
        finished_runs(cohort, cfg, folder, ("proposed", "baseline"))
    assert not folder("baseline", 0).exists()
    # other settings: more steps than the run has, or other data
    with pytest.raises(MissingRunError, match=r"proposed seed 1 \(trained with other"):
        finished_runs(cohort, tiny_profile(**{"train.steps": 3}), folder, ("proposed",), (1,))
    with pytest.raises(MissingRunError, match="other settings or data"):
        finished_runs(tiny_cohort(seed=1), cfg, folder, ("proposed",), (0,))
    # a run killed before the end
    (folder("proposed", 1) / DONE).unlink()
    with pytest.raises(MissingRunError, match=r"proposed seed 1 \(unfinished"):
        finished_runs(cohort, cfg, folder, ("proposed",))
    with pytest.raises(ValueError, match="unknown model"):
        finished_runs(cohort, cfg, folder, ("nonsense",))


def test_a_variants_fingerprint_follows_its_own_options(monkeypatch):
    """Redefining a variant's options changes its fingerprint (a cached run of the old
    definition is not reused); the plain models' fingerprints do not move."""
    import radiolib.config as config
    from radiolib.runs import fingerprint

    cohort, cfg = tiny_cohort(), tiny_profile()
    before = {m: fingerprint(m, 12, 32, cohort, cfg, 0) for m in ("proposed", "proposed-paper")}
    base, changes = config.VARIANTS["proposed-paper"]
    redefined = {**config.VARIANTS, "proposed-paper": (base, {**changes, "gate_bias": 0.0})}
    monkeypatch.setattr("radiolib.config.VARIANTS", redefined)
    assert fingerprint("proposed", 12, 32, cohort, cfg, 0) == before["proposed"]
    assert fingerprint("proposed-paper", 12, 32, cohort, cfg, 0) != before["proposed-paper"]
