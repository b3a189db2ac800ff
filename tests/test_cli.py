"""The console commands, end to end on a tiny phantom: phantom -> curate -> train -> evaluate."""

import pytest
import torch

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
    ckpt = torch.load(workdir / "inpainting" / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "step": 1}, workdir / "inpainting" / "checkpoint.pt")
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
    printed = capsys.readouterr()
    assert "table1" in printed.out and "gene_control" in printed.out
    assert (workdir / "eval" / "results.csv").is_file()
    # the inpainting run's checkpoint was planted as one of an interrupted run
    assert (
        f"warning: run {runs[1]} is unfinished: its checkpoint is at step 1 of the 2" in printed.err
    )
    assert (workdir / "eval" / "runs.csv").read_text().splitlines()[1:] == [
        f"{runs[0]},proposed,0,2,2,True",
        f"{runs[1]},inpainting,0,1,2,False",
    ]
    # two runs of one model and seed would overwrite each other's results: refused by name
    twin = ["evaluate", "--data", str(curated), "--out", str(workdir / "e2"), runs[0], runs[0]]
    assert cli.main([*twin, "--profile", "smoke", "--device", "cpu"]) == 1
    assert f"runs {runs[0]} and {runs[0]} are both proposed with seed 0" in capsys.readouterr().err


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
    # an output that names a file
    table = workdir / "raw" / "GSE103584_R01_NSCLC_RNAseq.txt"
    train = ["train", "--model", "proposed", "--data", str(workdir / "curated"), "--out"]
    assert cli.main([*train, str(table), "--profile", "smoke", "--device", "cpu"]) == 1
    assert f"run folder {table} is a file; expected a folder" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_without_traceback(monkeypatch, capsys):
    def broken(args):
        raise KeyError("Rows")

    monkeypatch.setattr(cli, "cmd_fetch", broken)
    monkeypatch.delenv("RADIOLIB_TRACEBACK", raising=False)
    assert cli.main(["fetch", "--out", "x"]) == 2
    assert capsys.readouterr().err == (
        "radiolib fetch: unexpected error: KeyError: 'Rows' "
        "(set RADIOLIB_TRACEBACK=1 to see where)\n"
    )
    monkeypatch.setenv("RADIOLIB_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["fetch", "--out", "x"])


def test_list_parameters(capsys):
    assert cli.main(["study", "--profile", "smoke", "--list-parameters"]) == 0
    assert "train.steps = 12" in capsys.readouterr().out
