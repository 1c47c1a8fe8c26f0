"""Tests of the tampering generator on real photos from scikit-image."""

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from hcr_model.bench.tampering import (
    SHAPES,
    TAMPER_KINDS,
    random_tamper_batch,
    region_mask,
    tamper,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def donor() -> np.ndarray:
    return data.coffee()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("area", [0.03, 0.2, 0.35])
def test_region_mask_covers_requested_area(shape, area):
    rng = np.random.default_rng(7)
    mask = region_mask(256, 192, shape, area, rng)

    assert mask.shape == (256, 192)
    assert mask.dtype == bool
    assert abs(mask.mean() - area) < 0.25 * area + 0.01


@pytest.mark.parametrize("kind", TAMPER_KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_tamper_changes_only_masked_pixels(photo, donor, kind, shape):
    rng = np.random.default_rng(10 * TAMPER_KINDS.index(kind) + SHAPES.index(shape))
    result = tamper(photo, rng, kind=kind, shape=shape, area=0.2, donor=donor)
    changed = np.any(result.image != photo, axis=2)

    assert result.image.shape == photo.shape
    assert result.image.dtype == np.uint8
    assert result.kind == kind
    assert result.shape == shape
    # The invariant: outside the mask every byte equals the input.
    assert np.array_equal(result.image[~result.mask], photo[~result.mask])
    assert not (changed & ~result.mask).any()
    assert result.area == pytest.approx(result.mask.mean())
    assert result.changed_fraction == pytest.approx(changed[result.mask].mean())


@pytest.mark.parametrize("kind", [k for k in TAMPER_KINDS if k != "text"])
def test_tamper_changes_most_of_mask(photo, donor, kind):
    fractions = []
    for seed in range(3):
        result = tamper(photo, np.random.default_rng(seed), kind=kind, area=0.2, donor=donor)
        fractions.append(result.changed_fraction)
        assert abs(result.area - 0.2) < 0.06

    assert np.mean(fractions) > 0.7


def test_text_mask_is_dilated_glyphs(photo):
    result = tamper(photo, np.random.default_rng(3), kind="text", shape="rect", area=0.3)
    changed = np.any(result.image != photo, axis=2)

    assert 0.005 < result.area < 0.3
    # The mask is the glyphs dilated by one pixel. Faint antialiased glyph
    # edges can round back to the input's value, so a few mask pixels lie
    # farther than one pixel from any changed pixel.
    dilated = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (result.mask & ~dilated).sum() < 0.05 * result.mask.sum()
    assert 0.3 < result.changed_fraction < 1.0


def test_tamper_is_deterministic(photo, donor):
    first = tamper(photo, np.random.default_rng(11), donor=donor)
    second = tamper(photo, np.random.default_rng(11), donor=donor)
    third = tamper(photo, np.random.default_rng(12), donor=donor)

    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.mask, second.mask)
    assert (first.kind, first.shape, first.area) == (second.kind, second.shape, second.area)
    assert not np.array_equal(first.mask, third.mask)


def test_tamper_draws_kind_shape_and_area(photo, donor):
    rng = np.random.default_rng(0)
    results = [tamper(photo, rng, donor=donor) for _ in range(30)]

    assert {r.kind for r in results} == set(TAMPER_KINDS)
    assert {r.shape for r in results} == set(SHAPES)
    assert all(0.0 < r.area <= 0.4 for r in results)


@pytest.mark.parametrize("kind", TAMPER_KINDS)
def test_tamper_non_square_view(donor, kind):
    photo = data.chelsea()[:, ::-1]  # 300 x 451, a mirrored (non-contiguous) view
    result = tamper(photo, np.random.default_rng(5), kind=kind, donor=donor[::2, ::-2])

    assert result.mask.shape == photo.shape[:2]
    assert result.mask.any()
    assert np.array_equal(result.image[~result.mask], photo[~result.mask])


def test_tamper_rejects_bad_inputs(photo):
    rng = np.random.default_rng(0)

    with pytest.raises(ValueError, match="donor"):
        tamper(photo, rng, kind="splice")
    with pytest.raises(ValueError, match="unknown tamper kind"):
        tamper(photo, rng, kind="warp")
    with pytest.raises(ValueError, match="unknown shape"):
        tamper(photo, rng, kind="blur", shape="star")
    with pytest.raises(ValueError, match="uint8"):
        tamper(photo.astype(np.float32) / 255, rng, kind="blur")
    with pytest.raises(ValueError, match="area"):
        tamper(photo, rng, kind="blur", area=1.5)


def _as_batch(*arrays: np.ndarray) -> torch.Tensor:
    stacked = np.stack([cv2.resize(a, (128, 128), interpolation=cv2.INTER_AREA) for a in arrays])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255


def test_random_tamper_batch_keeps_unmasked_values(photo, donor):
    # Off-grid float values check that untouched pixels are passed through, not requantized.
    images = (_as_batch(photo, donor, data.chelsea(), data.rocket()) * 0.9 + 0.013).requires_grad_()
    tampered, masks = random_tamper_batch(images, np.random.default_rng(1))

    assert tampered.shape == images.shape
    assert masks.shape == (4, 1, 128, 128)
    assert masks.dtype == images.dtype
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.mean(dim=(1, 2, 3)) > 0).all()
    outside = (masks == 0).expand_as(images)
    assert torch.equal(tampered[outside], images[outside])

    tampered.sum().backward()
    assert torch.equal(images.grad, (masks == 0).expand_as(images).float())


def test_random_tamper_batch_is_deterministic(photo, donor):
    images = _as_batch(photo, donor)
    first = random_tamper_batch(images, np.random.default_rng(9))
    second = random_tamper_batch(images, np.random.default_rng(9))

    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_random_tamper_batch_clean_and_kinds(photo):
    images = _as_batch(photo)
    clean, clean_masks = random_tamper_batch(images, np.random.default_rng(0), clean_prob=1.0)
    spliced, splice_masks = random_tamper_batch(images, np.random.default_rng(0), kinds=("splice",))

    assert torch.equal(clean, images)
    assert clean_masks.sum() == 0
    # A single image is its own (rotated) splice donor.
    assert splice_masks.sum() > 0
    assert not torch.equal(spliced, images)


def test_random_tamper_batch_rejects_bad_shape():
    with pytest.raises(ValueError, match="B, 3, H, W"):
        random_tamper_batch(torch.rand(3, 64, 64), np.random.default_rng(0))
