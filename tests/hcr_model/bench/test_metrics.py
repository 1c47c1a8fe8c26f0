"""Tests of the benchmark metrics on inputs with known results."""

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from hcr_model.bench.metrics import (
    bit_accuracy,
    exact_rate,
    false_positive_rate,
    masked_psnr,
    masked_ssim,
    pixel_auc,
    pixel_f1,
    pixel_iou,
    psnr,
    ssim,
    top1_accuracy,
)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    arrays = [
        cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
        for photo in (data.astronaut(), data.coffee())
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def _square_mask(top: int, left: int, size: int, side: int = 10) -> torch.Tensor:
    mask = torch.zeros(side, side, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_psnr_and_ssim_identical(photos):
    assert torch.isinf(psnr(photos, photos)).all()
    assert torch.allclose(ssim(photos, photos), torch.ones(2, dtype=torch.float64))


def test_psnr_known_value(photos):
    # A uniform error of 0.01 gives MSE 1e-4, so PSNR = 40 dB.
    shifted = photos.clamp(0.02, 0.98) + 0.01
    expected = torch.full((2,), 40.0, dtype=torch.float64)

    assert torch.allclose(psnr(shifted, photos.clamp(0.02, 0.98)), expected, atol=1e-3)


def test_ssim_drops_with_noise(photos):
    generator = torch.Generator().manual_seed(0)
    noisy = (photos + 0.1 * torch.randn(photos.shape, generator=generator)).clamp(0, 1)
    values = ssim(noisy, photos)

    assert values.shape == (2,)
    assert (values < 0.9).all()
    assert (values > 0.0).all()


def test_masked_psnr_ignores_outside(photos):
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:32, 16:32] = 1
    mask[1] = 0
    restored = photos.clone()
    restored[:, :, :8] = 1 - restored[:, :, :8]  # damage outside the mask only
    restored[0, :, 16:32, 16:32] = (restored[0, :, 16:32, 16:32] + 0.1).clamp(max=1)
    inside = mask[0, 0].bool()
    mse = ((restored[0][:, inside] - photos[0][:, inside]) ** 2).double().mean()

    values = masked_psnr(restored, photos, mask)
    assert values[0] == pytest.approx(float(10 * torch.log10(1 / mse)), abs=1e-4)
    assert math.isnan(values[1])
    assert torch.isinf(masked_psnr(photos, photos, mask))[0]


def test_masked_ssim(photos):
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[0, 20:40, 20:40] = True
    damaged = photos.clone()
    damaged[0, :, 20:40, 20:40] = 0.5

    assert masked_ssim(photos, photos, mask)[0] == pytest.approx(1.0)
    assert masked_ssim(damaged, photos, mask)[0] < 0.5
    assert math.isnan(masked_ssim(photos, photos, mask)[1])


def test_bit_accuracy_and_exact_rate():
    expected = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    decoded = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]])

    assert bit_accuracy(decoded, expected).tolist() == [1.0, 0.75, 0.0]
    assert exact_rate(decoded, expected) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="bit shapes differ"):
        bit_accuracy(decoded[:, :3], expected)


def test_pixel_f1_iou_known_pair():
    # Two 4x4 squares overlapping in a 2x4 strip: tp 8, fp 8, fn 8.
    pred = _square_mask(0, 0, 4)[None]
    target = _square_mask(2, 0, 4)[None]

    assert pixel_f1(pred, target).item() == pytest.approx(0.5)
    assert pixel_iou(pred, target).item() == pytest.approx(8 / 24)


def test_pixel_f1_iou_edge_cases():
    empty = torch.zeros(1, 1, 10, 10)
    square = _square_mask(2, 2, 5)[None, None].float()

    assert pixel_f1(square, square).item() == 1.0
    assert pixel_iou(square, square).item() == 1.0
    assert pixel_f1(empty, empty).item() == 1.0
    assert pixel_iou(empty, empty).item() == 1.0
    assert pixel_f1(empty, square).item() == 0.0
    assert pixel_iou(square, empty).item() == 0.0


def test_pixel_metrics_threshold_probabilities():
    probabilities = _square_mask(0, 0, 4)[None].float() * 0.7
    target = _square_mask(0, 0, 4)[None]

    assert pixel_f1(probabilities, target).item() == 1.0
    assert pixel_f1(probabilities, target, threshold=0.8).item() == 0.0


def test_pixel_auc():
    target = _square_mask(0, 0, 5)[None]
    perfect = target.double() * 3 - 1  # logits
    inverted = 1 - target.double()
    batch_scores = torch.cat([perfect, inverted, perfect])
    batch_target = torch.cat([target, target, torch.zeros_like(target)])

    values = pixel_auc(batch_scores, batch_target)
    assert values[0].item() == pytest.approx(1.0)
    assert values[1].item() == pytest.approx(0.0)
    assert math.isnan(values[2])


def test_false_positive_rate():
    pred = torch.zeros(2, 1, 10, 10)
    pred[1, 0, :5] = 0.9

    assert false_positive_rate(pred).tolist() == [0.0, 0.5]


def test_top1_accuracy_cosine():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    gallery_labels = ["cat", "dog", "fish"]
    # Cosine ignores length: [10, 1] is nearest to [1, 0].
    queries = torch.tensor([[10.0, 1.0], [0.1, 2.0], [-1.0, -0.1], [0.2, 1.0]])

    assert top1_accuracy(queries, gallery, ["cat", "dog", "fish", "fish"], gallery_labels) == 0.75
    assert top1_accuracy(queries, gallery, torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 2])) == 1.0
    with pytest.raises(ValueError, match="embedding sizes differ"):
        top1_accuracy(queries, gallery[:, :1], [0] * 4, [0] * 3)
