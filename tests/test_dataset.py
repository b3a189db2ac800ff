"""PairedSlices and evaluation pairs on a small hand-made curated cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from radiolib.data.curated import CuratedCohort
from radiolib.data.dataset import PairedSlices, evaluation_pairs, from_net, to_net
from radiolib.errors import CohortError

S, G = 8, 6
SPLIT = np.array(["train", "train", "test", "train", "test"])
SLICES_PER_PATIENT = [3, 2, 4, 1, 2]


def make_cohort(split=SPLIT) -> CuratedCohort:
    """Patient p's gene vector is constant p, its masks mark pixel (p, j) of slice j, and its
    background slices are constant (p + 1) / 10: every item's sources can be read back."""
    rng = np.random.default_rng(0)
    P = len(split)
    t_img, t_mask, t_pat, b_img, b_pat = [], [], [], [], []
    for p in range(P):
        for j in range(SLICES_PER_PATIENT[p]):
            t_img.append(rng.random((S, S)))
            m = np.zeros((S, S), np.uint8)
            m[p, j] = 1
            t_mask.append(m)
            t_pat.append(p)
        for _ in range(3):
            b_img.append(np.full((S, S), (p + 1) / 10))
            b_pat.append(p)
    return CuratedCohort(
        path=Path("memory"),
        patients=[f"R01-{p:03d}" for p in range(P)],
        split=np.asarray(split),
        genes=np.repeat(np.arange(P, dtype=np.float32)[:, None], G, axis=1),
        gene_names=[f"G{g}" for g in range(G)],
        tumour_images=np.array(t_img, np.float32),
        tumour_masks=np.array(t_mask, np.uint8),
        tumour_patient=np.array(t_pat),
        background_images=np.array(b_img, np.float32),
        background_patient=np.array(b_pat),
        slices=pd.DataFrame(),
        manifest={},
    )


def mask_patient(mask: torch.Tensor) -> int:
    return int(torch.nonzero(mask[0])[0, 0])


def test_items_shapes_dtypes_ranges():
    c = make_cohort()
    ds = PairedSlices(c, "train", noise_dim=5, seed=3)
    assert len(ds) == 3 + 2 + 1
    for i in range(len(ds)):
        item = ds[i]
        for key in ("tumour", "mask", "background", "mismatch_mask"):
            assert item[key].shape == (1, S, S) and item[key].dtype == torch.float32, key
        for key in ("genes", "mismatch_genes"):
            assert item[key].shape == (G,) and item[key].dtype == torch.float32
        assert item["noise"].shape == (5,) and item["noise"].dtype == torch.float32
        assert item["patient"].shape == () and item["patient"].dtype == torch.int64
        assert -1 <= item["tumour"].min() and item["tumour"].max() <= 1
        assert -1 <= item["background"].min() and item["background"].max() <= 1
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
        p = int(item["patient"])
        assert c.split[p] == "train"
        assert mask_patient(item["mask"]) == p and float(item["genes"][0]) == p
        # the tumour is the patient's own slice, mapped to [-1, 1]
        rows = np.flatnonzero(c.tumour_patient == p)
        own = [torch.from_numpy(c.tumour_images[r]) for r in rows]
        assert any(torch.allclose(from_net(item["tumour"])[0], x, atol=1e-6) for x in own)
        bg_patient = round(float(from_net(item["background"]).mean()) * 10) - 1
        assert c.split[bg_patient] == "train"


def test_mismatches_never_the_same_patient_and_cover_others():
    c = make_cohort()
    ds = PairedSlices(c, "train", seed=0)
    seen_mask, seen_genes = set(), set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            p = int(item["patient"])
            pm = mask_patient(item["mismatch_mask"])
            pg = int(item["mismatch_genes"][0])
            assert pm != p and pg != p
            assert c.split[pm] == "train" and c.split[pg] == "train"
            seen_mask.add((p, pm))
            seen_genes.add((p, pg))
    train = [0, 1, 3]
    every_pair = {(a, b) for a in train for b in train if a != b}
    assert seen_mask == every_pair and seen_genes == every_pair


def test_items_are_pure_functions_of_seed_epoch_index():
    c = make_cohort()
    a, b = PairedSlices(c, "train", seed=1), PairedSlices(c, "train", seed=1)
    b.set_epoch(4)
    _ = [b[i] for i in range(len(b))]  # asking in another order changes nothing
    b.set_epoch(0)
    for i in reversed(range(len(a))):
        x, y = a[i], b[i]
        for key in x:
            assert torch.equal(x[key], y[key]), key
    a.set_epoch(1)
    differs = [not torch.equal(a[i]["noise"], b[i]["noise"]) for i in range(len(a))]
    assert all(differs)
    other_seed = PairedSlices(c, "train", seed=2)
    assert not torch.equal(other_seed[0]["noise"], b[0]["noise"])
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=4)))
    assert batch["tumour"].shape == (4, 1, S, S) and batch["patient"].shape == (4,)


def test_split_needs_two_patients():
    c = make_cohort(np.array(["train", "train", "test", "train", "train"]))
    with pytest.raises(CohortError, match="'test' split has 1 patient"):
        PairedSlices(c, "test")
    with pytest.raises(ValueError, match="split must be"):
        PairedSlices(c, "validation")


def test_to_net_from_net():
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(to_net(x), torch.tensor([-1.0, -0.5, 1.0]))
    assert torch.allclose(from_net(to_net(x)), x)
    np.testing.assert_allclose(from_net(np.array([-1.0, 0.0, 1.0])), [0, 0.5, 1])


def test_evaluation_pairs_held_out_and_deterministic():
    c = make_cohort()
    pairs = evaluation_pairs(c, 16, seed=5, noise_dim=3)
    again = evaluation_pairs(c, 16, seed=5, noise_dim=3)
    for key in pairs:
        np.testing.assert_array_equal(pairs[key], again[key])
    assert set(pairs["donor_patient"]) <= {2, 4}
    assert set(pairs["background_patient"]) <= {2, 4}
    # the background comes from another held-out patient than the gene donor
    assert (pairs["background_patient"] != pairs["donor_patient"]).all()
    assert pairs["genes"].shape == (16, G) and pairs["background"].shape == (16, S, S)
    assert pairs["noise"].shape == (16, 3)
    np.testing.assert_array_equal(pairs["genes"][:, 0], pairs["donor_patient"])
    np.testing.assert_array_equal(c.tumour_patient[pairs["donor_slice"]], pairs["donor_patient"])
    np.testing.assert_array_equal(pairs["real_tumour"], c.tumour_images[pairs["donor_slice"]])
    np.testing.assert_array_equal(pairs["real_mask"], c.tumour_masks[pairs["donor_slice"]])
    np.testing.assert_array_equal(
        pairs["background"], c.background_images[pairs["background_index"]]
    )
    assert not np.array_equal(evaluation_pairs(c, 16, seed=6)["donor_slice"], pairs["donor_slice"])
