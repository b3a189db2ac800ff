"""Torch views of a curated cohort: training items and held-out evaluation pairs.

Images are stored in [0, 1]; networks see [-1, 1] (:func:`to_net`, :func:`from_net`).
Every random choice of an item is a pure function of ``(seed, epoch, index)``, so any process
or data-loader worker asking for item ``i`` of epoch ``e`` gets the same tensors.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from radiolib.data.curated import CuratedCohort
from radiolib.errors import CohortError

Images = TypeVar("Images", torch.Tensor, np.ndarray)


def to_net(x: Images) -> Images:
    """[0, 1] -> [-1, 1] (``2x - 1``); tensors or arrays, any shape."""
    return 2 * x - 1


def from_net(y: Images) -> Images:
    """[-1, 1] -> [0, 1] (``(y + 1) / 2``); tensors or arrays, any shape."""
    return (y + 1) / 2


def _check_seed(name: str, value: int) -> int:
    if int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (got {value!r})")
    return int(value)


def patients_with_slices(cohort: CuratedCohort, split: str) -> np.ndarray:
    """Indices ``(k,)`` of the patients of ``split`` ('train' or 'test') with tumour slices."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' (got {split!r})")
    with_slices = np.unique(cohort.tumour_patient)
    return with_slices[cohort.split[with_slices] == split]


def pair_patients(cohort: CuratedCohort, split: str) -> np.ndarray:
    """:func:`patients_with_slices` of ``split``; CohortError when fewer than two (a
    mismatched pair needs another patient)."""
    patients = patients_with_slices(cohort, split)
    if len(patients) < 2:
        raise CohortError(
            f"{cohort.path}: the {split!r} split has {len(patients)} patient(s) with tumour "
            "slices; mismatched pairs need >= 2"
        )
    return patients


class PairedSlices(torch.utils.data.Dataset):
    """Tumour slices of one split with their conditions and random partners.

    Item ``i`` (the ``i``-th tumour slice of the split) is a dict of tensors:

    - ``tumour`` ``(1, S, S)`` float32 in [-1, 1]: the real slice x
    - ``mask`` ``(1, S, S)`` float32 {0, 1}: its tumour mask m
    - ``genes`` ``(G,)`` float32: its patient's gene vector g
    - ``background`` ``(1, S, S)`` float32 in [-1, 1]: a background slice of any patient of
      the split
    - ``mismatch_mask`` ``(1, S, S)`` float32: a tumour mask of another patient (m-bar)
    - ``mismatch_genes`` ``(G,)`` float32: the gene vector of another patient (g-bar)
    - ``noise`` ``(noise_dim,)`` float32 N(0, 1)
    - ``patient`` ``()`` int64: the patient index into ``cohort.patients``

    The two mismatched patients are drawn independently, each uniformly among the split's other
    patients (never the item's own). Choices come from
    ``np.random.default_rng([seed, epoch, i])``; :meth:`set_epoch` changes them.
    """

    def __init__(
        self, cohort: CuratedCohort, split: str = "train", noise_dim: int = 16, seed: int = 0
    ) -> None:
        self.split = split
        self.patients = pair_patients(cohort, split)
        self.noise_dim = _check_seed("noise_dim", noise_dim)
        self.seed = _check_seed("seed", seed)
        self.epoch = 0
        in_split = np.isin(cohort.tumour_patient, self.patients)
        self.index = np.flatnonzero(in_split)  # (n,) rows of the tumour arrays
        self.backgrounds = np.flatnonzero(np.isin(cohort.background_patient, self.patients))
        if len(self.backgrounds) == 0:
            raise CohortError(f"{cohort.path}: the {split!r} split has no background slice")
        self.images = cohort.tumour_images
        self.masks = cohort.tumour_masks
        self.tumour_patient = cohort.tumour_patient
        self.background_images = cohort.background_images
        self.genes = np.ascontiguousarray(cohort.genes, dtype=np.float32)
        # tumour rows of each patient, to draw another patient's mask
        self.rows_of = {int(p): np.flatnonzero(cohort.tumour_patient == p) for p in self.patients}

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Select the random partners of epoch ``epoch`` (>= 0)."""
        self.epoch = _check_seed("epoch", epoch)

    def _other(self, rng: np.random.Generator, patient: int) -> int:
        others = self.patients[self.patients != patient]
        return int(others[rng.integers(len(others))])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} slices")
        i = int(i) % len(self)
        row = int(self.index[i])
        patient = int(self.tumour_patient[row])
        rng = np.random.default_rng([self.seed, self.epoch, i])
        bg = int(self.backgrounds[rng.integers(len(self.backgrounds))])
        p_mask = self._other(rng, patient)
        rows = self.rows_of[p_mask]
        m_row = int(rows[rng.integers(len(rows))])
        p_genes = self._other(rng, patient)
        noise = rng.standard_normal(self.noise_dim).astype(np.float32)

        def img(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, np.float32, copy=True)[None])

        return {
            "tumour": to_net(img(self.images[row])),
            "mask": img(self.masks[row]),
            "genes": torch.from_numpy(self.genes[patient].copy()),
            "background": to_net(img(self.background_images[bg])),
            "mismatch_mask": img(self.masks[m_row]),
            "mismatch_genes": torch.from_numpy(self.genes[p_genes].copy()),
            "noise": torch.from_numpy(noise),
            "patient": torch.tensor(patient, dtype=torch.int64),
        }


def evaluation_pairs(
    cohort: CuratedCohort, n: int, seed: int, split: str = "test", noise_dim: int = 0
) -> dict[str, np.ndarray]:
    """``n`` held-out (gene donor, background) pairs of ``split``, deterministic for ``seed``.

    Each pair draws a donor patient uniformly among the split's patients with tumour slices,
    one of the donor's tumour slices uniformly, and a background slice uniformly among the
    split's backgrounds of other patients (the donor's own only when no other patient has one).
    Returns numpy arrays (images in [0, 1]):

    - ``genes`` ``(n, G)`` float32: the donor's gene vector
    - ``background`` ``(n, S, S)`` float32, ``background_index`` ``(n,)`` row in
      ``cohort.background_images``, ``background_patient`` ``(n,)``
    - ``donor_patient`` ``(n,)``, ``donor_slice`` ``(n,)`` row in ``cohort.tumour_images``
    - ``real_tumour`` ``(n, S, S)`` float32 and ``real_mask`` ``(n, S, S)`` uint8: the donor's
      real slice and mask
    - ``noise`` ``(n, noise_dim)`` float32 N(0, 1) (only when ``noise_dim > 0``)
    """
    n = _check_seed("n", n)
    donors = patients_with_slices(cohort, split)
    if len(donors) == 0:
        raise CohortError(f"{cohort.path}: the {split!r} split has no patient with tumour slices")
    backgrounds = np.flatnonzero(cohort.split[cohort.background_patient] == split)
    if len(backgrounds) == 0:
        raise CohortError(f"{cohort.path}: the {split!r} split has no background slice")
    rng = np.random.default_rng(_check_seed("seed", seed))
    donor = donors[rng.integers(len(donors), size=n)]
    donor_slice = np.empty(n, np.int64)
    for k, p in enumerate(donor):
        rows = np.flatnonzero(cohort.tumour_patient == p)
        donor_slice[k] = rows[rng.integers(len(rows))]
    bg = np.empty(n, np.int64)
    for k, p in enumerate(donor):
        other = backgrounds[cohort.background_patient[backgrounds] != p]
        pool = other if len(other) else backgrounds
        bg[k] = pool[rng.integers(len(pool))]
    out = {
        "genes": cohort.genes[donor].astype(np.float32),
        "background": cohort.background_images[bg].astype(np.float32),
        "background_index": bg.astype(np.int64),
        "background_patient": cohort.background_patient[bg].astype(np.int64),
        "donor_patient": donor.astype(np.int64),
        "donor_slice": donor_slice,
        "real_tumour": cohort.tumour_images[donor_slice].astype(np.float32),
        "real_mask": cohort.tumour_masks[donor_slice].astype(np.uint8),
    }
    if noise_dim > 0:
        out["noise"] = rng.standard_normal((n, noise_dim)).astype(np.float32)
    return out
