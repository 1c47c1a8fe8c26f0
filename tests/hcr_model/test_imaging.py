import numpy as np
import pytest
import torch
from PIL import Image

from hcr_model.imaging import luma_to_rgb, resize_to, rgb_to_luma, tensor_to_uint8, to_canonical, uint8_to_tensor


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (64, 64), (300, 451), (512, 768)])
def test_to_canonical_any_size(size):
    x = torch.rand(2, 3, *size)
    canonical = to_canonical(x, 256)
    assert canonical.shape == (2, 3, 256, 256)
    assert canonical.min() >= 0
    assert canonical.max() <= 1


def test_resize_round_trip_keeps_low_frequencies():
    # A smooth image survives canonical -> full size -> canonical almost unchanged.
    ramp = torch.linspace(0, 1, 256)
    x = (0.5 + 0.4 * torch.sin(2 * torch.pi * 4 * ramp)).view(1, 1, 1, 256).expand(1, 3, 256, 256)
    back = to_canonical(resize_to(x, (512, 768)), 256)
    assert (back - x).abs().max() < 0.01


def test_resize_to_is_identity_at_same_size():
    x = torch.rand(1, 3, 32, 48)
    assert resize_to(x, (32, 48)) is x


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 1 x 1"):
        resize_to(torch.rand(1, 3, 8, 8), (0, 8))
    with pytest.raises(ValueError, match="B, C, H, W"):
        resize_to(torch.rand(3, 8, 8), (4, 4))


def test_uint8_round_trip_real_photo(photos_dir):
    rgb = np.asarray(Image.open(photos_dir / "chelsea.jpg").convert("RGB"))
    x = uint8_to_tensor(rgb)
    assert x.shape == (1, 3, rgb.shape[0], rgb.shape[1])
    assert x.dtype == torch.float32
    np.testing.assert_array_equal(tensor_to_uint8(x), rgb)


def test_grayscale_expands_to_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    x = uint8_to_tensor(gray)
    assert x.shape == (1, 3, 3, 4)
    assert torch.equal(x[0, 0], x[0, 2])


def test_uint8_rejects_other_types():
    with pytest.raises(TypeError):
        uint8_to_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        uint8_to_tensor(np.zeros((4, 4, 4), dtype=np.uint8))


def test_tensor_to_uint8_clamps_and_rounds():
    x = torch.tensor([-0.5, 0.5 / 255, 1.5 / 255, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert tensor_to_uint8(x)[0, :, 0].tolist() == [0, 0, 2, 255]


def test_luma_change_moves_only_luma():
    x = torch.rand(2, 3, 8, 8) * 0.5
    delta = torch.randn(2, 1, 8, 8) * 0.01
    changed = x + luma_to_rgb(delta)
    torch.testing.assert_close(rgb_to_luma(changed) - rgb_to_luma(x), delta, atol=1e-6, rtol=0)
    # Chroma differences (R - luma, B - luma) stay the same.
    torch.testing.assert_close(changed[:, :1] - rgb_to_luma(changed), x[:, :1] - rgb_to_luma(x), atol=1e-6, rtol=0)
