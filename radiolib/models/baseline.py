"""The baseline: MC-GAN (Park et al. 2018) with genes in place of words.

The gene code (the same two-layer mapping phi(g), concatenated with noise) becomes a base
image at the bottleneck through a fully connected layer, (B, code + noise) -> (B, C_base, 4, 4),
as MC-GAN turns its text code into a base image. MC-GAN synthesis blocks then merge it with the
background encoder's features at every level: conv-BN-LReLU-conv-BN on the synthesis features
doubles the channels, the first half are object features, the second half through a sigmoid is
a per-channel switch that lets the background features through:

    out = object + switch * background

No AdaIN: the genes reach the image only through the base image.

Parameter budget: the encoder, mapping, synthesis convolutions and head have the same shapes as
the proposed generator's. What differs is the proposed generator's base convolution and AdaIN
affines against this one's fully connected base image and its extra synthesis block at 4 x 4.
The base image's channel count ``C_base`` is the free width: :func:`matched_base_channels`
picks the one whose total parameter count is closest to the proposed generator's, so the
comparison is at equal capacity for every profile and gene count.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radiolib.models import GAN, Synthesis, generator_sizes
from radiolib.models.blocks import (
    LRELU_SLOPE,
    Encoder,
    GeneMapping,
    check_shape,
    conv,
    count_parameters,
    doubling_body,
    init_weights,
    upsample,
)
from radiolib.models.discriminator import conditional_discriminator


class SynthesisBlock(nn.Module):
    """MC-GAN synthesis block: (prev (B, cin, s, s), background (B, C, s, s)) ->
    (out (B, C, s, s), object weight map (B, 1, s, s)).

    The weight map reported is ``1 - mean_c(switch)``: the share of the output not taken from
    the background, comparable with the proposed fusion block's map.
    """

    def __init__(self, in_channels: int, channels: int, kernel2: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.body = doubling_body(in_channels, channels, kernel2)

    def forward(self, prev: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
        check_shape(prev, (None, self.in_channels, None, None), "synthesis input")
        s = prev.shape[-1]
        check_shape(background, (prev.shape[0], self.channels, s, s), "synthesis background")
        h = self.body(prev)
        obj, switch = h[:, : self.channels], torch.sigmoid(h[:, self.channels :])
        return obj + switch * background, 1.0 - switch.mean(dim=1, keepdim=True)


class BaselineGenerator(nn.Module):
    """(background (B, 1, S, S) in [-1, 1], genes (B, G), noise (B, Z)) -> Synthesis."""

    def __init__(
        self,
        n_genes: int,
        image_size: int,
        width: int,
        code_dim: int,
        gene_hidden: int,
        noise_dim: int,
        base_channels: int,
        gene_dropout: float = 0.0,
    ):
        super().__init__()
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        self.image_size = image_size
        self.n_genes = n_genes
        self.noise_dim = noise_dim
        self.base_channels = base_channels
        self.mapping = GeneMapping(n_genes, gene_hidden, code_dim, gene_dropout)
        style_dim = code_dim + noise_dim
        self.base = nn.Sequential(
            nn.Linear(style_dim, base_channels * 16, bias=False),
            nn.BatchNorm1d(base_channels * 16),
            nn.LeakyReLU(LRELU_SLOPE),
        )
        self.encoder = Encoder(image_size, width)
        ch = self.encoder.channels
        self.levels = sorted(ch)  # 4, 8, ..., S
        ins = [base_channels] + [ch[s // 2] for s in self.levels[1:]]
        self.synthesis = nn.ModuleList(
            SynthesisBlock(cin, ch[s]) for cin, s in zip(ins, self.levels, strict=True)
        )
        self.head = conv(ch[image_size], 2, bias=True)
        init_weights(self)

    def forward(self, background: Tensor, genes: Tensor, noise: Tensor) -> Synthesis:
        s = self.image_size
        check_shape(background, (None, 1, s, s), "background")
        check_shape(genes, (background.shape[0], self.n_genes), "genes")
        check_shape(noise, (background.shape[0], self.noise_dim), "noise")
        w = torch.cat([self.mapping(genes), noise], dim=1)
        x = self.base(w).unflatten(1, (self.base_channels, 4, 4))
        bg = self.encoder(background)
        maps = []
        for i, (level, block) in enumerate(zip(self.levels, self.synthesis, strict=True)):
            x, a = block(x if i == 0 else upsample(x), bg[level])
            if i > 0:  # the 4 x 4 merge is MC-GAN's bottleneck, not a fusion level
                maps.append(a)
        image_logit, mask_logit = self.head(x).chunk(2, dim=1)
        return Synthesis(image_logit.tanh(), mask_logit.sigmoid(), maps)


def matched_base_channels(n_genes: int, image_size: int, cfg) -> int:
    """The base-image width whose baseline generator's parameter count is closest to the
    proposed generator's (counted on the meta device: no memory, no initialisation cost)."""
    from radiolib.models.proposed import ProposedGenerator

    sizes = generator_sizes(n_genes, image_size, cfg)
    with torch.device("meta"):
        target = count_parameters(ProposedGenerator(*sizes))
        one = count_parameters(BaselineGenerator(*sizes, base_channels=1))
        two = count_parameters(BaselineGenerator(*sizes, base_channels=2))
    per_channel = two - one  # the count is linear in base_channels
    return max(1, 1 + round((target - one) / per_channel))


class BaselineGAN(GAN):
    name = "baseline"

    def __init__(self, n_genes: int, image_size: int, cfg):
        generator = BaselineGenerator(
            *generator_sizes(n_genes, image_size, cfg),
            base_channels=matched_base_channels(n_genes, image_size, cfg),
            gene_dropout=cfg.gene_dropout,
        )
        discriminator = conditional_discriminator(image_size, n_genes, cfg)
        super().__init__(generator, discriminator, n_genes, image_size, cfg)


__all__ = ["BaselineGAN", "BaselineGenerator", "SynthesisBlock", "matched_base_channels"]
