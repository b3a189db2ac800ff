"""Shapes, invariants and a tiny end-to-end run of the three GANs (tiny networks)."""

import math

import pytest
import torch

from radiolib.config import ModelConfig, get_profile
from radiolib.models import GAN, MODEL_NAMES, Synthesis, build_gan
from radiolib.models.baseline import SynthesisBlock
from radiolib.models.blocks import (
    AdaIN,
    Encoder,
    FusionBlock,
    GeneMapping,
    channel_schedule,
    count_parameters,
)
from radiolib.models.discriminator import Discriminator
from radiolib.models.inpainting import disk, hole_from_mask

# gene dropout off: tests here compare the outputs of successive calls in training mode (the
# dropout tests turn it on)
TINY = ModelConfig(
    code_dim=8, gene_hidden=16, noise_dim=4, g_channels=4, d_channels=4, gene_dropout=0.0
)
GENES = 12


def make_batch(size: int, batch: int = 4, n_genes: int = GENES, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def masks():
        centre = 8 + torch.rand(batch, 2, generator=g) * (size - 16)
        radius = 2 + torch.rand(batch, generator=g) * 3
        return disk(centre, radius, size)

    return {
        "tumour": torch.rand(batch, 1, size, size, generator=g) * 2 - 1,
        "mask": masks(),
        "genes": torch.randn(batch, n_genes, generator=g),
        "background": torch.rand(batch, 1, size, size, generator=g) * 2 - 1,
        "mismatch_mask": masks(),
        "mismatch_genes": torch.randn(batch, n_genes, generator=g),
        "noise": torch.randn(batch, TINY.noise_dim, generator=g),
        "patient": torch.arange(batch),
    }


def tiny_gan(name: str, size: int) -> GAN:
    torch.manual_seed(0)
    return build_gan(name, GENES, size, TINY)


# -- blocks -----------------------------------------------------------------------------


def test_channel_schedule_and_encoder_shapes():
    assert channel_schedule(64, 8) == {64: 8, 32: 8, 16: 16, 8: 32, 4: 32}
    assert channel_schedule(32, 4) == {32: 4, 16: 4, 8: 8, 4: 16}
    with pytest.raises(ValueError, match="power of two"):
        channel_schedule(48, 4)
    feats = Encoder(32, 4)(torch.zeros(2, 1, 32, 32))
    assert {s: tuple(f.shape) for s, f in feats.items()} == {
        32: (2, 4, 32, 32),
        16: (2, 4, 16, 16),
        8: (2, 8, 8, 8),
        4: (2, 16, 4, 4),
    }


def test_gene_mapping_shape_and_error():
    mapping = GeneMapping(GENES, 16, 8)
    assert mapping(torch.zeros(3, GENES)).shape == (3, 8)
    with pytest.raises(ValueError, match=r"genes must have shape \(B, 12\)"):
        mapping(torch.zeros(3, GENES + 1))


def test_gene_dropout_zeroes_genes_in_training_only():
    torch.manual_seed(0)
    mapping = GeneMapping(200, 16, 8, dropout=0.5)
    genes = torch.randn(1, 200)
    mapping(genes).sum().backward()
    # a gene zeroed in training gets no gradient: about half of them, one mask per call
    dropped = (mapping.fc1.weight.grad == 0).all(0)
    assert 0.35 < dropped.float().mean() < 0.65
    assert not torch.equal(mapping(genes), mapping(genes))
    plain = GeneMapping(200, 16, 8)
    plain.load_state_dict(mapping.state_dict())
    mapping.eval()
    torch.testing.assert_close(mapping(genes), plain(genes))  # evaluation reads every gene
    with pytest.raises(ValueError, match=r"gene dropout must be in \[0, 1\), got 1.0"):
        GeneMapping(200, 16, 8, dropout=1.0)


@pytest.mark.parametrize("name", ["proposed", "baseline"])
def test_gene_dropout_reaches_both_gans_and_the_discriminators_own_mapping(name):
    cfg = ModelConfig(**{**TINY.__dict__, "gene_dropout": 0.3, "d_gene_code": "own"})
    gan = build_gan(name, GENES, 16, cfg)
    assert gan.generator.mapping.dropout.p == 0.3
    assert gan.discriminator.mapping.dropout.p == 0.3


def test_adain_output_statistics_equal_style_scale_and_bias():
    torch.manual_seed(0)
    adain = AdaIN(3, 5)
    x = torch.randn(2, 3, 8, 8) * 4 + 7
    w = torch.randn(2, 5) * 10  # large style so scale is far from 1
    out = adain(x, w)
    scale, bias = adain.style(w)
    assert out.shape == x.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), bias, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), scale.abs(), atol=1e-3, rtol=0)


def test_adain_over_a_region_gives_that_region_the_style_whatever_its_area():
    torch.manual_seed(0)
    adain = AdaIN(3, 5)
    x = torch.randn(2, 3, 8, 8) * 4 + 7
    w = torch.randn(2, 5) * 10
    scale, bias = adain.style(w)
    for side in (2, 6):
        region = torch.zeros(2, 1, 8, 8)
        region[..., :side, :side] = 1
        region[..., side:, side:] = 0.01  # a soft map is not quite shut outside
        out = adain(x, w, region=region)
        mean = (region * out).sum((2, 3)) / region.sum((2, 3))
        var = (region * (out - mean[..., None, None]) ** 2).sum((2, 3)) / region.sum((2, 3))
        torch.testing.assert_close(mean, bias, atol=1e-4, rtol=0)
        torch.testing.assert_close(var.sqrt(), scale.abs(), atol=1e-3, rtol=0)
    # a uniform region is the plain instance statistics
    torch.testing.assert_close(adain(x, w, region=torch.ones(2, 1, 8, 8)), adain(x, w))
    with pytest.raises(ValueError, match="AdaIN region"):
        adain(x, w, region=torch.ones(2, 1, 4, 4))


def fusion_inputs(block: FusionBlock, s: int = 8):
    g = torch.Generator().manual_seed(1)
    prev = torch.randn(2, block.in_channels, s, s, generator=g)
    bg = torch.randn(2, block.channels, s, s, generator=g)
    w = torch.randn(2, 6, generator=g)
    return prev, bg, w


def test_fusion_block_shapes_and_map_range():
    block = FusionBlock(8, 4, 6)
    prev, bg, w = fusion_inputs(block)
    out, a = block(prev, bg, w)
    assert out.shape == (2, 4, 8, 8) and a.shape == (2, 1, 8, 8)
    assert 0 <= a.min() and a.max() <= 1


def test_fusion_block_zero_map_returns_background_and_one_map_the_styled_object():
    block = FusionBlock(8, 4, 6).eval()  # eval: BN uses fixed statistics, so calls agree
    prev, bg, w = fusion_inputs(block)
    out0, _ = block(prev, bg, w, weight=torch.zeros(2, 1, 8, 8))
    assert torch.equal(out0, bg)
    out1, _ = block(prev, bg, w, weight=torch.ones(2, 1, 8, 8))
    _, obj = block.split(prev)
    torch.testing.assert_close(out1, block.adain(obj, w))
    # the background has no influence under a full object map
    out1b, _ = block(prev, bg * 5 + 3, w, weight=torch.ones(2, 1, 8, 8))
    torch.testing.assert_close(out1, out1b)


def test_gate_starts_on_the_background_side_and_paper_map_at_one_half():
    torch.manual_seed(0)
    gate = FusionBlock(8, 4, 6, gate_bias=-2.0)
    gate.reset_gate()
    paper = FusionBlock(8, 4, 6, weight_map="paper")
    prev, bg, w = fusion_inputs(gate)
    _, a_gate = gate(prev, bg, w)
    _, a_paper = paper(prev, bg, w)
    # the gate's bias sets where the map starts: sigmoid(-2) = 0.12, nearly uniform
    assert abs(a_gate.mean().item() - 1 / (1 + math.exp(2))) < 0.01
    # the paper's map is a sigmoid of the channel mean of batch-normalised features: its logit
    # has zero mean over the batch, so it sits at 0.5 whatever the input
    assert abs(a_paper.mean().item() - 0.5) < 0.02
    _, a_shifted = paper(prev * 7 + 3, bg, w)
    assert abs(a_shifted.mean().item() - 0.5) < 0.02


def test_adain_on_the_object_decouples_nodule_intensity_from_its_area():
    """With AdaIN(o) the styled object's value at a pixel does not depend on how much of the
    map is open; with AdaIN(a * o) it does (statistics over the gated map)."""
    torch.manual_seed(0)
    prev, bg, w = fusion_inputs(FusionBlock(8, 4, 6))
    small, large = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    small[..., 3:5, 3:5] = 1
    large[..., 1:7, 1:7] = 1
    centre = (slice(None), slice(None), slice(3, 5), slice(3, 5))
    for mode, coupled in (("object", False), ("gated", True)):
        block = FusionBlock(8, 4, 6, adain_input=mode).eval()
        out_small, _ = block(prev, bg, w, weight=small)
        out_large, _ = block(prev, bg, w, weight=large)
        same = torch.allclose(out_small[centre], out_large[centre], atol=1e-5)
        assert same is not coupled, mode


def test_weighted_adain_gives_the_opened_region_the_styles_mean_whatever_its_area():
    """With ``adain_input="weighted"`` the nodule (where the map is 1) gets the style's bias as
    its mean feature, for a small and a large nodule alike; with AdaIN over the whole plane
    ("object") its mean depends on where it sits in the plane's statistics."""
    torch.manual_seed(0)
    prev, bg, w = fusion_inputs(FusionBlock(8, 4, 6))
    for mode, follows_style in (("weighted", True), ("object", False)):
        block = FusionBlock(8, 4, 6, adain_input=mode).eval()
        _, bias = block.adain.style(w)
        for lo, hi in ((3, 5), (1, 7)):
            region = torch.zeros(2, 1, 8, 8)
            region[..., lo:hi, lo:hi] = 1
            out, _ = block(prev, bg, w, weight=region)
            inside_mean = out[..., lo:hi, lo:hi].mean(dim=(2, 3))
            assert torch.allclose(inside_mean, bias, atol=1e-4) is follows_style, (mode, lo)


def test_fusion_block_rejects_unknown_options():
    with pytest.raises(ValueError, match="weight_map"):
        FusionBlock(8, 4, 6, weight_map="mean")
    with pytest.raises(ValueError, match="adain_input"):
        FusionBlock(8, 4, 6, adain_input="both")


def test_fusion_block_rejects_mismatched_background():
    block = FusionBlock(8, 4, 6)
    prev, bg, w = fusion_inputs(block)
    with pytest.raises(ValueError, match="fusion background"):
        block(prev, bg[:, :3], w)


def test_proposed_mask_is_its_own_head_or_the_finest_map():
    batch = make_batch(32)
    torch.manual_seed(0)
    by_head = build_gan("proposed", GENES, 32, TINY).generate(batch)
    assert by_head.mask is not by_head.weight_maps[-1]
    assert by_head.mask.shape == (4, 1, 32, 32)
    assert [m.shape[-1] for m in by_head.weight_maps] == [4, 8, 16, 32]
    torch.manual_seed(0)
    by_map = build_gan("proposed-mask-is-map", GENES, 32, TINY).generate(batch)
    assert by_map.mask is by_map.weight_maps[-1]


def _code_gradients(gan, batch) -> tuple[bool, bool, bool]:
    """Whether the generator's gene mapping receives a gradient from: the D step, the G step's
    D_ISG term with the painting held fixed (the code's direct path), and the G step's image
    term (the code through what it paints)."""
    weight = gan.generator.mapping.fc2.weight

    def moves(loss) -> bool:
        if not loss.requires_grad:
            return False
        grad = torch.autograd.grad(loss, weight, allow_unused=True)[0]
        return grad is not None and bool(grad.abs().sum() > 0)

    fake = gan.generate(batch)
    from_d = moves(gan.discriminator_losses(batch, fake.detach())["total"])
    direct = moves(gan.generator_losses(batch, fake.detach())["g_image_mask_gene"])
    painted = moves(gan.generator_losses(batch, fake)["g_image"])
    return from_d, direct, painted


@pytest.mark.parametrize("name", ["proposed", "baseline"])
def test_who_shapes_the_generators_code_in_each_joint_head_mode(name):
    batch = make_batch(32)
    modes = {}
    for mode in ("generator", "own", "shared"):
        torch.manual_seed(0)
        gan = build_gan(name, GENES, 32, ModelConfig(**{**TINY.__dict__, "d_gene_code": mode}))
        assert gan.discriminator.own_gene_code == (mode == "own")
        modes[mode] = _code_gradients(gan, batch)
    # MC-GAN: the D step never moves the code; the G step moves it through D_ISG directly
    assert modes["generator"] == (False, True, True)
    # own: D_ISG reads the discriminator's mapping, which the D step trains; the generator's
    # code is shaped only by the painting
    assert modes["own"] == (False, False, True)
    torch.manual_seed(0)
    own = build_gan(name, GENES, 32, ModelConfig(**{**TINY.__dict__, "d_gene_code": "own"}))
    fake = own.generate(batch)
    own.discriminator_losses(batch, fake.detach())["total"].backward()
    assert own.discriminator.mapping.fc1.weight.grad.abs().sum() > 0
    # shared: the D step trains the code to tell matched from mismatched genes; the G step
    # cannot fool D_ISG by moving the code, only by what it paints
    assert modes["shared"] == (True, False, True)


def test_variants_change_only_their_options():
    from radiolib.models import VARIANTS

    for name, (base, changes) in VARIANTS.items():
        gan = build_gan(name, GENES, 32, TINY)
        assert gan.name == name
        plain = build_gan(base, GENES, 32, TINY)
        assert type(gan) is type(plain)
        if "weight_map" in changes:
            assert gan.generator.fusion[0].weight_map == changes["weight_map"]
        if "mask_source" in changes:
            assert gan.generator.mask_source == changes["mask_source"]
        if "adain_input" in changes:
            assert gan.generator.fusion[0].adain_input == changes["adain_input"]
        expected = changes.get("lambda_map_to_mask", TINY.lambda_map_to_mask)
        assert gan.lambda_map_to_mask == expected
        if "d_gene_code" in changes:
            assert gan.discriminator.own_gene_code == (changes["d_gene_code"] == "own")
            assert gan.d_trains_code == (changes["d_gene_code"] in ("shared", "own"))
    with pytest.raises(ValueError, match="proposed-paper"):
        build_gan("nosuch", GENES, 32, TINY)


def test_synthesis_block_shapes():
    out, a = SynthesisBlock(8, 4)(torch.randn(2, 8, 8, 8), torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 4, 8, 8) and a.shape == (2, 1, 8, 8)


def test_discriminator_one_concatenated_pass_equals_separate_passes():
    torch.manual_seed(0)
    d = Discriminator(32, 4, GENES, 16, 8).train()
    a, b = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    joint = d.score_image(torch.cat([a, b]), groups=2)
    apart = torch.cat([d.score_image(a), d.score_image(b)])
    assert joint.shape == (6, 1, 4, 4)
    torch.testing.assert_close(joint, apart)
    # without per-tuple statistics the two would differ (BN would mix the tuples)
    assert not torch.allclose(d.score_image(torch.cat([a, b])), apart)


# -- the GANs ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gan_output_shapes_and_ranges(name, size):
    gan = tiny_gan(name, size)
    batch = make_batch(size)
    fake = gan.generate(batch)
    assert isinstance(fake, Synthesis)
    assert fake.image.shape == (4, 1, size, size) and fake.mask.shape == (4, 1, size, size)
    assert fake.image.abs().max() <= 1 and 0 <= fake.mask.min() and fake.mask.max() <= 1
    if name == "inpainting":
        assert fake.weight_maps == []
        assert gan.gene_code(batch["genes"]) is None
    else:
        # the proposed generator fuses at the 4 x 4 bottleneck too; MC-GAN merges its base there
        first = 4 if name == "proposed" else 8
        levels = [first * 2**k for k in range(int(math.log2(size // first)) + 1)]
        assert [m.shape for m in fake.weight_maps] == [(4, 1, s, s) for s in levels]
        assert gan.gene_code(batch["genes"]).shape == (4, TINY.code_dim)
    d = gan.discriminator_losses(batch, fake.detach())
    g = gan.generator_losses(batch, fake)
    assert "total" in d and "total" in g
    assert all(v.dim() == 0 and torch.isfinite(v) for v in {**d, **g}.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_generate_draws_no_random_numbers_and_synthesize_defaults_to_zero_noise(name):
    gan = tiny_gan(name, 32).eval()
    batch = make_batch(32)
    state = torch.get_rng_state()
    a = gan.generate(batch)
    b = gan.generate(batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.image, b.image)
    if name != "inpainting":
        zero = gan.synthesize(batch["background"], batch["genes"], torch.zeros(4, TINY.noise_dim))
        assert torch.equal(gan.synthesize(batch["background"], batch["genes"]).image, zero.image)


@pytest.mark.parametrize("name", ["proposed", "baseline"])
def test_shape_errors_name_the_expected_shape(name):
    gan = tiny_gan(name, 32)
    batch = make_batch(32)
    with pytest.raises(ValueError, match=r"background must have shape \(B, 1, 32, 32\)"):
        gan.synthesize(batch["background"][..., :16], batch["genes"])
    with pytest.raises(ValueError, match=r"genes must have shape \(4, 12\)"):
        gan.synthesize(batch["background"], batch["genes"][:, :5])
    with pytest.raises(KeyError, match="noise"):
        gan.generate({k: v for k, v in batch.items() if k != "noise"})


def test_build_gan_rejects_unknown_names():
    with pytest.raises(ValueError, match="proposed, baseline, inpainting"):
        build_gan("stylegan", GENES, 32, TINY)
    with pytest.raises(ValueError, match="power of two"):
        build_gan("proposed", GENES, 40, TINY)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("n_genes", [5172, 20])
def test_baseline_and_proposed_generators_have_equal_capacity(profile, n_genes):
    p = get_profile(profile)
    with torch.device("meta"):  # counting only: no memory, no initialisation cost
        proposed = count_parameters(
            build_gan("proposed", n_genes, p.curation.image_size, p.model).generator
        )
        baseline = count_parameters(
            build_gan("baseline", n_genes, p.curation.image_size, p.model).generator
        )
    assert abs(baseline - proposed) <= 0.1 * proposed, (baseline, proposed)


@pytest.mark.parametrize("name", ["proposed", "baseline"])
def test_generator_loss_reaches_the_gene_mapping_but_not_the_discriminator(name):
    gan = tiny_gan(name, 32)
    batch = make_batch(32)
    gan.generator_losses(batch, gan.generate(batch))["total"].backward()
    grad = gan.generator.mapping.fc1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())


def test_discriminator_uses_mismatched_genes_and_masks():
    gan = tiny_gan("proposed", 32)
    batch = make_batch(32)
    fake = gan.generate(batch).detach()
    base = gan.discriminator_losses(batch, fake)
    other_genes = dict(batch, mismatch_genes=batch["mismatch_genes"] * -2.0 + 1.0)
    changed = gan.discriminator_losses(other_genes, fake)
    assert changed["d_image"] == base["d_image"]
    assert changed["d_image_mask"] == base["d_image_mask"]
    assert changed["d_image_mask_gene"] != base["d_image_mask_gene"]
    other_mask = dict(batch, mismatch_mask=torch.flip(batch["mismatch_mask"], dims=[-1, -2]))
    changed = gan.discriminator_losses(other_mask, fake)
    assert changed["d_image"] == base["d_image"]
    assert changed["d_image_mask"] != base["d_image_mask"]


def test_map_to_mask_l1_moves_the_map_towards_the_mask_and_leaves_the_mask_alone():
    batch = make_batch(32)
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY.__dict__, "lambda_map_to_mask": 10.0})
    gan = build_gan("proposed", GENES, 32, cfg)
    fake = gan.generate(batch)
    out = gan.generator_losses(batch, fake)
    by_hand = (fake.weight_maps[-1] - fake.mask).abs().mean()
    assert out["g_map_to_mask"].item() == pytest.approx(by_hand.item())
    rest = out["g_image"] + out["g_image_mask"] + out["g_image_mask_gene"]
    rest = rest + cfg.lambda_background * out["g_background_l1"]
    assert out["total"].item() == pytest.approx((rest + 10.0 * by_hand).item(), rel=1e-5)
    # its gradient reaches the finest gate, not the mask: G_m is detached there
    head, gate = gan.generator.head.weight, gan.generator.fusion[-1].gate.weight
    g_head, g_gate = torch.autograd.grad(out["g_map_to_mask"], [head, gate], allow_unused=True)
    assert g_gate.abs().sum() > 0
    assert g_head is None
    with pytest.raises(ValueError, match="weight maps"):
        gan.generator_losses(batch, Synthesis(fake.image, fake.mask, []))
    # without it the term is absent
    free_cfg = ModelConfig(**{**TINY.__dict__, "lambda_map_to_mask": 0})
    free = build_gan("proposed", GENES, 32, free_cfg)
    assert "g_map_to_mask" not in free.generator_losses(batch, free.generate(batch))


def test_background_l1_compares_with_the_background_input():
    gan = tiny_gan("proposed", 32)
    batch = make_batch(32)
    fake = gan.generate(batch)
    perfect = Synthesis(batch["background"], torch.zeros_like(fake.mask), fake.weight_maps)
    assert gan.generator_losses(batch, perfect)["g_background_l1"].item() == 0.0
    shifted = Synthesis(batch["background"] + 0.5, torch.zeros_like(fake.mask), fake.weight_maps)
    l1 = gan.generator_losses(batch, shifted)["g_background_l1"].item()
    assert l1 == pytest.approx(0.5)


def test_hole_from_mask_hand_example():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 9:12, 11:14] = 1.0  # 3 x 3 square centred at (10, 12), area 9
    hole = hole_from_mask(mask, 1.2)[0, 0]
    radius = 1.2 * math.sqrt(9 / math.pi)  # 2.03 px
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    expected = ((rows - 10) ** 2 + (cols - 12) ** 2 <= radius**2).float()
    assert torch.equal(hole, expected)
    assert hole.sum() == 13  # the centre, 4 neighbours at 1, 4 diagonals at 1.41, 4 at 2
    with pytest.raises(ValueError, match=r"empty in batch rows \[1\]"):
        hole_from_mask(torch.cat([mask, torch.zeros_like(mask)]), 1.2)


def test_inpainting_keeps_the_input_outside_the_hole():
    gan = tiny_gan("inpainting", 32)
    batch = make_batch(32)
    hole = hole_from_mask(batch["mask"], TINY.inpaint_margin)
    out = gan.synthesize(batch["background"], batch["genes"], hole=hole)
    outside = hole == 0
    assert torch.equal(out.image[outside], batch["background"][outside])
    assert not torch.equal(out.image[~outside], batch["background"][~outside])
    assert torch.equal(out.mask, hole)
    fake = gan.generate(batch)  # training: the real slice, erased at the real tumour's site
    assert torch.equal(fake.mask, hole)
    assert torch.equal(fake.image[outside], batch["tumour"][outside])
    with pytest.raises(ValueError, match="hole"):
        gan.synthesize(batch["background"], batch["genes"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_three_optimisation_steps_give_finite_losses(name):
    gan = tiny_gan(name, 32)
    opt_g = torch.optim.Adam(gan.generator.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    before = [p.detach().clone() for p in gan.generator.parameters()]
    for step in range(3):
        batch = make_batch(32, seed=step)
        fake = gan.generate(batch)
        opt_d.zero_grad()
        d = gan.discriminator_losses(batch, fake.detach())
        d["total"].backward()
        opt_d.step()
        opt_g.zero_grad()
        g = gan.generator_losses(batch, fake)
        g["total"].backward()
        opt_g.step()
        assert all(torch.isfinite(v) for v in {**d, **g}.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, gan.generator.parameters(), strict=True)
    )


@pytest.mark.parametrize("name", ["proposed", "baseline"])
def test_genes_and_noise_change_the_synthesis(name):
    # train mode: batch statistics (untrained running statistics would damp every signal)
    gan = tiny_gan(name, 32)
    batch = make_batch(32)
    base = gan.synthesize(batch["background"], batch["genes"])
    other = gan.synthesize(batch["background"], batch["mismatch_genes"])
    noisy = gan.synthesize(batch["background"], batch["genes"], batch["noise"])
    assert not torch.allclose(base.image, other.image)
    assert not torch.allclose(base.image, noisy.image)
    assert all(0 <= m.min() and m.max() <= 1 for m in base.weight_maps)
    detached = gan.generate(batch).detach()
    assert not detached.image.requires_grad and not detached.weight_maps[0].requires_grad


def test_eval_mode_restores_the_mode_it_found():
    from radiolib.models import eval_mode

    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    for training in (True, False):
        net.train(training)
        with eval_mode(net) as inside:
            assert inside is net and not net.training
        assert net.training is training
    with pytest.raises(RuntimeError), eval_mode(net.train()):
        raise RuntimeError("inside")
    assert net.training


def test_codes_and_paintings_read_every_gene_whatever_mode_the_gan_is_in():
    import numpy as np

    from radiolib.radiogenomics.codes import gene_codes
    from radiolib.synthesize import paint

    cfg = ModelConfig(**{**TINY.__dict__, "gene_dropout": 0.5})
    gan = build_gan("proposed", GENES, 16, cfg).train()
    genes = np.random.default_rng(0).standard_normal((6, GENES)).astype(np.float32)
    np.testing.assert_array_equal(gene_codes(gan, genes), gene_codes(gan, genes))
    background = np.full((16, 16), 0.3, np.float32)
    first, second = paint(gan, background, genes[0]), paint(gan, background, genes[0])
    np.testing.assert_array_equal(first[0], second[0])
    assert gan.training  # left in the mode it was in
