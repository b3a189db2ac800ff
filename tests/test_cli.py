"""The console commands, end to end on a tiny phantom: phantom -> curate -> train -> evaluate."""

import pytest

from radiolib import cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def test_phantom_curate_train_evaluate(workdir, capsys):
    raw, curated = workdir / "raw", workdir / "curated"
    assert cli.main(["phantom", "--out", str(raw), "--patients", "6", "--matrix", "96"]) == 0
    assert (raw / "GSE103584_R01_NSCLC_RNAseq.txt").is_file()
    assert (
        cli.main(["curate", "--data", str(raw), "--out", str(curated), "--profile", "smoke"]) == 0
    )
    assert "curated cohort" in capsys.readouterr().out
    runs = []
    for model in ("proposed", "inpainting"):
        out = workdir / model
        assert (
            cli.main(
                [
                    "train",
                    "--model",
                    model,
                    "--data",
                    str(curated),
                    "--out",
                    str(out),
                    "--profile",
                    "smoke",
                    "-p",
                    "train.steps=2",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        assert (out / "done.json").is_file()
        runs.append(str(out))
    assert (
        cli.main(
            [
                "evaluate",
                "--data",
                str(curated),
                "--out",
                str(workdir / "eval"),
                "--profile",
                "smoke",
                "-p",
                "evaluation.pairs=6",
                "--device",
                "cpu",
                "--truth",
                str(raw),
                *runs,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "table1" in printed and "gene_control" in printed
    assert (workdir / "eval" / "results.csv").is_file()


def test_errors_are_reported_not_raised(workdir, capsys):
    assert (
        cli.main(
            [
                "curate",
                "--data",
                str(workdir / "missing"),
                "--out",
                str(workdir / "c2"),
                "--profile",
                "smoke",
            ]
        )
        == 1
    )
    assert "missing" in capsys.readouterr().err
    assert cli.main(["study", "--profile", "smoke", "-p", "train.stepz=3"]) == 1
    assert "unknown parameter 'train.stepz'" in capsys.readouterr().err


def test_list_parameters(capsys):
    assert cli.main(["study", "--profile", "smoke", "--list-parameters"]) == 0
    assert "train.steps = 12" in capsys.readouterr().out
