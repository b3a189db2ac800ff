"""radiolib.convergence: one run per model and seed, continued along the step grid."""

from __future__ import annotations

import json

import pytest

from radiolib.convergence import convergence_study
from tests.train_worker import tiny_cohort, tiny_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_runs_continue_along_the_grid_and_every_step_is_scored(tmp_path):
    cohort = tiny_cohort()
    cfg = tiny_profile(**{"evaluation.pairs": 8, "evaluation.bootstrap": 20})
    saved = []
    frame = convergence_study(
        cohort,
        cfg,
        lambda model, seed: tmp_path / f"{model}-seed{seed}",
        steps=[2, 4],
        seeds=[0],
        models=("proposed",),
        device="auto",  # as the command line passes it
        progress=False,
        on_step=saved.append,
    )
    assert [sorted(f.step.unique()) for f in saved] == [[2], [2, 4]]
    assert sorted(frame.step.unique()) == [2, 4]
    assert set(frame.model) == {"proposed"} and set(frame.seed) == {0}
    at = frame.set_index(["step", "section", "measure"])["value"]
    for step in (2, 4):
        assert {("table1", "mse"), ("weight_map", "inside_mean"), ("mask", "area_px")} <= {
            k[1:] for k in at.index if k[0] == step
        }
    # the second grid point continued the first run rather than starting over
    log = [json.loads(line)["step"] for line in (tmp_path / "proposed-seed0" / "log.jsonl").open()]
    assert log == [1, 2, 3, 4]
    assert json.loads((tmp_path / "proposed-seed0" / "done.json").read_text())["steps"] == 4


def test_grid_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        convergence_study(None, None, None, steps=[4, 2], seeds=[0])
