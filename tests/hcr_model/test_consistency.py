import torch

from hcr_model.consistency import consistency_distance


def test_identical_pictures_have_zero_distance():
    picture = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    assert torch.allclose(consistency_distance(picture, picture, mask), torch.zeros(2))


def test_masked_cells_are_left_out():
    code = torch.zeros(1, 3, 64, 64)
    received = torch.zeros(1, 3, 64, 64)
    received[..., :32, :] = 1.0  # the top half differs
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)

    assert consistency_distance(code, received, mask, grid=8).item() == 0.5

    mask[..., :32, :] = True
    assert consistency_distance(code, received, mask, grid=8).item() == 0.0


def test_full_mask_gives_zero():
    code = torch.zeros(1, 3, 32, 32)
    received = torch.ones(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    assert consistency_distance(code, received, mask).item() == 0.0
