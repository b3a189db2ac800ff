"""The three-head discriminator of the paper (Fig. 1c), after MC-GAN (Park et al. 2018).

* D_I: an image encoder -> patch scores;
* D_IS: an image + mask encoder -> patch scores;
* D_ISG: the D_IS bottleneck features joined with a gene code (replicated over the 4 x 4 grid)
  -> conv-BN-LReLU -> patch scores.

The gene code of D_ISG is the paper's phi(g) ("combined with gene code phi(g)"), the
GENERATOR's code; who trains it is the GAN's choice (``model.d_gene_code``, see
:meth:`radiolib.models.GAN.discriminator_code`). ``own_gene_code=True`` gives the discriminator
its own two-layer mapping of the raw genes instead (an ablation).

Scores are (N, 1, 4, 4) patches (the least-squares losses average them). Every method takes
``groups``: the number of equal tuples concatenated along the batch, each normalised with its
own batch statistics (:class:`radiolib.distributed.GroupedBatchNorm`), so one pass over real,
mismatched and fake tuples equals separate passes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radiolib.distributed import GroupedBatchNorm
from radiolib.models.blocks import (
    LRELU_SLOPE,
    DownBlock,
    GeneMapping,
    channel_schedule,
    check_shape,
    conv,
    init_weights,
)


class ConvEncoder(nn.Module):
    """Stride-2 3 x 3 convolutions down to 4 x 4: (N, cin, S, S) -> (N, C, 4, 4).

    Channels double from ``width`` at S/2 and are capped at 4 ``width``; no normalisation on the
    first layer (DCGAN).
    """

    def __init__(self, image_size: int, width: int, in_channels: int):
        super().__init__()
        sizes = list(channel_schedule(image_size, width))[1:]  # S/2 ... 4
        chans = [width * min(2**k, 4) for k in range(len(sizes))]
        self.blocks = nn.ModuleList([DownBlock(in_channels, chans[0], norm=False)])
        self.blocks.extend(DownBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.out_channels = chans[-1]

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        for block in self.blocks:
            x = block(x, groups)
        return x


class Discriminator(nn.Module):
    """Three heads: D_I(x), D_IS(x, m), D_ISG(x, m, g). ``conditional=False`` keeps D_I only.

    image_size S, width ``d_channels``; genes (N, n_genes) standardised expression.
    """

    def __init__(
        self,
        image_size: int,
        width: int,
        n_genes: int = 0,
        gene_hidden: int = 0,
        code_dim: int = 0,
        conditional: bool = True,
        own_gene_code: bool = False,
        gene_dropout: float = 0.0,
    ):
        super().__init__()
        self.image_size = image_size
        self.conditional = conditional
        self.image_encoder = ConvEncoder(image_size, width, 1)
        c = self.image_encoder.out_channels
        self.image_head = conv(c, 1, bias=True)
        self.mapping: GeneMapping | None = None
        if conditional:
            self.n_genes = n_genes
            self.image_mask_encoder = ConvEncoder(image_size, width, 2)
            self.image_mask_head = conv(c, 1, bias=True)
            self.mapping = (
                GeneMapping(n_genes, gene_hidden, code_dim, gene_dropout) if own_gene_code else None
            )
            self.code_dim = code_dim
            self.joint_conv = conv(c + code_dim, c)
            self.joint_norm = GroupedBatchNorm(c)
            self.joint_head = conv(c, 1, bias=True)
        init_weights(self)

    def _check_images(self, x: Tensor, name: str) -> None:
        check_shape(x, (None, 1, self.image_size, self.image_size), name)

    def score_image(self, images: Tensor, groups: int = 1) -> Tensor:
        """D_I: images (N, 1, S, S) in [-1, 1] -> (N, 1, 4, 4)."""
        self._check_images(images, "discriminator images")
        return self.image_head(self.image_encoder(images, groups))

    def encode_image_mask(self, images: Tensor, masks: Tensor, groups: int = 1) -> Tensor:
        """(N, 1, S, S) images in [-1, 1] and masks in [0, 1] -> features (N, C, 4, 4)."""
        self._check_images(images, "discriminator images")
        self._check_images(masks, "discriminator masks")
        # masks enter centred like the images
        return self.image_mask_encoder(torch.cat([images, 2.0 * masks - 1.0], 1), groups)

    def score_image_mask(self, features: Tensor) -> Tensor:
        """D_IS from :meth:`encode_image_mask` features -> (N, 1, 4, 4)."""
        return self.image_mask_head(features)

    @property
    def own_gene_code(self) -> bool:
        """Whether D_ISG reads the discriminator's own gene mapping (not the generator's)."""
        return self.mapping is not None

    def score_image_mask_gene(self, features: Tensor, code: Tensor, groups: int = 1) -> Tensor:
        """D_ISG: features (N, C, 4, 4) and gene code (N, code_dim) -> (N, 1, 4, 4)."""
        check_shape(code, (features.shape[0], self.code_dim), "discriminator gene code")
        grid = code[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        h = self.joint_norm(self.joint_conv(torch.cat([features, grid], 1)), groups)
        return self.joint_head(nn.functional.leaky_relu(h, LRELU_SLOPE))


def conditional_discriminator(image_size: int, n_genes: int, cfg) -> Discriminator:
    """The three-head discriminator of the proposed GAN and the baseline, sized by a
    :class:`radiolib.config.ModelConfig`."""
    return Discriminator(
        image_size,
        cfg.d_channels,
        n_genes,
        cfg.gene_hidden,
        cfg.code_dim,
        own_gene_code=cfg.d_gene_code == "own",
        gene_dropout=cfg.gene_dropout,
    )
