"""The inpainting comparison (after Jin et al. 2018, here in 2D): no genes, a hole to fill.

A disk around the tumour is erased (set to 0, mid-grey in network units) and an encoder-decoder
with skip connections (U-Net) fills it from the surroundings; the output keeps the input
outside the disk exactly (composited) and the generated pixels inside. The mask output is the
disk itself: the model has no segmentation branch.

Training reconstructs the real tumour slice: the disk is centred on the centre of mass of the
batch's real mask, its radius ``inpaint_margin`` times the mask's equivalent radius
sqrt(area / pi), computed with torch ops (deterministic, no random numbers). Losses: the
least-squares adversarial term of an image-only discriminator D_I, plus
``lambda_inpaint_l1`` x the mean L1 inside the disk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from radiolib import losses
from radiolib.models import GAN, Synthesis, frozen
from radiolib.models.blocks import (
    Encoder,
    check_shape,
    conv,
    conv_bn_lrelu,
    init_weights,
    upsample,
)
from radiolib.models.discriminator import Discriminator

FILL_VALUE = 0.0  # erased pixels, network units (mid-grey)


def disk(centre: Tensor, radius: Tensor, size: int) -> Tensor:
    """{0, 1} disks: centre (B, 2) as (row, col) in pixels, radius (B,) -> (B, 1, size, size).

    A pixel belongs to the disk when its centre lies within ``radius`` of ``centre``.
    """
    check_shape(centre, (None, 2), "disk centre")
    check_shape(radius, (centre.shape[0],), "disk radius")
    coords = torch.arange(size, device=centre.device, dtype=torch.float32)
    dy = coords[None, :, None] - centre[:, 0, None, None].float()
    dx = coords[None, None, :] - centre[:, 1, None, None].float()
    inside = dy**2 + dx**2 <= radius[:, None, None].float() ** 2
    return inside.unsqueeze(1).float()


def hole_from_mask(mask: Tensor, margin: float) -> Tensor:
    """The disk to inpaint for each tumour mask: (B, 1, S, S) {0, 1} -> (B, 1, S, S) {0, 1}.

    Centre: the mask's centre of mass; radius: ``margin`` x sqrt(area / pi).
    Raises ``ValueError`` naming the batch rows whose mask is empty.
    """
    check_shape(mask, (None, 1, None, None), "tumour mask")
    if margin <= 0:
        raise ValueError(f"inpaint_margin must be > 0, got {margin}")
    m = mask[:, 0].float()
    area = m.sum(dim=(1, 2))
    empty = (area <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"tumour mask is empty in batch rows {empty}: no site to inpaint")
    coords = torch.arange(m.shape[-1], device=m.device, dtype=torch.float32)
    row = (m.sum(dim=2) * coords).sum(dim=1) / area
    col = (m.sum(dim=1) * coords).sum(dim=1) / area
    radius = margin * torch.sqrt(area / math.pi)
    return disk(torch.stack([row, col], dim=1), radius, m.shape[-1])


class InpaintingGenerator(nn.Module):
    """U-Net: (image (B, 1, S, S) in [-1, 1], hole (B, 1, S, S) {0, 1}) -> Synthesis.

    Input channels: the erased image and the hole. Output: the input outside the hole, the
    generated image inside; mask = hole; no weight maps.
    """

    def __init__(self, image_size: int, width: int):
        super().__init__()
        self.image_size = image_size
        self.encoder = Encoder(image_size, width, in_channels=2)
        ch = self.encoder.channels
        self.bottleneck = conv_bn_lrelu(ch[4], ch[4])
        self.levels = [s for s in sorted(ch) if s > 4]  # 8, ..., S
        self.decoder = nn.ModuleList(conv_bn_lrelu(ch[s // 2] + ch[s], ch[s]) for s in self.levels)
        self.head = conv(ch[image_size], 1, bias=True)
        init_weights(self)

    def forward(self, image: Tensor, hole: Tensor) -> Synthesis:
        s = self.image_size
        check_shape(image, (None, 1, s, s), "image")
        check_shape(hole, (image.shape[0], 1, s, s), "hole")
        hole = hole.to(image.dtype)
        erased = image * (1.0 - hole) + FILL_VALUE * hole
        feats = self.encoder(torch.cat([erased, hole], dim=1))
        x = self.bottleneck(feats[4])
        for level, block in zip(self.levels, self.decoder, strict=True):
            x = block(torch.cat([upsample(x), feats[level]], dim=1))
        filled = self.head(x).tanh()
        return Synthesis(image * (1.0 - hole) + filled * hole, hole, [])


class InpaintingGAN(GAN):
    name = "inpainting"

    def __init__(self, n_genes: int, image_size: int, cfg):
        generator = InpaintingGenerator(image_size, cfg.g_channels)
        discriminator = Discriminator(image_size, cfg.d_channels, conditional=False)
        super().__init__(generator, discriminator, n_genes, image_size, cfg)
        self.margin = float(cfg.inpaint_margin)
        self.lambda_inpaint_l1 = float(cfg.lambda_inpaint_l1)

    def gene_code(self, genes: Tensor) -> None:
        return None

    def generate(self, batch: dict) -> Synthesis:
        """Erase a disk at the real tumour's site and reconstruct the real slice."""
        self._check_batch(batch, ("tumour", "mask"))
        return self.generator(batch["tumour"], hole_from_mask(batch["mask"], self.margin))

    def synthesize(
        self,
        background: Tensor,
        genes: Tensor | None = None,
        noise: Tensor | None = None,
        hole: Tensor | None = None,
    ) -> Synthesis:
        """Fill ``hole`` (B, 1, S, S) {0, 1} in ``background``; genes and noise are ignored."""
        self._check_image(background, "background")
        if hole is None:
            raise ValueError("the inpainting GAN needs hole (B, 1, S, S): the disk to fill")
        return self.generator(background, hole)

    def discriminator_losses(self, batch: dict, fake: Synthesis) -> dict[str, Tensor]:
        """L_DI on real slices and inpainted reconstructions, one pass over both."""
        self._check_batch(batch, ("tumour",))
        real, fake_score = self.discriminator.score_image(
            torch.cat([batch["tumour"], fake.image]), groups=2
        ).chunk(2)
        d_image = losses.d_image_loss(real, fake_score)
        return {"d_image": d_image, "total": d_image}

    def generator_losses(self, batch: dict, fake: Synthesis) -> dict[str, Tensor]:
        """(D_I(G_x) - 1)^2 + lambda_inpaint_l1 x mean L1 inside the hole (``fake.mask``)."""
        self._check_batch(batch, ("tumour",))
        with frozen(self.discriminator):
            score = self.discriminator.score_image(fake.image)
        out = {
            "g_image": losses.g_adversarial(score),
            "g_inpaint_l1": losses.region_l1(fake.image, batch["tumour"], fake.mask),
        }
        out["total"] = out["g_image"] + self.lambda_inpaint_l1 * out["g_inpaint_l1"]
        return out


__all__ = ["InpaintingGAN", "InpaintingGenerator", "disk", "hole_from_mask"]
