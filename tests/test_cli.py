"""The console commands, end to end on a tiny phantom: phantom -> curate -> train -> evaluate."""

import dataclasses

import pandas as pd
import pytest
import torch

from radiolib import cli
from radiolib.config import get_profile


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
    results = pd.read_csv(workdir / "eval" / "results.csv")
    # the mechanism's own measures: gene control on training donors, the joint head's AUC on
    # training and held-out slices, for the GAN with genes and not for inpainting
    assert set(results[results.section == "gene_control_train"].method) == {"proposed", "real"}
    joint = results[results.section == "joint_head"]
    assert set(joint.method) == {"proposed"} and sorted(joint.level) == ["test", "train"]
    assert joint.value.between(0, 1).all()
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


def test_version(capsys):
    from radiolib import __version__

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"radiolib {__version__}"


def _subcommands():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub


def test_every_command_and_every_flag_has_help():
    sub = _subcommands()
    helped = {a.dest: a.help for a in sub._choices_actions}
    missing = [name for name in sub.choices if not helped.get(name)]
    for name, parser in sub.choices.items():
        missing += [
            f"{name} {a.option_strings or a.dest}"
            for a in parser._actions
            if not a.help or a.help == "==SUPPRESS=="
        ]
    assert not missing, f"without help: {missing}"


def test_every_device_flag_accepts_the_same_choices(capsys):
    parsers = {name: p for name, p in _subcommands().choices.items()}
    kinds = {
        name: next(a.type for a in p._actions if a.dest == "device")
        for name, p in parsers.items()
        if any(a.dest == "device" for a in p._actions)
    }
    assert {"train", "evaluate", "convergence", "study", "bench"} <= set(kinds)
    assert len(set(kinds.values())) == 1
    study = parsers["study"]
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert study.parse_args(["--device", device]).device == device
    with pytest.raises(SystemExit):
        cli.main(["bench", "--device", "tpu"])
    assert "invalid device 'tpu'" in capsys.readouterr().err


def test_list_parameters_honours_profile_and_overrides(capsys, monkeypatch):
    monkeypatch.setenv("RADIOLIB_PROFILE", "quick")
    args = ["study", "--list-parameters", "-p", "train.steps=7", "-p", "phantom.signal=0.5"]
    assert cli.main([*args, "--profile", "smoke"]) == 0
    printed = capsys.readouterr().out
    assert "train.steps = 7" in printed and "phantom.signal = 0.5" in printed
    smoke, quick = get_profile("smoke").phantom, get_profile("quick").phantom
    assert smoke.patients != quick.patients
    assert f"phantom.patients = {smoke.patients}" in printed  # --profile, not $RADIOLIB_PROFILE
    assert cli.main(["study", "--list-parameters"]) == 0
    assert f"phantom.patients = {quick.patients}" in capsys.readouterr().out


def test_phantom_takes_its_defaults_from_the_profile(tmp_path, monkeypatch, capsys):
    import radiolib.data.phantom as phantom

    written = []
    monkeypatch.setattr(phantom, "write_phantom", lambda out, **kw: written.append(kw) or "ok")
    monkeypatch.setenv("RADIOLIB_PROFILE", "smoke")
    assert cli.main(["phantom", "--out", str(tmp_path)]) == 0
    assert written[-1] == dataclasses.asdict(get_profile("smoke").phantom)
    assert cli.main(["phantom", "--out", str(tmp_path), "--profile", "quick"]) == 0
    assert written[-1] == dataclasses.asdict(get_profile("quick").phantom)
    argv = ["phantom", "--out", str(tmp_path), "-p", "phantom.signal=0.5", "-p", "phantom.seed=3"]
    assert cli.main([*argv, "--patients", "6"]) == 0
    changed = {"patients": 6, "seed": 3, "signal": 0.5}
    assert written[-1] == {**dataclasses.asdict(get_profile("smoke").phantom), **changed}
    # a flag and the profile's checks: too few patients is refused before anything is written
    assert cli.main(["phantom", "--out", str(tmp_path), "--patients", "2"]) == 1
    assert "phantom.patients must be >= 4" in capsys.readouterr().err and len(written) == 3
