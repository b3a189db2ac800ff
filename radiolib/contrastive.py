"""A contrastive image-gene map: the radiogenomic map learnt without synthesis.

The paper learns the gene code phi(g) by making a generator draw tumours from it. A direct
alternative (CLIP, Radford et al. 2021) needs no generator and no discriminator: a gene encoder
and an image encoder are trained so that each training patient's gene code lies closer to the
code of one of its own tumour slices than to any other patient's (a symmetric InfoNCE loss,
:func:`info_nce`).

- Gene encoder: :class:`radiolib.models.blocks.GeneMapping`, the GANs' mapping network (two
  fully connected layers, ``model.gene_hidden`` then ``model.code_dim``), initialised as there.
- Image encoder (:class:`ImageEncoder`): a tumour slice and its mask as two channels, a few
  stride-2 convolutions, global average pooling, a linear layer to ``model.code_dim``.
- Codes are compared by cosine similarity; the patient's representation is the gene encoder's
  output scaled to unit length (:meth:`ContrastiveMap.gene_code`), the only part the loss sees.

Training (:func:`fit_contrastive`) uses every training patient in every step (patients are few,
and InfoNCE wants many negatives); each step draws one of each patient's tumour slices and one
of the eight rotations and flips of it, so the image encoder cannot tell patients apart by a
particular slice. Everything random comes from ``seed``: the same seed gives the same model on
the same machine and thread count.

The model exposes ``gene_code(genes)`` like a GAN, so :mod:`radiolib.radiogenomics` scores it
(clusters, probes, gene attribution) with the same code as the GANs' phi(g).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radiolib.bench import count_flops
from radiolib.config import Profile
from radiolib.data.dataset import pair_patients, to_net
from radiolib.errors import MissingRunError
from radiolib.io import atomic_write
from radiolib.models.blocks import LRELU_SLOPE, GeneMapping, check_shape, conv, init_weights

if TYPE_CHECKING:
    from radiolib.data.curated import CuratedCohort

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on 1 / temperature, against a runaway learnt temperature


def info_nce(gene_codes: Tensor, image_codes: Tensor, temperature: Tensor | float) -> Tensor:
    """Symmetric InfoNCE of a batch of positive pairs: row i of both (B, D) is one patient.

    With unit vectors a_i = gene_codes_i / |gene_codes_i| and b_j likewise,
    logits_ij = a_i . b_j / temperature and the loss is the mean of the cross-entropies of the
    rows (each gene code picks its image among the batch) and of the columns (each image picks
    its genes), both with the diagonal as the target. log B for codes that carry no
    information; 0 when every patient's pair is far more similar than any other.
    """
    if gene_codes.dim() != 2 or gene_codes.shape != image_codes.shape:
        raise ValueError(
            f"gene codes {tuple(gene_codes.shape)} and image codes {tuple(image_codes.shape)} "
            "must both be (B, D)"
        )
    if len(gene_codes) < 2:
        raise ValueError(f"InfoNCE needs at least 2 pairs in a batch (got {len(gene_codes)})")
    t = torch.as_tensor(temperature, dtype=gene_codes.dtype)
    if not bool(t > 0):
        raise ValueError(f"temperature must be > 0 (got {float(t)})")
    a = F.normalize(gene_codes, dim=1)
    b = F.normalize(image_codes, dim=1)
    logits = a @ b.T / t
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ImageEncoder(nn.Module):
    """(B, 2, S, S) tumour slice in [-1, 1] and mask {0, 1} -> (B, code_dim).

    ``layers`` stride-2 3 x 3 convolutions with leaky ReLU, channels ``width``, 2 ``width``,
    4 ``width``, 4 ``width`` ...; global average pooling (so the tumour's area and mean
    density stay readable whatever the position); one linear layer.
    """

    def __init__(self, image_size: int, code_dim: int, width: int = 16, layers: int = 3):
        super().__init__()
        if min(width, layers, code_dim) < 1:
            raise ValueError(
                f"image encoder sizes must be >= 1, got width={width}, layers={layers}, "
                f"code_dim={code_dim}"
            )
        if image_size % 2**layers:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2 ** layers ({2**layers})"
            )
        self.image_size = image_size
        channels = [2] + [width * 2 ** min(k, 2) for k in range(layers)]
        blocks: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            blocks += [conv(cin, cout, stride=2, bias=True), nn.LeakyReLU(LRELU_SLOPE)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(channels[-1], code_dim)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, (None, 2, self.image_size, self.image_size), "image encoder input")
        return self.head(self.body(x).mean(dim=(2, 3)))


class ContrastiveMap(nn.Module):
    """Gene encoder, image encoder and the InfoNCE temperature.

    ``gene_code`` (B, G) -> (B, code_dim) unit vectors: the map's representation of a patient,
    with the interface of a GAN's gene code. ``image_code`` (B, 2, S, S) -> (B, code_dim).
    The temperature is kept as log(1 / temperature) (CLIP's logit scale), learnt when
    ``learn_temperature``, and capped so that 1 / temperature <= 100.
    """

    name = "contrastive"

    def __init__(
        self,
        n_genes: int,
        image_size: int,
        gene_hidden: int,
        code_dim: int,
        width: int = 16,
        layers: int = 3,
        temperature: float = 0.1,
        learn_temperature: bool = True,
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (got {temperature})")
        self.n_genes = n_genes
        self.genes = GeneMapping(n_genes, gene_hidden, code_dim)
        init_weights(self.genes)  # as in the GANs: codes of order one whatever the gene count
        self.image = ImageEncoder(image_size, code_dim, width, layers)
        self.log_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature
        )

    def temperature(self) -> Tensor:
        return torch.exp(-self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)))

    def gene_code(self, genes: Tensor) -> Tensor:
        return F.normalize(self.genes(genes), dim=1)

    def image_code(self, x: Tensor) -> Tensor:
        return self.image(x)

    def loss(self, genes: Tensor, x: Tensor) -> Tensor:
        """InfoNCE of B patients: genes (B, G), one slice and mask each (B, 2, S, S)."""
        return info_nce(self.genes(genes), self.image_code(x), self.temperature())


def build_contrastive(n_genes: int, image_size: int, cfg: Profile) -> ContrastiveMap:
    """A :class:`ContrastiveMap` sized by the profile (``model`` and ``contrastive``)."""
    k = cfg.contrastive
    return ContrastiveMap(
        n_genes,
        image_size,
        cfg.model.gene_hidden,
        cfg.model.code_dim,
        k.image_width,
        k.image_layers,
        k.temperature,
        k.learn_temperature,
    )


def image_input(images: np.ndarray, masks: np.ndarray) -> Tensor:
    """Slices (B, S, S) in [0, 1] and masks (B, S, S) -> the encoder's (B, 2, S, S) float32."""
    images, masks = np.asarray(images, np.float32), np.asarray(masks, np.float32)
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"expected images and masks (B, S, S), got {images.shape}, {masks.shape}")
    return torch.from_numpy(np.stack([to_net(images), masks], axis=1))


def _dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 rotations and flips of (C, S, S)."""
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


@dataclass
class ContrastiveFit:
    """A trained :class:`ContrastiveMap` and what learning it cost.

    ``losses`` (steps,) the InfoNCE of every step; ``patients`` the training patients' indices
    into ``cohort.patients``; ``cpu_seconds`` the process's CPU time from building the model to
    the last step (all threads), ``wall_seconds`` the same in wall time; ``flops`` counted by
    ``torch.utils.flop_counter`` over one step (forward and backward matrix products and
    convolutions) times the number of steps.
    """

    model: ContrastiveMap
    losses: np.ndarray
    patients: np.ndarray
    seed: int
    cpu_seconds: float
    wall_seconds: float
    flops: int

    @property
    def temperature(self) -> float:
        return float(self.model.temperature().detach())


def fit_contrastive(cohort: object, cfg: Profile, seed: int = 0) -> ContrastiveFit:
    """Train the contrastive map on the training split of ``cohort`` (a curated cohort, or any
    object with ``patients``, ``split``, ``genes``, ``gene_names``, ``tumour_images``,
    ``tumour_masks``, ``tumour_patient``) for ``cfg.contrastive.steps`` full-batch AdamW steps.

    The global torch random state is left as it was.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    k = cfg.contrastive
    cpu0, wall0 = time.process_time(), time.perf_counter()
    patients = pair_patients(cohort, "train")
    genes_np = np.asarray(cohort.genes, np.float32)
    if genes_np.ndim != 2 or len(genes_np) != len(cohort.patients):
        raise ValueError(
            f"cohort genes {genes_np.shape} must be (P, G) with P = {len(cohort.patients)}"
        )
    if not np.all(np.isfinite(genes_np[patients])):
        bad = patients[~np.all(np.isfinite(genes_np[patients]), axis=1)][0]
        raise ValueError(f"genes of patient {cohort.patients[bad]} hold NaN or inf values")
    images, masks = np.asarray(cohort.tumour_images), np.asarray(cohort.tumour_masks)
    owner = np.asarray(cohort.tumour_patient)
    rows_of = [np.flatnonzero(owner == p) for p in patients]
    genes = torch.from_numpy(np.ascontiguousarray(genes_np[patients]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_contrastive(genes_np.shape[1], int(images.shape[-1]), cfg)
    decay = [p for n, p in model.named_parameters() if n != "log_scale"]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": k.weight_decay},
            {"params": [model.log_scale], "weight_decay": 0.0},
        ],
        lr=k.lr,
    )
    rng = np.random.default_rng([int(seed), 1])

    def batch() -> Tensor:
        pick = np.array([rows[rng.integers(len(rows))] for rows in rows_of])
        turn = rng.integers(4, size=len(pick))
        flip = rng.random(len(pick)) < 0.5
        x = image_input(images[pick], masks[pick]).numpy()
        x = np.stack([_dihedral(xi, t, f) for xi, t, f in zip(x, turn, flip, strict=True)])
        return torch.from_numpy(np.ascontiguousarray(x))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model.loss(genes, batch())
        loss.backward()
        opt.step()
        return float(loss.detach())

    model.train()
    losses = np.empty(k.steps)
    step_flops = count_flops(lambda: losses.__setitem__(0, step()))
    for i in range(1, k.steps):
        losses[i] = step()
    model.eval()
    return ContrastiveFit(
        model=model,
        losses=losses,
        patients=patients,
        seed=int(seed),
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=time.perf_counter() - wall0,
        flops=step_flops * k.steps,
    )


# --------------------------------------------------------------------------- saved fits

FIT_FILE = "contrastive.pt"


def _fit_key(cohort: CuratedCohort, cfg: Profile, seed: int) -> str:
    """What decides a fit: the cohort's content, the contrastive settings, the gene encoder's
    shape and the seed."""
    from radiolib.runs import cohort_identity

    blob = {
        "cohort": cohort_identity(cohort)["sha256"],
        "contrastive": dataclasses.asdict(cfg.contrastive),
        "encoder": [cfg.model.gene_hidden, cfg.model.code_dim],
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def save_fit(fit: ContrastiveFit, out: Path, cohort: CuratedCohort, cfg: Profile) -> Path:
    """Write ``fit`` to ``out/contrastive.pt`` (atomically), keyed by what decided it."""
    state = {
        "key": _fit_key(cohort, cfg, fit.seed),
        "model": fit.model.state_dict(),
        "losses": torch.from_numpy(np.asarray(fit.losses, np.float64)),
        "patients": torch.from_numpy(np.asarray(fit.patients, np.int64)),
        "seed": fit.seed,
        "cpu_seconds": fit.cpu_seconds,
        "wall_seconds": fit.wall_seconds,
        "flops": int(fit.flops),
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / FIT_FILE, "wb") as fh:
        torch.save(state, fh)
    return out / FIT_FILE


def load_fit(
    out: Path,
    cohort: CuratedCohort,
    cfg: Profile,
    seed: int,
    trained_by: str = "notebooks/02_training.ipynb",
) -> ContrastiveFit:
    """The fit saved in ``out`` for this cohort, settings and seed, in eval mode. Never fits:
    raises :class:`MissingRunError` naming ``trained_by`` when it is missing or was made with
    other data or settings."""
    path = out / FIT_FILE
    state = torch.load(path, weights_only=True) if path.is_file() else None
    if state is None or state.get("key") != _fit_key(cohort, cfg, seed):
        why = "not fitted" if state is None else "fitted with other settings or data"
        raise MissingRunError(
            f"the contrastive map of seed {seed} is {why} ({path}); run {trained_by} first"
        )
    n_genes, image_size = int(np.shape(cohort.genes)[1]), int(np.shape(cohort.tumour_images)[-1])
    model = build_contrastive(n_genes, image_size, cfg)
    model.load_state_dict(state["model"])
    return ContrastiveFit(
        model=model.eval(),
        losses=state["losses"].numpy(),
        patients=state["patients"].numpy(),
        seed=int(state["seed"]),
        cpu_seconds=float(state["cpu_seconds"]),
        wall_seconds=float(state["wall_seconds"]),
        flops=int(state["flops"]),
    )


def fit_or_reuse(cohort: CuratedCohort, cfg: Profile, out: Path, seed: int) -> ContrastiveFit:
    """The fit saved in ``out`` (:func:`load_fit`), else a new one (:func:`fit_contrastive`),
    saved there; a reused fit keeps the costs of its first fitting."""
    try:
        return load_fit(out, cohort, cfg, seed)
    except MissingRunError:
        fit = fit_contrastive(cohort, cfg, seed)
        save_fit(fit, out, cohort, cfg)
        return fit
