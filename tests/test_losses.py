"""Every loss term against numbers worked out by hand."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from radiolib import losses


def full(value: float, shape=(2, 1, 4, 4)) -> torch.Tensor:
    return torch.full(shape, value)


def test_lsgan_terms_by_hand():
    assert losses.lsgan_real(full(0.5)).item() == pytest.approx(0.25)
    assert losses.lsgan_fake(full(0.5)).item() == pytest.approx(0.25)
    # (0-1)^2, (1-1)^2, (2-1)^2, (3-1)^2 -> (1 + 0 + 1 + 4) / 4
    assert losses.lsgan_real(torch.tensor([0.0, 1.0, 2.0, 3.0])).item() == pytest.approx(1.5)
    assert losses.lsgan_fake(torch.tensor([1.0, 2.0])).item() == pytest.approx(2.5)
    assert losses.g_adversarial(full(3.0)).item() == pytest.approx(4.0)


def test_discriminator_losses_by_hand():
    assert losses.d_image_loss(full(1.0), full(0.0)).item() == 0.0
    assert losses.d_image_loss(full(0.0), full(1.0)).item() == pytest.approx(2.0)
    # 0.25 (real at 0.5) + 1 (mismatched mask called real) + 0 (fake at 0)
    assert losses.d_image_mask_loss(full(0.5), full(1.0), full(0.0)).item() == pytest.approx(1.25)
    # 0 + 0.25 + 0.25 + 4
    value = losses.d_image_mask_gene_loss(full(1.0), full(0.5), full(0.5), full(2.0))
    assert value.item() == pytest.approx(4.5)


def test_losses_are_float32_under_bfloat16_scores():
    assert losses.lsgan_real(full(0.5).bfloat16()).dtype == torch.float32


def test_eroded_background_hand_example():
    mask = torch.zeros(1, 1, 7, 7)
    mask[..., 2:5, 2:5] = 1.0  # 3 x 3 tumour in the middle
    eroded = losses.eroded_background(mask, 3)[0, 0]
    expected = torch.ones(7, 7)
    expected[1:6, 1:6] = 0.0  # the tumour grown by one pixel; the border stays background
    assert torch.equal(eroded, expected)
    # size 1: the plain inverse
    assert torch.equal(losses.eroded_background(mask, 1), 1 - mask)


def test_eroded_background_does_not_erode_the_border():
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 0, 0] = 1.0
    eroded = losses.eroded_background(mask, 3)[0, 0]
    expected = torch.ones(5, 5)
    expected[:2, :2] = 0.0
    assert torch.equal(eroded, expected)
    assert torch.equal(losses.eroded_background(torch.zeros(1, 1, 5, 5), 5), torch.ones(1, 1, 5, 5))


def test_eroded_background_matches_scipy_grey_erosion_on_soft_masks():
    rng = np.random.default_rng(0)
    soft = rng.random((2, 1, 12, 12)).astype(np.float32)
    ours = losses.eroded_background(torch.from_numpy(soft), 5).numpy()
    for b in range(2):
        ref = ndimage.grey_erosion(1 - soft[b, 0], size=(5, 5), mode="constant", cval=1.0)
        np.testing.assert_allclose(ours[b, 0], ref, atol=1e-6)


def test_eroded_background_rejects_even_size():
    with pytest.raises(ValueError, match="odd"):
        losses.eroded_background(torch.zeros(1, 1, 4, 4), 4)


def test_background_l1_is_a_mean_over_all_pixels():
    fake = torch.ones(1, 1, 2, 2)
    base = torch.zeros(1, 1, 2, 2)
    weight = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert losses.background_l1(fake, base, weight).item() == pytest.approx(0.25)
    # |3 - 1| = 2 on half weight in two of four pixels, batch of two identical rows:
    fake = torch.full((2, 1, 2, 2), 3.0)
    base = torch.ones(2, 1, 2, 2)
    weight = torch.tensor([[[[0.5, 0.5], [0.0, 0.0]]]]).expand(2, 1, 2, 2)
    assert losses.background_l1(fake, base, weight).item() == pytest.approx(0.5)


def test_region_l1_is_a_mean_inside_the_region():
    fake = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    target = torch.zeros(1, 1, 2, 2)
    region = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert losses.region_l1(fake, target, region).item() == pytest.approx(2.0)
