"""The proposed multi-conditional GAN with style specification (paper Fig. 1a, 1b).

Generator: a two-layer mapping turns the genes into phi(g), concatenated with the noise into the
style w; a fully connected layer turns w into the base style map at the 4 x 4 bottleneck (the
paper: "phi(g) is further concatenated with a noise vector n to be used as the base style map");
a convolutional encoder of the background slice keeps features at every level (S ... 4 x 4); at
every level 4 ... S a FusionBlock blends the (upsampled) synthesis features with the background
features there, the object part styled by w through AdaIN. Output: the image (tanh) and the
tumour mask G_m, either a separate sigmoid head (``mask_source="head"``, the paper's auxiliary
output; ``lambda_map_to_mask`` then pulls the finest map onto it in the loss) or the finest
weight map itself (``"map"``: the mask and the map that separates object from background are
one thing, so the discriminators that judge the mask also shape the separation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radiolib.models import GAN, Synthesis, generator_sizes
from radiolib.models.blocks import (
    LRELU_SLOPE,
    Encoder,
    FusionBlock,
    GeneMapping,
    check_shape,
    conv,
    init_weights,
    upsample,
)
from radiolib.models.discriminator import conditional_discriminator

MASK_SOURCES = ("head", "map")


class ProposedGenerator(nn.Module):
    """(background (B, 1, S, S) in [-1, 1], genes (B, G), noise (B, Z)) -> Synthesis.

    ``weight_map``, ``adain_input``, ``gate_bias``: see :class:`FusionBlock`; ``mask_source``:
    see the module docstring.
    """

    def __init__(
        self,
        n_genes: int,
        image_size: int,
        width: int,
        code_dim: int,
        gene_hidden: int,
        noise_dim: int,
        weight_map: str = "gate",
        adain_input: str = "weighted",
        gate_bias: float = -2.0,
        mask_source: str = "head",
        gene_dropout: float = 0.0,
    ):
        super().__init__()
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        self.image_size = image_size
        self.n_genes = n_genes
        self.noise_dim = noise_dim
        self.mask_source = mask_source
        self.mapping = GeneMapping(n_genes, gene_hidden, code_dim, gene_dropout)
        self.style_dim = code_dim + noise_dim
        self.encoder = Encoder(image_size, width)
        ch = self.encoder.channels
        self.base_channels = ch[4]
        self.base = nn.Sequential(
            nn.Linear(self.style_dim, ch[4] * 16, bias=False),
            nn.BatchNorm1d(ch[4] * 16),
            nn.LeakyReLU(LRELU_SLOPE),
        )
        self.levels = sorted(ch)  # 4, 8, ..., S
        ins = [ch[4]] + [ch[s // 2] for s in self.levels[1:]]
        self.fusion = nn.ModuleList(
            FusionBlock(
                cin,
                ch[s],
                self.style_dim,
                weight_map=weight_map,
                adain_input=adain_input,
                gate_bias=gate_bias,
            )
            for cin, s in zip(ins, self.levels, strict=True)
        )
        self.head = conv(ch[image_size], 1 if mask_source == "map" else 2, bias=True)
        init_weights(self)
        for block in self.fusion:
            block.reset_gate()

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
        x = self.base(w).unflatten(1, (self.base_channels, 4, 4))
        maps = []
        for i, (level, block) in enumerate(zip(self.levels, self.fusion, strict=True)):
            x, a = block(x if i == 0 else upsample(x), bg[level], w)
            maps.append(a)
        out = self.head(x)
        if self.mask_source == "map":
            return Synthesis(out.tanh(), maps[-1], maps)
        image_logit, mask_logit = out.chunk(2, dim=1)
        return Synthesis(image_logit.tanh(), mask_logit.sigmoid(), maps)


def generator_options(cfg) -> dict:
    """The proposed generator's mechanism options from a ModelConfig."""
    return {
        "weight_map": cfg.weight_map,
        "adain_input": cfg.adain_input,
        "gate_bias": cfg.gate_bias,
        "mask_source": cfg.mask_source,
    }


class ProposedGAN(GAN):
    name = "proposed"

    def __init__(self, n_genes: int, image_size: int, cfg):
        generator = ProposedGenerator(
            *generator_sizes(n_genes, image_size, cfg),
            **generator_options(cfg),
            gene_dropout=cfg.gene_dropout,
        )
        discriminator = conditional_discriminator(image_size, n_genes, cfg)
        super().__init__(generator, discriminator, n_genes, image_size, cfg)
        self.lambda_map_to_mask = float(cfg.lambda_map_to_mask)
