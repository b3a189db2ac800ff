"""The proposed multi-conditional GAN with style specification (paper Fig. 1a, 1b).

Generator: a convolutional encoder of the background slice keeps features at every level
(S ... 4 x 4); a two-layer mapping turns the genes into phi(g), concatenated with the noise into
the style w; a base synthesis feature at the 4 x 4 bottleneck is the background's deepest
feature, convolved and styled by w through AdaIN; then at every level 8 ... S a FusionBlock
blends the upsampled synthesis features with the background features there, the object part
styled by w. Heads: image (tanh) and mask (sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radiolib.models import GAN, Synthesis
from radiolib.models.blocks import (
    LRELU_SLOPE,
    AdaIN,
    Encoder,
    FusionBlock,
    GeneMapping,
    check_shape,
    conv,
    init_weights,
    upsample,
)
from radiolib.models.discriminator import Discriminator


class ProposedGenerator(nn.Module):
    """(background (B, 1, S, S) in [-1, 1], genes (B, G), noise (B, Z)) -> Synthesis."""

    def __init__(
        self,
        n_genes: int,
        image_size: int,
        width: int,
        code_dim: int,
        gene_hidden: int,
        noise_dim: int,
    ):
        super().__init__()
        self.image_size = image_size
        self.n_genes = n_genes
        self.noise_dim = noise_dim
        self.mapping = GeneMapping(n_genes, gene_hidden, code_dim)
        self.style_dim = code_dim + noise_dim
        self.encoder = Encoder(image_size, width)
        ch = self.encoder.channels
        self.base_conv = conv(ch[4], ch[4])
        self.base_adain = AdaIN(ch[4], self.style_dim)
        self.levels = [s for s in sorted(ch) if s > 4]  # 8, 16, ..., S
        self.fusion = nn.ModuleList(
            FusionBlock(ch[s // 2], ch[s], self.style_dim) for s in self.levels
        )
        self.head = conv(ch[image_size], 2, bias=True)  # image and mask logits
        init_weights(self)

    def style(self, genes: Tensor, noise: Tensor) -> Tensor:
        """w = [phi(g), n]: (B, code_dim + noise_dim)."""
        check_shape(noise, (genes.shape[0], self.noise_dim), "noise")
        return torch.cat([self.mapping(genes), noise], dim=1)

    def forward(self, background: Tensor, genes: Tensor, noise: Tensor) -> Synthesis:
        s = self.image_size
        check_shape(background, (None, 1, s, s), "background")
        check_shape(genes, (background.shape[0], self.n_genes), "genes")
        w = self.style(genes, noise)
        bg = self.encoder(background)
        x = F.leaky_relu(self.base_adain(self.base_conv(bg[4]), w), LRELU_SLOPE)
        maps = []
        for level, block in zip(self.levels, self.fusion, strict=True):
            x, a = block(upsample(x), bg[level], w)
            maps.append(a)
        image_logit, mask_logit = self.head(x).chunk(2, dim=1)
        return Synthesis(image_logit.tanh(), mask_logit.sigmoid(), maps)


class ProposedGAN(GAN):
    name = "proposed"

    def __init__(self, n_genes: int, image_size: int, cfg):
        generator = ProposedGenerator(
            n_genes, image_size, cfg.g_channels, cfg.code_dim, cfg.gene_hidden, cfg.noise_dim
        )
        discriminator = Discriminator(
            image_size, cfg.d_channels, n_genes, cfg.gene_hidden, cfg.code_dim
        )
        super().__init__(generator, discriminator, n_genes, image_size, cfg)
