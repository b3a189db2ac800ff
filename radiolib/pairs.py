"""The held-out evaluation pairs, synthesised and measured one by one.

A pair is a held-out donor's genes with a held-out background slice
(:func:`radiolib.data.dataset.evaluation_pairs`). Here a GAN synthesises every pair
(:func:`synthesize_pairs`), two anchors bound what any GAN can score (:func:`anchor_syntheses`),
the region every method should keep is found (:func:`background_keep_region`), and each pair gets
its measures (:func:`evaluate_pairs`, :func:`mechanism_per_pair`): one row per pair, which
:func:`radiolib.evaluation.evaluate_synthesis` pools into tables. :func:`joint_head_auc`
measures the discriminator's joint head itself.

Images are numpy arrays in [0, 1]; networks work in [-1, 1] and :func:`synthesize_pairs`
converts at the boundary (:func:`radiolib.data.dataset.to_net`, ``from_net``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from radiolib.data.dataset import from_net, to_net
from radiolib.metrics import SSIM_WINDOW, disk, equivalent_radius, measure_traits, region_metrics
from radiolib.models import eval_mode

if TYPE_CHECKING:
    from radiolib.config import Profile
    from radiolib.data.curated import CuratedCohort
    from radiolib.models import GAN, Synthesis

_PAIR_KEYS = ("background", "genes", "real_tumour", "real_mask", "donor_patient")
ANCHORS = ("oracle", "unchanged")  # Table 1's bounds: no GAN can beat or should lose to them


class Syntheses(TypedDict):
    """One method's syntheses of n pairs (:func:`synthesize_pairs`, :func:`anchor_syntheses`)."""

    image: np.ndarray  # (n, S, S) float32 in [0, 1]
    mask: np.ndarray  # (n, S, S) float32 in [0, 1], the predicted tumour mask
    weight: np.ndarray  # (n, S, S) the finest fusion level's weight map; NaN without one
    weight_maps: list[np.ndarray]  # every level's map, coarse to fine, each (n, S, S)
    weight_levels: list[int]  # the maps' native sizes
    hole: np.ndarray  # (n, S, S) bool, the centred hole handed to the model
    hole_radius: np.ndarray  # (n,) pixels
    method: str


def _check_pairs(pairs: Mapping[str, np.ndarray]) -> int:
    missing = [k for k in _PAIR_KEYS if k not in pairs]
    if missing:
        raise ValueError(f"evaluation pairs lack {missing}; expected keys {list(_PAIR_KEYS)}")
    n = len(pairs["background"])
    for k in _PAIR_KEYS:
        if len(pairs[k]) != n:
            raise ValueError(f"pairs[{k!r}] has {len(pairs[k])} rows, background has {n}")
    if np.asarray(pairs["background"]).ndim != 3:
        raise ValueError(f"pairs['background'] must be (n, S, S), got {pairs['background'].shape}")
    return n


def inpaint_holes(real_masks: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred disks to inpaint: radius = ``margin`` x each donor mask's equivalent radius.

    ``real_masks`` (n, S, S) -> (holes (n, S, S) bool, radii (n,) pixels).
    """
    masks = np.asarray(real_masks)
    radii = np.array([margin * equivalent_radius(m) for m in masks])
    empty = np.flatnonzero(radii == 0)
    if len(empty):
        raise ValueError(f"donor masks of pairs {empty[:5].tolist()} are empty; cannot size holes")
    holes = np.stack([disk(m.shape, None, r) for m, r in zip(masks, radii, strict=True)])
    return holes, radii


def _weight_maps(out: Synthesis, size: int) -> list[np.ndarray]:
    """Every fusion level's weight map of a Synthesis, coarse to fine, each (B, size, size):
    a coarse map's cell covers the pixels it steers (nearest-neighbour); [] if none."""
    maps = []
    for w in getattr(out, "weight_maps", None) or []:
        w = w.float()
        if w.shape[-1] != size:
            w = torch.nn.functional.interpolate(w, size=(size, size), mode="nearest")
        maps.append(w[:, 0].cpu().numpy())
    return maps


@torch.no_grad()
def synthesize_pairs(
    gan: GAN,
    pairs: Mapping[str, np.ndarray],
    batch_size: int = 64,
    device: str = "cpu",
    inpaint_margin: float = 1.2,
) -> Syntheses:
    """Run ``gan.synthesize`` on every evaluation pair, noise fixed at zero.

    Every model gets a centred hole of ``inpaint_margin`` x the donor tumour's equivalent radius
    (only the inpainting model reads it). Returns ``image`` (n, S, S) in [0, 1], ``mask``
    (n, S, S) in [0, 1], ``weight`` (n, S, S): the finest level's fusion weight map (1 = object,
    0 = background; NaN for a model without one), ``weight_maps``: every level's map, coarse to
    fine, each resized to (n, S, S) ([] without), ``weight_levels``: their native sizes,
    ``hole`` (n, S, S) bool, ``hole_radius`` (n,)
    and ``method`` (the GAN's name). The model is switched to eval mode for the call and then
    restored.
    """
    n = _check_pairs(pairs)
    holes, radii = inpaint_holes(pairs["real_mask"], inpaint_margin)
    images, masks, levels = [], [], []
    with eval_mode(gan):
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            bg = to_net(torch.as_tensor(np.asarray(pairs["background"][sl], np.float32)))
            out = gan.synthesize(
                bg[:, None].to(device),
                torch.as_tensor(np.asarray(pairs["genes"][sl], np.float32)).to(device),
                noise=None,
                hole=torch.as_tensor(holes[sl, None].astype(np.float32)).to(device),
            )
            images.append(from_net(out.image[:, 0].float().cpu().numpy()).clip(0, 1))
            masks.append(out.mask[:, 0].float().cpu().numpy())
            levels.append(_weight_maps(out, bg.shape[-1]))
    image = np.concatenate(images).astype(np.float32)
    weight_maps = [np.concatenate(level).astype(np.float32) for level in zip(*levels, strict=True)]
    sizes = [int(m.shape[-1]) for m in (getattr(out, "weight_maps", None) or [])]
    return {
        "image": image,
        "mask": np.concatenate(masks).astype(np.float32),
        "weight": weight_maps[-1] if weight_maps else np.full(image.shape, np.nan, np.float32),
        "weight_maps": weight_maps,
        "weight_levels": sizes,
        "hole": holes,
        "hole_radius": radii,
        "method": str(gan.name),
    }


def _changed_region(synth: Syntheses, method: str, dilation_px: int) -> np.ndarray:
    """(n, S, S) bool: the synthetic tumour (and the hole, for inpainting), dilated.

    The square is ``dilation_px`` plus SSIM's window less one, so that no 7 x 7 SSIM window
    centred on a kept pixel reaches into a changed one.
    """
    region = np.asarray(synth["mask"]) > 0.5
    if method == "inpainting":
        region = region | np.asarray(synth["hole"], bool)
    size = max(int(dilation_px), 1) + SSIM_WINDOW - 1
    st = np.ones((1, size, size), bool)  # per slice, no mixing across pairs
    return ndimage.binary_dilation(region, structure=st)


def background_keep_region(synths: Mapping[str, Syntheses], dilation_px: int = 5) -> np.ndarray:
    """The common region (n, S, S) bool where every method should have kept the background.

    ``synths`` maps method name -> :func:`synthesize_pairs` output on the same pairs. A pixel
    counts if it lies outside every method's tumour mask (> 0.5) and outside the inpainting
    hole, each dilated by a ``dilation_px`` square (the square the generator's background L1
    erodes with, ``model.erosion_px``: where the loss asks for the background unchanged) grown
    by SSIM's window, so that all three metrics see only pixels that every method should keep.
    """
    if not synths:
        raise ValueError("background_keep_region needs at least one method's syntheses")
    changed = None
    for method, synth in synths.items():
        c = _changed_region(synth, method, dilation_px)
        changed = c if changed is None else changed | c
    return ~changed


def anchor_syntheses(pairs: Mapping[str, np.ndarray]) -> dict[str, Syntheses]:
    """The two references that bound Table 1, in :func:`synthesize_pairs`' layout.

    * ``oracle``: the donor's real tumour pasted into the untouched background (its real mask
      copied, everything else kept): what a perfect object/background separation with the
      donor's own nodule would score against the background;
    * ``unchanged``: the background itself, no tumour (empty mask): the score of painting
      nothing, which Table 1's protocol rewards most.
    """
    n = _check_pairs(pairs)
    bg = np.asarray(pairs["background"], np.float32)
    real = np.asarray(pairs["real_mask"]) > 0
    empty = np.zeros((n, *bg.shape[1:]), np.float32)
    common = {
        "weight": np.full(bg.shape, np.nan, np.float32),
        "weight_maps": [],
        "weight_levels": [],
        "hole": np.zeros(bg.shape, bool),
        "hole_radius": np.zeros(n),
    }
    return {
        "oracle": {
            **common,
            "image": np.where(real, np.asarray(pairs["real_tumour"], np.float32), bg),
            "mask": real.astype(np.float32),
            "method": "oracle",
        },
        "unchanged": {**common, "image": bg.copy(), "mask": empty, "method": "unchanged"},
    }


def mechanism_per_pair(synth: Syntheses, dilation_px: int) -> pd.DataFrame:
    """Per pair, what the fusion mechanism did (Fig. 2 in numbers).

    Columns: ``mask_px`` (predicted mask > 0.5, pixels), ``mask_empty`` (0/1), and for every
    fusion level s of ``synth["weight_levels"]``: ``w<s>_inside``, the mean weight map inside
    the predicted mask (NaN when it is empty), and ``w<s>_outside``, the mean outside the
    predicted mask dilated by a ``dilation_px`` square (where the background loss asks for the
    background). Coarse maps are compared on the full-size grid (each cell covers its pixels).
    """
    mask = np.asarray(synth["mask"]) > 0.5
    area = mask.sum((1, 2))
    out = {"mask_px": area.astype(float), "mask_empty": (area == 0).astype(float)}
    size = max(int(dilation_px), 1)
    far = ~ndimage.binary_dilation(mask, structure=np.ones((1, size, size), bool))
    for level, w in zip(synth.get("weight_levels", []), synth.get("weight_maps", []), strict=True):
        inside = np.where(area > 0, (w * mask).sum((1, 2)) / np.maximum(area, 1), np.nan)
        n_far = far.sum((1, 2))
        outside = np.where(n_far > 0, (w * far).sum((1, 2)) / np.maximum(n_far, 1), np.nan)
        out[f"w{level}_inside"] = inside
        out[f"w{level}_outside"] = outside
    return pd.DataFrame(out)


def evaluate_pairs(
    method: str,
    synth: Syntheses,
    pairs: Mapping[str, np.ndarray],
    cfg: Profile,
    keep_region: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-pair metrics of one method's syntheses (:func:`synthesize_pairs`) on ``pairs``.

    ``cfg`` is a :class:`radiolib.config.Profile`. Columns:

    * ``pair``, ``method``, ``donor_patient``;
    * ``mse``, ``ssim``, ``psnr``, ``region_px``: Table 1 protocol, synthesis vs background,
      over the whole image, or for inpainting over the centred disk of
      ``evaluation.inpaint_region_scale`` x the hole radius;
    * ``bg_mse``, ``bg_ssim``, ``bg_psnr``, ``bg_region_px``: the same over ``keep_region``
      (n, S, S) bool, normally :func:`background_keep_region` of all methods; when None each
      pair's own dilated tumour (and hole) is excluded. Regions under 49 pixels give NaN;
    * ``synth_<trait>`` and ``donor_<trait>`` for :func:`measure_traits`' traits, measured on
      the synthesis with its mask and on the donor slice with its mask;
    * the :func:`mechanism_per_pair` columns (mask area, empty masks, weight maps).
    """
    n = _check_pairs(pairs)
    for key in ("image", "mask", "hole", "hole_radius"):
        if key not in synth or len(synth[key]) != n:
            raise ValueError(f"synth[{key!r}] missing or not {n} rows; use synthesize_pairs")
    hu, voi = tuple(cfg.curation.hu_window), float(cfg.curation.voi_mm)
    if keep_region is None:
        keep_region = ~_changed_region(synth, method, int(cfg.model.erosion_px))
    keep_region = np.asarray(keep_region, bool)
    if keep_region.shape != np.asarray(synth["image"]).shape:
        raise ValueError(
            f"keep_region {keep_region.shape} differs from images "
            f"{np.asarray(synth['image']).shape}"
        )
    scale = float(cfg.evaluation.inpaint_region_scale)
    rows = []
    for i in range(n):
        img, bg = synth["image"][i], pairs["background"][i]
        region = None  # baseline and proposed: the whole image
        if method == "inpainting":
            region = disk(img.shape, None, scale * synth["hole_radius"][i])
        row: dict[str, object] = {
            "pair": i,
            "method": method,
            "donor_patient": pairs["donor_patient"][i],
        }
        row.update(region_metrics(img, bg, region))
        if keep_region[i].sum() >= SSIM_WINDOW**2:
            kept = region_metrics(img, bg, keep_region[i])
        else:
            kept = {
                "mse": np.nan,
                "ssim": np.nan,
                "psnr": np.nan,
                "region_px": int(keep_region[i].sum()),
            }
        row.update({f"bg_{k}": v for k, v in kept.items()})
        st = measure_traits(img, synth["mask"][i], hu, voi)
        dt = measure_traits(pairs["real_tumour"][i], pairs["real_mask"][i], hu, voi)
        row.update({f"synth_{k}": v for k, v in st.items()})
        row.update({f"donor_{k}": v for k, v in dt.items()})
        rows.append(row)
    mechanism = mechanism_per_pair(synth, int(cfg.model.erosion_px))
    return pd.concat([pd.DataFrame(rows), mechanism], axis=1)


def joint_head_auc(
    gan: GAN, cohort: CuratedCohort, split: str, n: int, seed: int
) -> tuple[float, int]:
    """How well the trained D_ISG tells a real slice's own genes from another patient's.

    Up to ``n`` slices of ``split`` (:class:`radiolib.data.dataset.PairedSlices` with
    ``seed``), each scored with its patient's gene code and with a mismatched patient's (the
    patch scores' mean), in eval mode; returns (the AUC of matched over mismatched, 0.5 when the
    head cannot tell them apart; the number of slices scored). A measure of the mechanism, not
    of the syntheses: on the training split it shows what the discriminator learned, on the
    held-out split whether that generalises. The code is the one ``gan`` carries: with a
    generator EMA (``runs.load_generator``), the averaged code against a head trained on the
    live one. A split with fewer than two patients with slices raises
    :class:`radiolib.errors.CohortError` (a mismatched pair needs another patient).
    """
    from sklearn.metrics import roc_auc_score

    from radiolib.data.dataset import PairedSlices

    dataset = PairedSlices(cohort, split, noise_dim=gan.noise_dim, seed=seed)
    rows = np.random.default_rng(seed).permutation(len(dataset))[:n]
    items = [dataset[int(i)] for i in rows]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("tumour", "mask", "genes")}
    mismatched = torch.stack([it["mismatch_genes"] for it in items])
    d = gan.discriminator
    device = next(gan.parameters()).device
    with eval_mode(gan), torch.no_grad():
        feats = d.encode_image_mask(batch["tumour"].to(device), batch["mask"].to(device))
        scores = [
            d.score_image_mask_gene(feats, gan.discriminator_code(g.to(device)))
            .float()
            .mean((1, 2, 3))
            .cpu()
            .numpy()
            for g in (batch["genes"], mismatched)
        ]
    labels = np.r_[np.ones(len(items)), np.zeros(len(items))]
    return float(roc_auc_score(labels, np.concatenate(scores))), len(items)
