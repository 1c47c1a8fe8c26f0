import torch

from hcr_model.consistency import consistency_distance


def smooth_picture(seed: int, size: int = 64) -> torch.Tensor:
    """A random low-frequency picture (1, 3, size, size), like a coarse decode."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_identical_pictures_have_zero_distance():
    picture = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    assert torch.allclose(consistency_distance(picture, picture, mask), torch.zeros(2), atol=0.05)


def test_brightness_change_keeps_distance_small():
    picture = smooth_picture(0) * 0.6
    brighter = picture * 1.3
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    assert consistency_distance(picture, brighter, mask).item() < 0.05


def test_unrelated_pictures_are_far():
    first, second = smooth_picture(1), smooth_picture(2)
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    assert consistency_distance(first, second, mask).item() > 0.7


def test_masked_cells_are_left_out():
    code = smooth_picture(3)
    received = code.clone()
    received[..., :32, :] = smooth_picture(4)[..., :32, :]
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    assert consistency_distance(code, received, mask, grid=8).item() > 0.3

    mask[..., :32, :] = True
    assert consistency_distance(code, received, mask, grid=8).item() < 0.01


def test_full_mask_gives_zero():
    code = torch.zeros(1, 3, 32, 32)
    received = torch.ones(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    assert consistency_distance(code, received, mask).item() == 0.0
