"""Tests of radiolib.contrastive: the loss by hand, a planted gene-image link, determinism."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from radiolib.contrastive import (
    ContrastiveMap,
    ImageEncoder,
    build_contrastive,
    fit_contrastive,
    image_input,
    info_nce,
)
from radiolib.errors import CohortError
from radiolib.radiogenomics import codes
from tests.train_worker import tiny_profile

S = 16  # image size of the planted cohort
LINKED = 5  # the gene that drives the tumour image


def planted_cohort(p: int = 48, g: int = 12, seed: int = 0, test: int = 6) -> SimpleNamespace:
    """P patients with G standard normal genes; gene LINKED alone sets each tumour's radius and
    density. Three slices per patient (radius jittered, centre moved by up to a pixel); the
    last ``test`` patients are held out."""
    rng = np.random.default_rng(seed)
    genes = rng.standard_normal((p, g)).astype(np.float32)
    d = genes[:, LINKED]
    yy, xx = np.mgrid[:S, :S]
    images, masks, owner = [], [], []
    for i in range(p):
        for _ in range(3):
            r = 3.0 + 0.9 * (d[i] - d.min()) + rng.uniform(-0.3, 0.3)
            cy, cx = S / 2 + rng.uniform(-1, 1, 2)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img = 0.1 + 0.05 * rng.random((S, S)) + m * (0.4 + 0.1 * d[i])
            images.append(np.clip(img, 0, 1))
            masks.append(m.astype(np.uint8))
            owner.append(i)
    return SimpleNamespace(
        path="planted",
        patients=[f"R01-{i + 1:03d}" for i in range(p)],
        split=np.array(["train"] * (p - test) + ["test"] * test),
        genes=genes,
        gene_names=[f"G{i}" for i in range(g)],
        tumour_images=np.stack(images).astype(np.float32),
        tumour_masks=np.stack(masks),
        tumour_patient=np.array(owner),
    )


def profile(**overrides):
    return tiny_profile(**{"contrastive.steps": 300, "contrastive.lr": 3e-3, **overrides})


# ------------------------------------------------------------------ the loss


def test_info_nce_by_hand_on_three_patients():
    genes = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    images = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    t = 0.5
    # cosine similarities: rows gene codes, columns image codes
    r = 1 / math.sqrt(2)
    sim = np.array([[1.0, r, 0.0], [0.0, r, 1.0], [r, 1.0, r]])
    logits = sim / t

    def ce(row: np.ndarray, target: int) -> float:
        return -row[target] + math.log(sum(math.exp(v) for v in row))

    rows = np.mean([ce(logits[i], i) for i in range(3)])
    cols = np.mean([ce(logits[:, j], j) for j in range(3)])
    assert float(info_nce(genes, images, t)) == pytest.approx(0.5 * (rows + cols), rel=1e-6)
    # codes that carry nothing: every patient equally likely, log B
    same = torch.ones(3, 2)
    assert float(info_nce(same, same, 0.1)) == pytest.approx(math.log(3), rel=1e-6)
    # matching codes far apart: the loss vanishes as the temperature falls
    eye = torch.eye(3)
    assert float(info_nce(eye, 2 * eye, 0.01)) < 1e-6


def test_info_nce_rejects_bad_batches():
    with pytest.raises(ValueError, match="must both be"):
        info_nce(torch.ones(3, 2), torch.ones(3, 4), 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(torch.ones(1, 2), torch.ones(1, 2), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(3, 2), torch.ones(3, 2), 0.0)


def test_model_shapes_temperature_and_checks():
    model = ContrastiveMap(12, S, gene_hidden=16, code_dim=8, width=4, layers=2, temperature=0.2)
    codes = model.gene_code(torch.randn(5, 12))
    assert codes.shape == (5, 8)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(5))  # unit vectors
    x = image_input(np.random.default_rng(0).random((5, S, S)), np.zeros((5, S, S)))
    assert x.shape == (5, 2, S, S) and float(x[:, 0].min()) >= -1  # slice on the net's scale
    assert model.image_code(x).shape == (5, 8)
    assert float(model.temperature().detach()) == pytest.approx(0.2)
    with torch.no_grad():
        model.log_scale.fill_(10.0)  # 1 / temperature capped at 100
    assert float(model.temperature().detach()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="genes must have shape"):
        model.gene_code(torch.randn(5, 11))
    with pytest.raises(ValueError, match="image encoder input"):
        model.image_code(torch.randn(5, 1, S, S))
    with pytest.raises(ValueError, match="divisible"):
        ImageEncoder(20, 8, layers=3)
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveMap(12, S, 16, 8, temperature=0.0)
    fixed = build_contrastive(12, S, profile(**{"contrastive.learn_temperature": False}))
    assert not fixed.log_scale.requires_grad


# ------------------------------------------------------------------ learning


def test_planted_gene_image_link_is_found():
    cohort = planted_cohort()
    cfg = profile()
    fit = fit_contrastive(cohort, cfg, seed=0)
    assert fit.losses.shape == (300,) and fit.losses[-20:].mean() < 0.6 * fit.losses[:20].mean()
    assert fit.flops > 0 and fit.cpu_seconds > 0
    # attribution puts the driving gene first
    attribution = codes.gene_attribution(fit.model, cohort.genes, target="variance")
    assert int(np.argmax(attribution)) == LINKED
    # the code's main axis orders the patients by that gene; an untrained map's does not
    d = cohort.genes[:, LINKED]

    def main_axis_rho(model) -> float:
        code = codes.gene_codes(model, cohort.genes)
        pc1 = np.linalg.svd(code - code.mean(0))[0][:, 0]
        return abs(stats.spearmanr(pc1, d)[0])

    assert main_axis_rho(fit.model) > 0.8
    torch.manual_seed(0)
    assert main_axis_rho(build_contrastive(12, S, cfg)) < 0.5


def test_fit_is_deterministic_and_leaves_the_global_rng(one_thread):
    cohort = planted_cohort(p=12, test=3)
    cfg = profile(**{"contrastive.steps": 15})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fit_contrastive(cohort, cfg, seed=4)
    torch.testing.assert_close(torch.get_rng_state(), before)
    b = fit_contrastive(cohort, cfg, seed=4)
    c = fit_contrastive(cohort, cfg, seed=5)
    np.testing.assert_array_equal(a.losses, b.losses)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not np.array_equal(a.losses, c.losses)
    assert list(a.patients) == list(range(9))  # the training patients only


def test_fit_reports_bad_cohorts():
    cohort = planted_cohort(p=12, test=3)
    cfg = profile(**{"contrastive.steps": 2})
    one = SimpleNamespace(**{**vars(cohort), "split": np.array(["train"] + ["test"] * 11)})
    with pytest.raises(CohortError, match="'train' split has 1 patient"):
        fit_contrastive(one, cfg)
    bad = cohort.genes.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="R01-003"):
        fit_contrastive(SimpleNamespace(**{**vars(cohort), "genes": bad}), cfg)
    with pytest.raises(ValueError, match="seed"):
        fit_contrastive(cohort, cfg, seed=-1)


def test_a_saved_fit_is_reused_and_a_missing_or_stale_one_is_named(tmp_path):
    from radiolib.contrastive import FIT_FILE, fit_or_reuse, load_fit
    from radiolib.errors import MissingRunError

    cohort = planted_cohort(p=12, test=3)
    cohort.background_images = cohort.tumour_images[:4]  # what a run's cohort digest reads
    cfg = profile(**{"contrastive.steps": 15})
    with pytest.raises(MissingRunError, match=r"seed 0 is not fitted.*02_training"):
        load_fit(tmp_path, cohort, cfg, 0)
    first = fit_or_reuse(cohort, cfg, tmp_path, 0)
    again = load_fit(tmp_path, cohort, cfg, 0)
    assert not again.model.training and again.cpu_seconds == first.cpu_seconds
    genes = torch.as_tensor(cohort.genes[:4], dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(first.model.eval().gene_code(genes), again.model.gene_code(genes))
    before = (tmp_path / FIT_FILE).stat().st_mtime_ns
    fit_or_reuse(cohort, cfg, tmp_path, 0)
    assert (tmp_path / FIT_FILE).stat().st_mtime_ns == before  # reused, not fitted again
    with pytest.raises(MissingRunError, match="other settings or data"):
        load_fit(tmp_path, cohort, cfg, 1)
