import dataclasses
import re

import pytest

from radiolib import cli
from radiolib.config import (
    PROFILES,
    SECTIONS,
    Profile,
    default_profile_name,
    get_profile,
    parse_assignments,
    resolve_device,
)


def test_three_profiles_grow_in_size():
    smoke, quick, paper = (PROFILES[n] for n in ("smoke", "quick", "paper"))
    for field in ("phantom.patients", "curation.image_size", "train.steps", "train.batch_size"):
        assert smoke.flat()[field] <= quick.flat()[field] <= paper.flat()[field], field
    assert paper.phantom.patients == 130  # the paper's RNA-seq cohort
    assert quick.curation.image_size == 32  # the ten-minute `make book` budget's grid (intro.md)


def test_profile_from_environment(monkeypatch):
    monkeypatch.delenv("RADIOLIB_PROFILE", raising=False)
    assert default_profile_name() == "quick"
    monkeypatch.setenv("RADIOLIB_PROFILE", "smoke")
    assert get_profile().name == "smoke"


def test_override_converts_strings_to_field_types():
    p = get_profile(
        "smoke",
        {
            "train.steps": "7",
            "train.lr": "1e-3",
            "evaluation.map_signals": "0.1,0.9",
            "curation.hu_window": "(-900, 300)",
        },
    )
    assert p.train.steps == 7 and isinstance(p.train.steps, int)
    assert p.train.lr == pytest.approx(1e-3)
    assert p.evaluation.map_signals == (0.1, 0.9)
    assert p.curation.hu_window == (-900.0, 300.0)
    # the original profile is untouched (frozen dataclasses, copies)
    assert PROFILES["smoke"].train.steps != 7


def test_override_errors_name_the_parameter():
    with pytest.raises(ValueError, match="unknown parameter 'train.stepz'"):
        get_profile("smoke", {"train.stepz": 3})
    with pytest.raises(ValueError, match="train.steps"):
        get_profile("smoke", {"train.steps": "many"})
    with pytest.raises(ValueError, match="image_size must be a power of two"):
        get_profile("smoke", {"curation.image_size": 48})
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("train.checkpoint_every", "0", ">= 1"),
        ("train.log_every", "0", ">= 1"),
        ("train.sample_every", "-1", ">= 1"),
        ("train.num_workers", "-1", ">= 0"),
        ("train.batch_size", "1", ">= 2"),
        ("train.steps", 2.5, "a whole number"),
        ("train.lr", "0", "> 0"),
        ("train.lr", "nan", "finite"),
        ("train.seeds", "-1", ">= 0"),
        ("curation.background_slices", "-2", ">= 0"),
        ("curation.voi_mm", "0", "> 0"),
        ("model.g_channels", "0", ">= 1"),
        ("evaluation.bootstrap", "0", ">= 1"),
        ("evaluation.pairs", "1", ">= 2"),
        ("evaluation.map_steps", "0", ">= 1"),
        ("phantom.matrix", "32", ">= 64"),
        ("model.lambda_map_to_mask", "-1", ">= 0"),
        ("model.gene_dropout", "1", "in [0, 1)"),
        ("model.gene_dropout", "-0.1", "in [0, 1)"),
    ],
)
def test_every_count_and_interval_is_checked(name, value, problem):
    with pytest.raises(ValueError, match=rf"{re.escape(name)} must be {re.escape(problem)}"):
        get_profile("smoke", {name: value})


def test_map_to_mask_l1_needs_a_mask_head():
    with pytest.raises(ValueError, match="lambda_map_to_mask needs model.mask_source = 'head'"):
        get_profile("smoke", {"model.mask_source": "map"})
    mask_is_map = {"model.lambda_map_to_mask": "0", "model.mask_source": "map"}
    assert get_profile("smoke", mask_is_map).model.mask_source == "map"


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_variant_is_a_valid_configuration_of_every_profile(profile):
    from radiolib.config import VARIANTS

    for name, (_, changes) in VARIANTS.items():
        cfg = get_profile(profile, {f"model.{k}": v for k, v in changes.items()})
        for key, value in changes.items():
            assert getattr(cfg.model, key) == value, (name, key)


def test_unknown_profile_in_the_environment_is_named(monkeypatch, capsys):
    monkeypatch.setenv("RADIOLIB_PROFILE", "nosuch")
    message = "RADIOLIB_PROFILE='nosuch' names no profile; choose one of smoke, quick, paper"
    with pytest.raises(ValueError, match=re.escape(message)):
        get_profile()
    assert cli.main(["study", "--list-parameters"]) == 1
    assert capsys.readouterr().err == f"radiolib study: error: {message}\n"


def test_flat_lists_every_field_once():
    flat = PROFILES["quick"].flat()
    n_fields = sum(len(dataclasses.fields(getattr(PROFILES["quick"], s))) for s in SECTIONS)
    assert len(flat) == n_fields
    assert set(SECTIONS) == {f.name for f in dataclasses.fields(Profile)} - {"name"}
    assert isinstance(PROFILES["quick"], Profile)


def test_parse_assignments():
    assert parse_assignments(["train.steps=5", "phantom.signal = 2"]) == {
        "train.steps": "5",
        "phantom.signal": "2",
    }
    with pytest.raises(ValueError, match="name=value"):
        parse_assignments(["train.steps"])


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_contrastive_and_map_comparison_parameters_are_checked():
    p = get_profile("quick", {"contrastive.steps": "50", "evaluation.map_subtypes": "2,5"})
    assert p.contrastive.steps == 50 and p.evaluation.map_subtypes == (2, 5)
    assert p.flat()["contrastive.temperature"] == 0.1
    with pytest.raises(ValueError, match="contrastive.steps"):
        get_profile("smoke", {"contrastive.steps": 0})
    with pytest.raises(ValueError, match="contrastive.temperature"):
        get_profile("smoke", {"contrastive.temperature": -1.0})
    with pytest.raises(ValueError, match="divisible"):
        get_profile("smoke", {"contrastive.image_layers": 6})  # 32 px, 2^6
    with pytest.raises(ValueError, match="map_subtypes"):
        get_profile("smoke", {"evaluation.map_subtypes": "1,3"})
    with pytest.raises(ValueError, match="map_seeds"):
        get_profile("smoke", {"evaluation.map_seeds": ""})
