"""Tests of the attack grid's evaluation and training forms on real photos."""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from hcr_model.bench.attacks import ATTACKS, quantize_8bit, random_train_attack

EXPECTED_NAMES = {
    "identity", "jpeg50", "jpeg60", "jpeg75", "jpeg90", "blur0.5", "blur1", "blur2",
    "noise0.01", "noise0.02", "noise0.05", "resize0.5", "resize0.75", "resize1.5",
    "crop70", "crop75", "crop90", "brightness+30", "brightness-30", "contrast+30",
    "contrast-30", "jpeg_resize", "crop_jpeg_brightness",
}

# Evaluation output size of a 96 x 128 input.
EXPECTED_EVAL_SIZE = {
    "resize0.5": (48, 64),
    "resize0.75": (72, 96),
    "resize1.5": (144, 192),
    "crop70": (80, 107),
    "crop75": (83, 111),
    "crop90": (91, 121),
    "jpeg_resize": (72, 96),
    "crop_jpeg_brightness": (91, 121),
}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Two real photos as (2, 3, 96, 128) float, off the 8-bit grid."""
    arrays = [
        cv2.resize(photo, (128, 96), interpolation=cv2.INTER_AREA)
        for photo in (data.astronaut(), data.chelsea())
    ]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    return images * 0.98 + 0.004


def test_registry_names():
    assert set(ATTACKS) == EXPECTED_NAMES
    for name, attack in ATTACKS.items():
        assert attack.name == name
        assert attack.description


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_eval_form_size_quantization_determinism(photos, name):
    attack = ATTACKS[name]
    first = attack.apply(photos)
    second = attack.apply(photos)

    assert first.shape[:2] == photos.shape[:2]
    assert tuple(first.shape[-2:]) == EXPECTED_EVAL_SIZE.get(name, (96, 128))
    assert attack.changes_size == (name in EXPECTED_EVAL_SIZE)
    assert torch.equal(first, second)
    assert torch.equal(first, quantize_8bit(first))
    assert first.min() >= 0
    assert first.max() <= 1


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_train_form_keeps_size_and_passes_gradient(photos, name):
    images = photos.clone().requires_grad_()
    attacked = ATTACKS[name].apply_train(images, np.random.default_rng(0))
    attacked.mean().backward()

    assert attacked.shape == photos.shape
    assert torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


def test_identity_forms(photos):
    assert torch.equal(ATTACKS["identity"].apply(photos), quantize_8bit(photos))
    assert torch.equal(ATTACKS["identity"].apply_train(photos), photos)


def test_jpeg_eval_matches_pillow(photos):
    array = (quantize_8bit(photos[0]) * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=60)
    expected = np.asarray(Image.open(buffer).convert("RGB"))

    attacked = ATTACKS["jpeg60"].apply(photos)[0]
    got = (attacked * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected)


def test_jpeg_quality_orders_distortion(photos):
    psnr = {q: _psnr(ATTACKS[f"jpeg{q}"].apply(photos), photos) for q in (50, 60, 75, 90)}

    assert psnr[50] < psnr[60] < psnr[75] < psnr[90]
    assert psnr[50] > 25
    assert psnr[90] < 45


def test_jpeg_train_forms_approximate_real_jpeg(photos):
    real = ATTACKS["jpeg75"].apply(photos)
    differentiable = ATTACKS["jpeg75"].apply_train(photos)
    images = quantize_8bit(photos).requires_grad_()
    straight = ATTACKS["jpeg75"].apply_train(images, jpeg_mode="straight_through")
    straight.sum().backward()

    assert _psnr(differentiable, real) > 30
    assert torch.allclose(straight, real, atol=1e-6)
    assert torch.equal(images.grad, torch.ones_like(images))


def test_invalid_jpeg_mode(photos):
    with pytest.raises(ValueError, match="jpeg_mode"):
        ATTACKS["jpeg75"].apply_train(photos, jpeg_mode="fast")


def test_brightness_and_contrast_values():
    flat = torch.full((1, 3, 16, 16), 0.5)
    flat[..., :8] = 0.25

    assert torch.allclose(ATTACKS["brightness+30"].apply_train(flat), flat * 1.3)
    assert torch.allclose(ATTACKS["brightness-30"].apply_train(flat), flat * 0.7)
    # Mean luma 0.375: contrast +30 % maps 0.25 -> 0.2125 and 0.5 -> 0.5375.
    contrasted = ATTACKS["contrast+30"].apply_train(flat)
    assert torch.allclose(contrasted[..., :8], torch.tensor(0.2125))
    assert torch.allclose(contrasted[..., 8:], torch.tensor(0.5375))


def test_crop_eval_is_centred(photos):
    cropped = ATTACKS["crop75"].apply(photos)
    top, left = (96 - 83) // 2, (128 - 111) // 2

    assert torch.equal(cropped, quantize_8bit(photos)[..., top : top + 83, left : left + 111])


def test_noise_strength(photos):
    for sigma in (0.01, 0.02, 0.05):
        residual = ATTACKS[f"noise{sigma}"].apply_train(photos, np.random.default_rng(1)) - photos
        # Clipping at 0 and 1 lowers the spread a little.
        assert 0.8 * sigma < residual.std() < 1.05 * sigma


def test_random_train_attack_is_seeded(photos):
    first = [random_train_attack(photos, np.random.default_rng(s))[1] for s in range(40)]
    second = [random_train_attack(photos, np.random.default_rng(s))[1] for s in range(40)]
    limited = {
        random_train_attack(photos, np.random.default_rng(s), ["identity", "blur1"])[1]
        for s in range(20)
    }

    assert first == second
    assert len(set(first)) > 10
    assert limited == {"identity", "blur1"}


def test_random_train_attack_rejects_unknown_name(photos):
    with pytest.raises(ValueError, match="unknown attacks"):
        random_train_attack(photos, np.random.default_rng(0), ["jpeg10"])


def test_attack_rejects_bad_images():
    with pytest.raises(ValueError, match="B, 3, H, W"):
        ATTACKS["blur1"].apply(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        ATTACKS["blur1"].apply(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
