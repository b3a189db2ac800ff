"""radiolib.train: the step, determinism, resume, kills, NaN guard, two processes."""

from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import radiolib
from radiolib.distributed import GlobalBatchSampler, World
from radiolib.errors import CohortError, StaleRunError, TrainingError
from radiolib.runs import PREVIOUS_CHECKPOINT, inspect_runs, load_generator
from radiolib.train import TrainingLoop, TrainResult, train
from tests.train_worker import tiny_cohort, tiny_gan, tiny_profile

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("train_worker.py")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort():
    return tiny_cohort()


def _weights(gan) -> dict[str, torch.Tensor]:
    return {
        f"{k}.{n}": t.detach().clone()
        for k, net in (("g", gan.generator), ("d", gan.discriminator))
        for n, t in net.state_dict().items()
    }


def _same(a: dict, b: dict, atol: float = 0.0) -> bool:
    assert a.keys() == b.keys()
    return all(torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0) for k in a)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(radiolib.__file__).parents[1]), str(ROOT), env.get("PYTHONPATH", "")]
    )
    return env


def test_sampler_splits_each_global_batch_between_ranks():
    single = list(GlobalBatchSampler(10, 4, seed=3, epoch=1))
    assert len(single) == 2 and all(len(b) == 4 for b in single)
    assert len(set(sum(single, []))) == 8  # a permutation, tail of 2 dropped
    ranks = [list(GlobalBatchSampler(10, 4, 3, 1, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    assert list(GlobalBatchSampler(10, 4, 3, 1, start=1)) == single[1:]
    assert list(GlobalBatchSampler(10, 4, 3, 2)) != single  # a new order each epoch
    tiled = list(GlobalBatchSampler(3, 4, 0, 0))  # a split smaller than one batch
    assert len(tiled) == 1 and sorted(set(tiled[0])) == [0, 1, 2]
    with pytest.raises(TrainingError, match="divisible"):
        GlobalBatchSampler(10, 5, 0, 0, world_size=2)


def test_one_step_matches_a_hand_written_update(cohort):
    """D is stepped once on its own loss; G is scored by the updated D; D gets no G gradient;
    the gene code gets D's gradient and G's, applied once."""
    from radiolib.data.dataset import PairedSlices

    dropout = {"model.gene_dropout": 0.5}
    cfg = tiny_profile(**dropout)
    gan = tiny_gan(**dropout)
    ref = copy.deepcopy(gan)
    ds = PairedSlices(cohort, "train", noise_dim=cfg.model.noise_dim, seed=0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])

    assert gan.generator.mapping.dropout.p == 0.5
    loop = TrainingLoop(gan, cfg, "cpu", World())
    torch.manual_seed(5)  # the same gene dropout masks in both
    terms = loop.step(batch, 1)
    assert {"d_total", "g_total"} <= terms.keys()
    assert all(p.requires_grad for p in gan.discriminator.parameters())

    t = cfg.train
    opt_d = torch.optim.Adam(ref.discriminator.parameters(), t.lr, betas=(t.beta1, t.beta2))
    opt_g = torch.optim.Adam(ref.generator.parameters(), t.lr, betas=(t.beta1, t.beta2))
    ref.train()
    torch.manual_seed(5)
    fake = ref.generate(batch)
    opt_g.zero_grad()
    d_loss = ref.discriminator_losses(batch, fake.detach())["total"]
    d_loss.backward()
    # the D step trains the generator's gene code too (model.d_gene_code "shared"): its
    # gradient stays on the code and G's step applies it with G's own
    assert ref.generator.mapping.fc1.weight.grad.abs().sum() > 0
    opt_d.step()
    d_after = {k: v.clone() for k, v in ref.discriminator.state_dict().items()}
    ref.discriminator.requires_grad_(False)
    g_loss = ref.generator_losses(batch, fake)["total"]
    g_loss.backward()
    opt_g.step()
    assert terms["d_total"] == pytest.approx(d_loss.item(), rel=1e-6)
    assert terms["g_total"] == pytest.approx(g_loss.item(), rel=1e-6)
    # D's running statistics move in G's step (it runs in train mode), its weights do not.
    params_d = dict(gan.discriminator.named_parameters())
    for k, v in params_d.items():
        assert torch.equal(v.detach(), d_after[k]), k
    assert _same(_weights(gan), _weights(ref))


def test_compiled_generator_trains_like_the_eager_one_and_leaves_it_in_place(cohort):
    """train.compile: the step paints with the compiled generator (the same parameters), the
    losses and weights follow the eager step up to rounding, and gan.generator stays eager."""
    from radiolib.data.dataset import PairedSlices

    cfg = tiny_profile()
    ds = PairedSlices(cohort, "train", noise_dim=cfg.model.noise_dim, seed=0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    runs = {}
    for compiled in (False, True):
        gan = tiny_gan()
        eager_generator = gan.generator
        loop = TrainingLoop(gan, tiny_profile(**{"train.compile": compiled}), "cpu", World())
        assert (loop.compiled_generator is not None) == compiled
        terms = [loop.step(batch, step) for step in (1, 2)]
        assert gan.generator is eager_generator
        runs[compiled] = terms, _weights(gan)
    for eager, compiled in zip(runs[False][0], runs[True][0], strict=True):
        assert compiled.keys() == eager.keys()
        assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert _same(runs[False][1], runs[True][1], atol=1e-4)


def test_deterministic_resumable_and_skips_when_done(cohort, tmp_path):
    cfg = tiny_profile()
    a = tiny_gan()
    res = train(a, cohort, cfg, tmp_path / "a", seed=0, device="cpu", progress=False)
    assert isinstance(res, TrainResult) and res.steps == 6 and res.images_per_s > 0
    assert not res.skipped and {"d_total", "g_total"} <= res.losses.keys()
    b = tiny_gan()
    train(b, cohort, cfg, tmp_path / "b", seed=0, device="cpu", progress=False)
    assert _same(_weights(a), _weights(b))  # same seed: the same weights, bit for bit

    c = tiny_gan()
    train(
        c,
        cohort,
        tiny_profile(**{"train.steps": 4}),
        tmp_path / "c",
        seed=0,
        device="cpu",
        progress=False,
    )  # stops mid-epoch (3 batches per epoch)
    c2 = tiny_gan(seed=1)  # other initial weights, overwritten by the checkpoint on resume
    train(c2, cohort, cfg, tmp_path / "c", seed=0, device="cpu", progress=False)
    assert _same(_weights(a), _weights(c2))
    steps = [json.loads(x)["step"] for x in (tmp_path / "c/log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]

    workers = tiny_gan()  # items come from a loader worker process: the same batches
    train(
        workers,
        cohort,
        tiny_profile(**{"train.num_workers": 1}),
        tmp_path / "w",
        seed=0,
        device="cpu",
        progress=False,
    )
    assert _same(_weights(a), _weights(workers))

    other = tiny_gan()
    train(other, cohort, cfg, tmp_path / "d", seed=1, device="cpu", progress=False)
    assert not _same(_weights(a), _weights(other))  # the seed matters (data order, noise)

    mtime = (tmp_path / "a/checkpoint.pt").stat().st_mtime_ns
    fresh = tiny_gan(seed=5)
    again = train(fresh, cohort, cfg, tmp_path / "a", seed=0, device="cpu", progress=False)
    assert again.skipped and again.losses == res.losses
    assert _same(_weights(fresh), _weights(a))  # a skipped run still hands back the weights
    assert (tmp_path / "a/checkpoint.pt").stat().st_mtime_ns == mtime
    with pytest.raises(TrainingError, match="other settings"):
        train(
            tiny_gan(),
            cohort,
            tiny_profile(**{"train.lr": 1e-3}),
            tmp_path / "a",
            seed=0,
            device="cpu",
            progress=False,
        )


def test_outputs_and_ema_generator(cohort, tmp_path):
    cfg = tiny_profile(**{"train.ema": 0.9})
    gan = tiny_gan()
    res = train(gan, cohort, cfg, tmp_path, seed=0, device="cpu", progress=True)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["epoch"] == 2 and "scaler" not in ckpt
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert isinstance(ckpt["rng"]["python"], torch.Tensor)
    assert ckpt["gan"]["name"] == "proposed" and ckpt["gan"]["n_genes"] == 40
    assert ckpt["config"]["train"]["ema"] == 0.9

    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert all(r["images_per_s"] > 0 and "g_total" in r and "epoch" in r for r in log)
    assert log[-1]["g_total"] == pytest.approx(res.losses["g_total"])

    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_000003.npz",
        "step_000006.npz",
    ]
    with np.load(tmp_path / "samples/step_000006.npz") as s:
        assert s["image"].shape == (8, 16, 16) and s["background"].shape == (8, 16, 16)
        for k in ("image", "background", "mask", "real"):
            assert 0 <= s[k].min() and s[k].max() <= 1, k
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["steps"] == 6 and done["seconds"] > 0

    loaded = load_generator(tmp_path)
    assert not loaded.training
    ema = ckpt["generator_ema"]
    live = ckpt["generator"]
    differs = [k for k in ema if ema[k].is_floating_point() and not torch.equal(ema[k], live[k])]
    assert differs  # EMA weights lag behind the live ones
    for k, v in loaded.generator.state_dict().items():
        assert torch.equal(v, ema[k]), k
    # The EMA is the running average of the live weights: after step 1 it sits 1 - 0.9 of
    # the way from the initial weights; check its bounds on one tensor.
    k = differs[0]
    init = tiny_gan().generator.state_dict()[k]
    assert (ema[k] - live[k]).abs().max() < (init - live[k]).abs().max()


def test_ema_starts_from_the_initial_weights_and_resumes_bit_for_bit(cohort, tmp_path):
    """One step: EMA = beta * initial + (1 - beta) * live; a resumed EMA run equals an
    uninterrupted one in every tensor of the checkpoint, the EMA weights included."""
    beta = 0.9
    one = tiny_profile(**{"train.ema": beta, "train.steps": 1})
    train(tiny_gan(), cohort, one, tmp_path / "one", seed=0, device="cpu", progress=False)
    ckpt = torch.load(tmp_path / "one/checkpoint.pt", weights_only=True)
    init = tiny_gan().generator.state_dict()
    for k, live in ckpt["generator"].items():
        ema = ckpt["generator_ema"][k]
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(ema, live), k  # buffers follow the live generator
        else:
            expect = beta * init[k] + (1 - beta) * live  # lerp rounds differently: 1 ulp
            torch.testing.assert_close(ema, expect, rtol=1e-6, atol=1e-6)

    cfg = tiny_profile(**{"train.ema": beta})
    train(tiny_gan(), cohort, cfg, tmp_path / "full", seed=0, device="cpu", progress=False)
    half = tiny_profile(**{"train.ema": beta, "train.steps": 4})
    train(tiny_gan(), cohort, half, tmp_path / "resumed", seed=0, device="cpu", progress=False)
    train(tiny_gan(seed=3), cohort, cfg, tmp_path / "resumed", seed=0, device="cpu")
    full = torch.load(tmp_path / "full/checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=True)
    for net in ("generator", "generator_ema", "discriminator"):
        for k, v in full[net].items():
            assert torch.equal(v, resumed[net][k]), (net, k)
    loaded = load_generator(tmp_path / "resumed")
    for k, v in loaded.generator.state_dict().items():
        assert torch.equal(v, full["generator_ema"][k]), k


def _board(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_and_sample_grids_survive_a_resume(cohort, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "run"
    half = tiny_profile(**{"train.steps": 4})
    train(tiny_gan(), cohort, half, out, seed=0, device="cpu", progress=False)
    # a session killed after logging step 5 but before its checkpoint: its value must go
    with SummaryWriter(out / "tensorboard") as stale:
        stale.add_scalar("loss/g_total", 999.0, 5)
    train(tiny_gan(), cohort, tiny_profile(), out, seed=0, device="cpu", progress=False)

    acc = _board(out)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    tags = acc.Tags()["scalars"]
    assert {"loss/d_total", "loss/g_total", "speed/images_per_s", "epoch"} <= set(tags)
    assert {f"loss/{k}" for k in log[-1] if k.startswith(("d_", "g_"))} <= set(tags)
    for tag, key in (("loss/g_total", "g_total"), ("loss/d_total", "d_total")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
        for e, r in zip(events, log, strict=True):
            assert e.value == pytest.approx(r[key], rel=1e-6), (tag, e.step)
    grids = acc.Images("samples")
    saved = sorted(int(p.stem.split("_")[1]) for p in (out / "samples").glob("step_*.npz"))
    assert [g.step for g in grids] == saved == [3, 4, 6]  # 4: the end of the first session
    # 5 rows (background, image, mask, real, real mask) x 8 samples of 16 px, 2 px padding
    assert (grids[-1].height, grids[-1].width) == (5 * 18 + 2, 8 * 18 + 2)

    train(tiny_gan(), cohort, tiny_profile(), out, seed=0, device="cpu", resume=False)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1  # a fresh run
    assert [e.step for e in _board(out).Scalars("loss/g_total")] == [1, 2, 3, 4, 5, 6]


def test_non_finite_losses_name_step_and_term(cohort, tmp_path, monkeypatch):
    gan = tiny_gan()
    original = gan.generator_losses
    calls = {"n": 0}

    def broken(batch, fake):
        calls["n"] += 1
        terms = dict(original(batch, fake))
        if calls["n"] == 3:
            key = next(k for k in terms if k != "total")
            terms[key] = terms[key] * float("nan")
            broken.key = key
        return terms

    monkeypatch.setattr(gan, "generator_losses", broken)
    with pytest.raises(TrainingError) as err:
        train(gan, cohort, tiny_profile(), tmp_path / "g", seed=0, device="cpu", progress=False)
    name = broken.key if broken.key.startswith("g_") else "g_" + broken.key
    assert str(err.value) == f"step 3: generator term {name} is nan"
    assert torch.load(tmp_path / "g/checkpoint.pt", weights_only=True)["step"] == 2

    # A batch holding inf (a corrupt slice) stops the discriminator at once.
    bad = tiny_cohort()
    bad.tumour_images[:] = np.inf
    with pytest.raises(TrainingError, match=r"step 1: discriminator term d_\w+ is (nan|inf)"):
        train(tiny_gan(), bad, tiny_profile(), tmp_path / "d", seed=0, device="cpu", progress=False)


def test_non_finite_buffers_stop_the_run_and_it_reads_as_unfinished(cohort, tmp_path):
    """Diverging batch-norm statistics with finite losses (what a huge lr does) are caught."""
    gan = tiny_gan()
    name = next(
        n
        for n, m in gan.discriminator.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    original, calls = gan.discriminator_losses, {"n": 0}

    def overflowing(batch, fake):
        calls["n"] += 1
        if calls["n"] == 3:
            gan.discriminator.get_submodule(name).running_var.fill_(float("inf"))
        return original(batch, fake)

    gan.discriminator_losses = overflowing
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        train(gan, cohort, tiny_profile(), out, seed=0, device="cpu", progress=False)
    assert str(err.value).startswith(
        f"step 3: discriminator buffer {name}.running_var holds non-finite values (inf)"
    )
    kept = torch.load(out / "checkpoint.pt", weights_only=True)
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["discriminator"].values())
    assert not (out / "done.json").exists()
    # evaluation sees a run interrupted at step 2 of 6
    runs = inspect_runs([out], cohort)
    assert runs.to_dict("records") == [
        {"run": str(out), "model": "proposed", "seed": 0, "step": 2, "steps": 6, "finished": False}
    ]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_gan(), cohort, tiny_profile(**{"train.steps": 4}), out, 0, "cpu", progress=False)
    assert torch.load(out / PREVIOUS_CHECKPOINT, weights_only=True)["step"] == 2
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    resumed, reference = tiny_gan(), tiny_gan()
    train(resumed, cohort, tiny_profile(), out, seed=0, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "checkpoint.pt: unreadable checkpoint" in err
    assert "resuming from the previous checkpoint checkpoint.prev.pt (step 2)" in err
    assert "--no-resume" in err
    train(reference, cohort, tiny_profile(), tmp_path / "ref", 0, "cpu", progress=False)
    assert _same(_weights(resumed), _weights(reference))  # as if never interrupted
    assert torch.load(out / PREVIOUS_CHECKPOINT, weights_only=True)["step"] == 4
    for name in ("checkpoint.pt", PREVIOUS_CHECKPOINT):
        (out / name).write_bytes(b"PK junk")
    with pytest.raises(TrainingError, match="cannot resume the run .*--no-resume"):
        train(tiny_gan(), cohort, tiny_profile(**{"train.steps": 8}), out, 0, "cpu", progress=False)


def test_runs_of_another_cohort_or_twins_are_named(cohort, tmp_path):
    out = tmp_path / "run"
    train(tiny_gan(), cohort, tiny_profile(**{"train.steps": 2}), out, 0, "cpu", progress=False)
    assert inspect_runs([out], cohort)["finished"].tolist() == [True]
    with pytest.raises(
        StaleRunError, match=r"run .*run \(proposed, seed 0\) was trained on another"
    ):
        inspect_runs([out], tiny_cohort(seed=1))  # same sizes, other data
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    with pytest.raises(TrainingError, match=f"runs {out} and {twin} are both proposed with seed 0"):
        inspect_runs([out, twin], cohort)
    # a checkpoint that does not record its cohort is compared by its sizes
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    del ckpt["cohort"]
    torch.save(ckpt, out / "checkpoint.pt")
    fewer_genes = tiny_cohort()
    fewer_genes.genes = fewer_genes.genes[:, :30]
    with pytest.raises(StaleRunError, match="another cohort \\(n_genes 40, image_size 16\\)"):
        inspect_runs([out], fewer_genes)


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_completes(cohort, tmp_path):
    steps = 40
    out = tmp_path / "run"
    rng = random.Random(0)
    cmd = [sys.executable, str(WORKER), str(out), str(steps), "1"]
    kills, seen = 0, [0]

    def checkpoint_step() -> int:
        path = out / "checkpoint.pt"
        return torch.load(path, weights_only=True)["step"] if path.exists() else 0

    for _ in range(3):
        env = dict(_env(), RADIOLIB_TEST_STEP_DELAY="0.03")  # a run lasts >= 1.2 s
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if checkpoint_step() > seen[-1]:  # this process is training: kill it soon
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(proc.stderr.read().decode())
        step = checkpoint_step()  # loads with weights_only after every kill
        assert seen[-1] < step <= steps
        seen.append(step)
    assert kills == 3 and seen[-1] < steps, seen  # every attempt was killed mid-run
    cfg = tiny_profile(
        **{"train.steps": steps, "train.checkpoint_every": 1, "train.sample_every": 1000}
    )
    resumed = tiny_gan()
    train(resumed, cohort, cfg, out, seed=0, device="cpu", progress=False)
    reference = tiny_gan()
    train(reference, cohort, cfg, tmp_path / "ref", seed=0, device="cpu", progress=False)
    assert _same(_weights(resumed), _weights(reference))
    assert not list(out.glob(".checkpoint.pt.*.tmp"))  # stale temporaries cleaned up


def test_kill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(cohort, tmp_path):
    out = tmp_path / "run"
    env = dict(_env(), RADIOLIB_TEST_KILL_AT_SAVE="3")  # dies writing the step-3 checkpoint
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), "5", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(list(out.glob(".checkpoint.pt.*.tmp"))) == 1  # the half-written file
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    cfg = tiny_profile(
        **{"train.steps": 5, "train.checkpoint_every": 1, "train.sample_every": 1000}
    )
    resumed, reference = tiny_gan(), tiny_gan()
    train(resumed, cohort, cfg, out, seed=0, device="cpu", progress=False)
    train(reference, cohort, cfg, tmp_path / "ref", seed=0, device="cpu", progress=False)
    assert _same(_weights(resumed), _weights(reference))
    assert not list(out.glob(".checkpoint.pt.*.tmp"))


def test_train_from_args_reads_a_curated_folder(cohort, tmp_path):
    from radiolib.train import train_from_args
    from tests.train_worker import write_cohort

    data = write_cohort(cohort, tmp_path / "curated")
    cfg = tiny_profile(**{"train.steps": 2})
    res = train_from_args(
        "proposed", data, cfg, tmp_path / "run", seed=3, device="cpu", resume=True
    )
    assert res.steps == 2 and (tmp_path / "run/done.json").is_file()
    ckpt = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert ckpt["seed"] == 3 and ckpt["gan"]["n_genes"] == 40
    assert train_from_args("proposed", data, cfg, tmp_path / "run", 3, "cpu", True).skipped
    with pytest.raises(CohortError, match="curated"):
        train_from_args("proposed", tmp_path / "nowhere", cfg, tmp_path / "x", 0, "cpu", True)


def test_two_gloo_processes_match_one_process(cohort, tmp_path):
    """torchrun with 2 CPU processes: equal ranks, and equal to one process (global BN)."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        str(WORKER),
        str(out),
        "3",
        "3",
    ]
    run = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for net in ("generator", "discriminator"):
        for k in r0[net]:
            assert torch.equal(r0[net][k], r1[net][k]), (net, k)

    single = tiny_gan()
    cfg = tiny_profile(
        **{"train.steps": 3, "train.checkpoint_every": 3, "train.sample_every": 1000}
    )
    train(single, cohort, cfg, tmp_path / "one", seed=0, device="cpu", progress=False)
    ddp_ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    for net, module in (("generator", single.generator), ("discriminator", single.discriminator)):
        for k, v in module.state_dict().items():
            assert torch.allclose(ddp_ckpt[net][k].double(), v.double(), atol=1e-5), (net, k)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    one = [json.loads(x) for x in (tmp_path / "one/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    for a, b in zip(log, one, strict=True):
        assert a["d_total"] == pytest.approx(b["d_total"], rel=1e-4)
        assert a["g_total"] == pytest.approx(b["g_total"], rel=1e-4)


@pytest.mark.parametrize("name", ["baseline", "inpainting"])
def test_other_models_train_and_reload(cohort, tmp_path, name):
    cfg = tiny_profile(**{"train.steps": 2, "train.sample_every": 2})
    gan = tiny_gan(name)
    res = train(gan, cohort, cfg, tmp_path, seed=0, device="cpu", progress=False)
    assert res.steps == 2 and all(np.isfinite(v) for v in res.losses.values())
    loaded = load_generator(tmp_path)
    assert loaded.name == name and not loaded.training
    for k, v in gan.generator.state_dict().items():
        assert torch.equal(v, loaded.generator.state_dict()[k]), k


def test_train_models_runs_each_model_and_seed_and_reuses_them(cohort, tmp_path):
    from radiolib.runs import read_log, read_samples
    from radiolib.train import train_models

    cfg = tiny_profile()
    folder = lambda model, seed: tmp_path / f"{model}-{seed}"  # noqa: E731
    runs = train_models(
        cohort, cfg, folder, models=("proposed", "inpainting"), seeds=(0, 1), device="cpu"
    )
    assert list(zip(runs.model, runs.seed, strict=True)) == [
        ("proposed", 0),
        ("proposed", 1),
        ("inpainting", 0),
        ("inpainting", 1),
    ]
    assert (runs.steps == cfg.train.steps).all() and not runs.skipped.any()
    log = read_log(folder("proposed", 0))
    assert log.step.iloc[-1] == cfg.train.steps and "g_background_l1" in log
    samples = read_samples(folder("proposed", 0))
    assert [int(s["step"]) for s in samples] == sorted(int(s["step"]) for s in samples)
    assert samples and 0 <= samples[-1]["image"].min() and samples[-1]["image"].max() <= 1
    again = train_models(cohort, cfg, folder, models=("proposed",), seeds=(0,), device="cpu")
    assert again.skipped.all()
    # the cohort was curated again (other data): the run is trained again, not refused
    changed = copy.copy(cohort)
    changed.genes = cohort.genes[::-1].copy()
    with pytest.raises(StaleRunError):
        train(tiny_gan(), changed, cfg, folder("proposed", 0), 0, device="cpu")
    redone = train_models(changed, cfg, folder, models=("proposed",), seeds=(0,), device="cpu")
    assert not redone.skipped.any() and redone.steps.iloc[0] == cfg.train.steps
    with pytest.raises(TrainingError, match="no training log"):
        read_log(tmp_path / "nowhere")


def test_under_a_study_train_models_shows_model_step_time_left_and_losses(cohort, tmp_path, capsys):
    from radiolib.progress import relayed_progress
    from radiolib.train import train_models

    cfg = tiny_profile()
    folder = lambda model, seed: tmp_path / f"{model}-{seed}"  # noqa: E731
    train_models(cohort, cfg, folder, models=("proposed",), seeds=(0,), device="cpu")
    assert "proposed seed 0" not in capsys.readouterr().err  # no bar outside a study
    shown = io.StringIO()
    with relayed_progress(shown, every=0):
        train_models(cohort, cfg, folder, models=("inpainting",), seeds=(1,), device="cpu")
    last = shown.getvalue().splitlines()[-1]
    assert last.startswith("inpainting seed 1: 100%") and "6/6 [" in last
    assert "<00:00" in last and "d_total=" in last and "g_total=" in last


def test_parallel_runs_train_in_processes_as_one_at_a_time_and_show_their_bars(cohort, tmp_path):
    import dataclasses

    from radiolib.progress import relayed_progress
    from radiolib.runs import load_generator
    from radiolib.train import train_models

    cfg = tiny_profile()
    both = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, parallel_runs=2))
    alone = lambda model, seed: tmp_path / "alone" / f"{model}-{seed}"  # noqa: E731
    beside = lambda model, seed: tmp_path / "beside" / f"{model}-{seed}"  # noqa: E731
    train_models(cohort, cfg, alone, models=("proposed",), seeds=(0, 1), device="cpu")
    shown = io.StringIO()
    with relayed_progress(shown, every=0):
        runs = train_models(cohort, both, beside, models=("proposed",), seeds=(0, 1), device="cpu")
    assert list(zip(runs.model, runs.seed, strict=True)) == [("proposed", 0), ("proposed", 1)]
    assert (runs.steps == cfg.train.steps).all() and not runs.skipped.any()
    # one thread here, one thread in each worker: the same sums in the same order
    for seed in (0, 1):
        a, b = load_generator(alone("proposed", seed)), load_generator(beside("proposed", seed))
        for k, v in a.generator.state_dict().items():
            assert torch.equal(v, b.generator.state_dict()[k]), (seed, k)
    lines = shown.getvalue()
    assert "proposed seed 0: 100%" in lines and "proposed seed 1: 100%" in lines
    # finished runs are reused whichever way they were trained
    again = train_models(cohort, cfg, beside, models=("proposed",), seeds=(0, 1), device="cpu")
    assert again.skipped.all()


def test_joint_head_auc_scores_own_genes_against_another_patients(cohort):
    """The AUC is read the right way round (own genes the positives) over the same slices and
    partners as PairedSlices draws them, and a head blind to the code scores 0.5."""
    from radiolib.data.dataset import PairedSlices
    from radiolib.pairs import joint_head_auc

    gan = tiny_gan()
    gan.discriminator_code = lambda genes: genes[:, :8]
    gan.discriminator.score_image_mask_gene = lambda feats, code: code[:, :1, None, None]
    ds = PairedSlices(cohort, "train", noise_dim=gan.noise_dim, seed=3)
    rows = np.random.default_rng(3).permutation(len(ds))[:10]
    own = np.array([ds[int(i)]["genes"][0].item() for i in rows])
    other = np.array([ds[int(i)]["mismatch_genes"][0].item() for i in rows])
    by_hand = np.mean((own[:, None] > other[None]) + 0.5 * (own[:, None] == other[None]))
    auc, n = joint_head_auc(gan, cohort, "train", 10, seed=3)
    assert auc == pytest.approx(by_hand) and n == 10
    gan.discriminator.score_image_mask_gene = lambda feats, code: torch.zeros(len(code), 1, 4, 4)
    assert joint_head_auc(gan, cohort, "test", 10, seed=3) == (0.5, 6)  # 2 patients x 3 slices
