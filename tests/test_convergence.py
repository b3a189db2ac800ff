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
        assert {
            ("table1", "mse"),
            ("weight_map", "inside_mean"),
            ("mask", "area_px"),
            ("joint_head", "auc_train"),
            ("joint_head", "auc_test"),
        } <= {k[1:] for k in at.index if k[0] == step}
    # the second grid point continued the first run rather than starting over
    log = [json.loads(line)["step"] for line in (tmp_path / "proposed-seed0" / "log.jsonl").open()]
    assert log == [1, 2, 3, 4]
    assert json.loads((tmp_path / "proposed-seed0" / "done.json").read_text())["steps"] == 4


def test_the_study_scores_the_ema_generator_as_the_book_reads_it(tmp_path):
    """With a generator EMA, the convergence study scores the averaged weights (what
    runs.load_generator hands the notebooks), not the live ones."""
    from radiolib.evaluation import evaluate_synthesis
    from radiolib.runs import load_checkpoint, load_generator

    cohort = tiny_cohort()
    cfg = tiny_profile(**{"evaluation.pairs": 8, "evaluation.bootstrap": 20, "train.ema": 0.5})
    frame = convergence_study(
        cohort, cfg, lambda m, s: tmp_path / f"{m}-{s}", [3], [0], ("proposed",), progress=False
    )
    reported = frame.query("section == 'table1' and measure == 'mse'").value.item()

    def table1_mse(gan) -> float:
        ev = evaluate_synthesis(cohort, cfg, {("proposed", 0): gan})
        return ev.per_pair.query("method == 'proposed'").mse.mean()

    averaged = load_generator(tmp_path / "proposed-0")
    live = load_generator(tmp_path / "proposed-0")
    live.generator.load_state_dict(load_checkpoint(tmp_path / "proposed-0")["generator"])
    assert reported == pytest.approx(table1_mse(averaged), rel=1e-9)
    assert reported != pytest.approx(table1_mse(live), rel=1e-6)


def test_grid_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        convergence_study(None, None, None, steps=[4, 2], seeds=[0])
