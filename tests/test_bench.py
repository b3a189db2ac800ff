"""radiolib.bench: FLOP counting checked by hand, and a smoke-size bench."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from radiolib.bench import (
    bf16_peak_tflops,
    count_flops,
    format_bench,
    random_batch,
    run_bench,
    training_step_flops,
)
from radiolib.config import get_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_count_flops_matches_hand_counts():
    conv = nn.Conv2d(3, 4, 3, padding=1)  # (5, 3, 8, 8) -> (5, 4, 8, 8)
    lin = nn.Linear(256, 6)  # (5, 256) -> (5, 6)
    x = torch.randn(5, 3, 8, 8)
    conv_fwd = 2 * 5 * 4 * 8 * 8 * 3 * 3 * 3  # 2 x outputs x (Cin k k) multiply-adds: 69 120
    lin_fwd = 2 * 5 * 256 * 6  # 15 360
    assert count_flops(conv, x) == conv_fwd
    assert count_flops(lambda: lin(torch.randn(5, 256))) == lin_fwd

    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin)

    def step():
        model(x).sum().backward()

    # Backward: the input x needs no gradient, so the first layer costs one weight-gradient
    # product (= its forward); the Linear costs a weight and an input gradient (2 x forward).
    assert count_flops(step) == conv_fwd + lin_fwd + conv_fwd + 2 * lin_fwd


def test_bf16_peaks_by_name():
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.0
    assert math.isnan(bf16_peak_tflops("Some Future GPU"))


def test_random_batch_shapes():
    b = random_batch(3, 16, 7, 4)
    assert b["tumour"].shape == (3, 1, 16, 16) and b["genes"].shape == (3, 7)
    assert b["noise"].shape == (3, 4) and b["tumour"].abs().max() <= 1
    area = b["mask"].sum((1, 2, 3))
    assert ((area > 0) & (area < 16 * 16 / 2)).all()
    assert set(b["mask"].unique().tolist()) <= {0.0, 1.0}


def test_bench_at_smoke_size():
    profile = get_profile("smoke", {"curation.image_size": 16, "train.batch_size": 4})
    df = run_bench(profile, device="cpu", steps=2, models=("proposed", "inpainting"))
    assert list(df.index) == ["proposed", "inpainting"]
    for col in ("g_params", "d_params", "gflop_per_image", "step_s", "images_per_s", "gflops"):
        assert (df[col] > 0).all(), col
    assert df["images_per_s"].tolist() == pytest.approx((4 / df["step_s"]).tolist())
    assert df["peak_share"].isna().all()  # no bf16 peak on the CPU
    # The gene mapping's first layer alone (5172 x gene_hidden weights, fwd + weight grad)
    # is a floor on the proposed GAN's FLOPs per image.
    floor = 2 * 2 * 5172 * profile.model.gene_hidden / 1e9
    assert df.loc["proposed", "gflop_per_image"] > floor
    assert df.attrs["matmul_fp32_gflops"] > 0
    text = format_bench(df)
    assert "proposed" in text and "fp32 matmul 2048^3" in text and "% fp32 matmul" in text
    assert df.attrs["runs"] == 1 and "runs at once" not in text
    # one training step counted apart (the map comparison's GAN cost) is the bench's count
    torch.manual_seed(7)
    state = torch.get_rng_state()
    flops = training_step_flops("proposed", profile)
    assert torch.equal(torch.get_rng_state(), state)
    assert flops / 4 / 1e9 == pytest.approx(df.loc["proposed", "gflop_per_image"])
    assert training_step_flops("proposed", profile, n_genes=100) < flops


def test_bench_runs_as_many_runs_at_once_as_training():
    profile = get_profile(
        "smoke",
        {"curation.image_size": 16, "train.batch_size": 4, "train.parallel_runs": 2},
    )
    df = run_bench(profile, device="cpu", steps=2, models=("baseline",))
    assert df.attrs["runs"] == 2
    row = df.loc["baseline"]
    assert row["step_s"] > 0
    # images/s and GFLOP/s are those of both runs together
    assert row["images_per_s"] == pytest.approx(2 * 4 / row["step_s"])
    assert row["gflops"] == pytest.approx(2 * row["gflop_per_image"] * 4 / row["step_s"])
    alone = run_bench(
        get_profile("smoke", {"curation.image_size": 16, "train.batch_size": 4}),
        device="cpu",
        steps=1,
        models=("baseline",),
    )
    # the same network in the workers as here
    assert row["g_params"] == alone.loc["baseline", "g_params"]
    assert row["d_params"] == alone.loc["baseline", "d_params"]
    assert "2 runs at once" in format_bench(df)
