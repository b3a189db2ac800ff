"""The paper's least-squares GAN terms (Mao et al. 2017) and reconstruction losses.

Each term is a small pure function of tensors. Discriminator scores may be scalars per sample
(B,) or patches (B, 1, h, w); the least-squares expectation is the mean over every element.
Losses are computed in float32 whatever the autocast dtype of the scores.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def lsgan_real(score: Tensor) -> Tensor:
    """E[(D - 1)^2]: the score a sample labelled real should reach."""
    return ((score.float() - 1.0) ** 2).mean()


def lsgan_fake(score: Tensor) -> Tensor:
    """E[D^2]: the score a sample labelled fake (or mismatched) should reach."""
    return (score.float() ** 2).mean()


def d_image_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_DI = E[(D_I(x) - 1)^2] + E[D_I(G_x)^2]."""
    return lsgan_real(real) + lsgan_fake(fake)


def d_image_mask_loss(real: Tensor, mismatched_mask: Tensor, fake: Tensor) -> Tensor:
    """L_DIS = E[(D_IS(x, m) - 1)^2] + E[D_IS(x, m_bar)^2] + E[D_IS(G_x, G_m)^2]."""
    return lsgan_real(real) + lsgan_fake(mismatched_mask) + lsgan_fake(fake)


def d_image_mask_gene_loss(
    real: Tensor, mismatched_mask: Tensor, mismatched_gene: Tensor, fake: Tensor
) -> Tensor:
    """L_DISG = E[(D(x, m, g) - 1)^2] + E[D(x, m_bar, g)^2] + E[D(x, m, g_bar)^2]
    + E[D(G_x, G_m, g)^2]."""
    return (
        lsgan_real(real)
        + lsgan_fake(mismatched_mask)
        + lsgan_fake(mismatched_gene)
        + lsgan_fake(fake)
    )


def g_adversarial(fake_score: Tensor) -> Tensor:
    """One adversarial term of L_G, E[(D(G) - 1)^2]: the generator wants its fakes called real."""
    return lsgan_real(fake_score)


def eroded_background(mask: Tensor, size: int) -> Tensor:
    """G_M-bar: grey-scale erosion of the inverse mask ``1 - mask`` by a ``size`` x ``size`` square.

    mask (B, 1, H, W) in [0, 1] (soft masks are eroded as grey levels: a minimum filter).
    Erosion is ``-max_pool(-x)``; the pooling pads with -inf, so pixels beyond the image border
    never win the minimum: the border is not eroded (outside the image counts as background).
    Returns (B, 1, H, W) in [0, 1]. ``size`` must be odd so the window is centred.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"erosion size must be an odd number >= 1, got {size}")
    inverse = 1.0 - mask
    if size == 1:
        return inverse
    return -F.max_pool2d(-inverse, kernel_size=size, stride=1, padding=size // 2)


def background_l1(fake: Tensor, base: Tensor, weight: Tensor) -> Tensor:
    """E[|G_x * W - x * W|]: the paper's background L1, the mean over ALL pixels (and batch).

    fake, base (B, 1, H, W); weight (B, 1, H, W) (e.g. :func:`eroded_background`). Dividing by
    every pixel, not by the weight's sum, follows the paper's expectation and keeps the term's
    scale independent of how much background the mask leaves.
    """
    return ((fake.float() - base.float()).abs() * weight.float()).mean()


def region_l1(fake: Tensor, target: Tensor, region: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean |fake - target| INSIDE ``region`` (inpainting reconstruction): per sample
    sum(|d| * r) / sum(r), then the mean over the batch.

    Normalised by each region's area, so small and large holes weigh alike, and a mean of
    per-sample terms, so a batch split across processes gives the same value.
    fake, target, region (B, 1, H, W).
    """
    region = region.float()
    per_sample = ((fake.float() - target.float()).abs() * region).sum((1, 2, 3))
    return (per_sample / (region.sum((1, 2, 3)) + eps)).mean()
