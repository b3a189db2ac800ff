"""The three GANs of the study behind one interface.

``build_gan(name, n_genes, image_size, cfg)`` returns a :class:`GAN` whose methods the trainer
calls for every model alike:

* ``generate(batch)``: training-time forward (noise is in the batch: the only random numbers
  it draws are the gene dropout's, ``model.gene_dropout``, in training mode);
* ``discriminator_losses(batch, fake.detach())`` and ``generator_losses(batch, fake)``: dicts of
  named loss terms with a ``"total"``;
* ``synthesize(background, genes, noise, hole)``: evaluation-time synthesis;
* ``gene_code(genes)``: the learnt gene code phi(g) (None for the inpainting GAN).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from radiolib import losses
from radiolib.config import VARIANTS, ModelConfig, image_size_problem, model_options
from radiolib.models.blocks import check_shape

MODEL_NAMES = ("proposed", "baseline", "inpainting")


@dataclass
class Synthesis:
    """A generator's output.

    image (B, 1, S, S) in [-1, 1]; mask (B, 1, S, S) in [0, 1], the predicted tumour mask G_m;
    weight_maps: per fusion level, coarse to fine, (B, 1, s, s) in [0, 1], the weight given to
    the generated object (1) against the background (0); [] for models without fusion.
    """

    image: Tensor
    mask: Tensor
    weight_maps: list[Tensor] = field(default_factory=list)

    def detach(self) -> Synthesis:
        return Synthesis(
            self.image.detach(), self.mask.detach(), [w.detach() for w in self.weight_maps]
        )


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` do not require grad inside the block.

    Used for the discriminator during the generator's forward: gradients still flow through it
    to the generator, but backward computes no weight gradients for it (about a third less
    discriminator backward work), and the discriminator's .grad stays untouched.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block (batch norm on its running statistics, no
    dropout), then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class GAN(nn.Module):
    """Base class: a generator, a discriminator, and the paper's conditional losses.

    The conditional losses here serve the proposed GAN and the MC-GAN baseline (same
    three-head discriminator, same terms); the inpainting GAN overrides them.
    Batch keys (radiolib.data.dataset.PairedSlices): tumour, mask, genes, background,
    mismatch_mask, mismatch_genes, noise.
    """

    name: str = ""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        n_genes: int,
        image_size: int,
        cfg: ModelConfig,
    ):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.n_genes = n_genes
        self.image_size = image_size
        self.noise_dim = int(cfg.noise_dim)
        self.lambda_background = float(cfg.lambda_background)
        self.erosion_px = int(cfg.erosion_px)
        # the L1 of the finest weight map to the predicted mask (the proposed GAN's option;
        # a subclass sets it, see generator_losses)
        self.lambda_map_to_mask = 0.0
        # whether the discriminator's step trains the code D_ISG reads ("shared": the
        # generator's; "own": its own mapping), see discriminator_code
        self.d_trains_code = cfg.d_gene_code in ("shared", "own")

    # -- shapes ---------------------------------------------------------------------------
    def _check_image(self, x: Tensor, name: str) -> None:
        check_shape(x, (None, 1, self.image_size, self.image_size), name)

    def _check_batch(self, batch: dict, keys: tuple[str, ...]) -> None:
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {', '.join(missing)} (has {', '.join(sorted(batch))})")
        for k in keys:
            if k in ("tumour", "mask", "background", "mismatch_mask"):
                self._check_image(batch[k], f"batch[{k!r}]")
            elif k in ("genes", "mismatch_genes"):
                check_shape(batch[k], (None, self.n_genes), f"batch[{k!r}]")
            elif k == "noise":
                check_shape(batch[k], (None, self.noise_dim), "batch['noise']")

    # -- the interface --------------------------------------------------------------------
    def gene_code(self, genes: Tensor) -> Tensor | None:
        """phi(g): (B, n_genes) -> (B, code_dim)."""
        return self.generator.mapping(genes)

    def discriminator_code(self, genes: Tensor) -> Tensor:
        """The gene code D_ISG reads (``model.d_gene_code``):

        * ``"shared"`` (the study's): the generator's phi(g), live in the discriminator's step,
          so the whole L_DISG (real, mismatched-mask, mismatched-gene and fake terms) trains the
          code, chiefly to tell matched from mismatched genes (the trainer applies that gradient
          in the generator's step), and detached in the generator's adversarial D_ISG term, so
          the generator satisfies D_ISG only by what it paints.
          MC-GAN's text code sits on an embedding pretrained to match images and text; here no
          gene embedding exists beforehand, and the discriminator's matching loss is what
          trains one, end to end (book/method.md has the measurements).
        * ``"generator"`` (MC-GAN's trainer): the generator's phi(g) detached in the
          discriminator's step and live in the generator's step;
        * ``"own"``: the discriminator's own mapping, trained by the discriminator's step (the
          generator's code is then shaped only through the images it paints).
        """
        d = self.discriminator
        return d.mapping(genes) if d.own_gene_code else self.gene_code(genes)

    def generate(self, batch: dict) -> Synthesis:
        """Paint a tumour with the batch's genes and noise into the batch's background slice."""
        self._check_batch(batch, ("background", "genes", "noise"))
        return self.generator(batch["background"], batch["genes"], batch["noise"])

    def synthesize(
        self,
        background: Tensor,
        genes: Tensor,
        noise: Tensor | None = None,
        hole: Tensor | None = None,
    ) -> Synthesis:
        """background (B, 1, S, S) in [-1, 1], genes (B, G), noise (B, Z) or None for zeros.

        ``hole`` is used by the inpainting GAN only.
        """
        self._check_image(background, "background")
        if noise is None:
            noise = background.new_zeros(background.shape[0], self.noise_dim)
        return self.generator(background, genes, noise)

    def discriminator_losses(self, batch: dict, fake: Synthesis) -> dict[str, Tensor]:
        """The paper's L_DI, L_DIS, L_DISG and their sum, from ONE pass per encoder.

        Real (x, m), mismatched-mask (x, m_bar) and fake (G_x, G_m) tuples are concatenated along
        the batch; (x, m, g_bar) reuses the features of (x, m). Each tuple kind is normalised
        with its own batch statistics (GroupedBatchNorm), so this equals separate passes. The
        gene code stays live where the discriminator trains it (:meth:`discriminator_code`):
        the total's gradient then reaches the generator's mapping too.
        """
        self._check_batch(batch, ("tumour", "mask", "genes", "mismatch_mask", "mismatch_genes"))
        x, m, g = batch["tumour"], batch["mask"], batch["genes"]
        m_bar, g_bar = batch["mismatch_mask"], batch["mismatch_genes"]
        d = self.discriminator

        real_i, fake_i = d.score_image(torch.cat([x, fake.image]), groups=2).chunk(2)

        feats = d.encode_image_mask(
            torch.cat([x, x, fake.image]), torch.cat([m, m_bar, fake.mask]), groups=3
        )
        real_is, mis_is, fake_is = d.score_image_mask(feats).chunk(3)

        f_real, f_mis, f_fake = feats.chunk(3)
        code, code_bar = self.discriminator_code(torch.cat([g, g_bar])).chunk(2)
        if not self.d_trains_code:
            code, code_bar = code.detach(), code_bar.detach()
        real_isg, mis_mask_isg, mis_gene_isg, fake_isg = d.score_image_mask_gene(
            torch.cat([f_real, f_mis, f_real, f_fake]),
            torch.cat([code, code, code_bar, code]),
            groups=4,
        ).chunk(4)

        out = {
            "d_image": losses.d_image_loss(real_i, fake_i),
            "d_image_mask": losses.d_image_mask_loss(real_is, mis_is, fake_is),
            "d_image_mask_gene": losses.d_image_mask_gene_loss(
                real_isg, mis_mask_isg, mis_gene_isg, fake_isg
            ),
        }
        out["total"] = out["d_image"] + out["d_image_mask"] + out["d_image_mask_gene"]
        return out

    def generator_losses(self, batch: dict, fake: Synthesis) -> dict[str, Tensor]:
        """L_G: three adversarial terms and lambda x the background L1.

        The L1 compares G_x with the background slice G received, on the eroded inverse of G_m.
        G_m is detached there: otherwise G could shrink the L1 by claiming the whole slice as
        tumour; the mask is shaped by the D_IS and D_ISG terms instead. D_ISG reads the gene
        code detached when the discriminator trains it (:meth:`discriminator_code`).
        ``g_background_l1`` is reported unweighted; ``total`` weighs it by lambda_background.
        With ``lambda_map_to_mask > 0`` (the proposed GAN with a mask head of its own),
        ``g_map_to_mask``, the mean |finest weight map - G_m| with G_m detached (the map follows
        the mask, the mask is shaped by the discriminators), is added with that weight.
        """
        self._check_batch(batch, ("background", "genes"))
        self._check_image(fake.image, "fake.image")
        d = self.discriminator
        with frozen(d):
            fake_i = d.score_image(fake.image)
            feats = d.encode_image_mask(fake.image, fake.mask)
            fake_is = d.score_image_mask(feats)
            code = self.discriminator_code(batch["genes"])
            fake_isg = d.score_image_mask_gene(feats, code.detach() if self.d_trains_code else code)
        weight = losses.eroded_background(fake.mask.detach(), self.erosion_px)
        out = {
            "g_image": losses.g_adversarial(fake_i),
            "g_image_mask": losses.g_adversarial(fake_is),
            "g_image_mask_gene": losses.g_adversarial(fake_isg),
            "g_background_l1": losses.background_l1(fake.image, batch["background"], weight),
        }
        out["total"] = (
            out["g_image"]
            + out["g_image_mask"]
            + out["g_image_mask_gene"]
            + self.lambda_background * out["g_background_l1"]
        )
        if self.lambda_map_to_mask > 0:
            if not fake.weight_maps:
                raise ValueError("lambda_map_to_mask > 0 needs the synthesis' weight maps (none)")
            finest = fake.weight_maps[-1]
            out["g_map_to_mask"] = (finest.float() - fake.mask.detach().float()).abs().mean()
            out["total"] = out["total"] + self.lambda_map_to_mask * out["g_map_to_mask"]
        return out


def generator_sizes(n_genes: int, image_size: int, cfg: ModelConfig) -> tuple[int, ...]:
    """(n_genes, image_size, width, code_dim, gene_hidden, noise_dim): the sizes the proposed
    and baseline generators share."""
    return (n_genes, image_size, cfg.g_channels, cfg.code_dim, cfg.gene_hidden, cfg.noise_dim)


def build_gan(name: str, n_genes: int, image_size: int, cfg) -> GAN:
    """The named GAN ("proposed" | "baseline" | "inpainting", or a :data:`VARIANTS` name) for
    ``n_genes`` genes and ``image_size`` px slices, sized by a
    :class:`radiolib.config.ModelConfig`."""
    if name not in MODEL_NAMES and name not in VARIANTS:
        choices = ", ".join([*MODEL_NAMES, *VARIANTS])
        raise ValueError(f"unknown model {name!r}; choose one of {choices}")
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}")
    if problem := image_size_problem(image_size):
        raise ValueError(problem)
    if name in VARIANTS:
        gan = build_gan(VARIANTS[name][0], n_genes, image_size, model_options(name, cfg))
        gan.name = name
        return gan
    if name == "proposed":
        from radiolib.models.proposed import ProposedGAN

        return ProposedGAN(n_genes, image_size, cfg)
    if name == "baseline":
        from radiolib.models.baseline import BaselineGAN

        return BaselineGAN(n_genes, image_size, cfg)
    from radiolib.models.inpainting import InpaintingGAN

    return InpaintingGAN(n_genes, image_size, cfg)


__all__ = [
    "GAN",
    "MODEL_NAMES",
    "VARIANTS",
    "Synthesis",
    "build_gan",
    "eval_mode",
    "frozen",
    "generator_sizes",
]
