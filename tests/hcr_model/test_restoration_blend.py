"""Tests of the blend of decoded restorations with boundary inpainting."""

import numpy as np
import pytest
import torch

from hcr_model.restoration_blend import blend_with_inpainting, inpaint_weights


def _gradient_image(size: int = 64) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, size)
    return torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size), torch.full((size, size), 0.5)])[None]


def _square_mask(size: int = 64, lo: int = 16, hi: int = 48) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., lo:hi, lo:hi] = True
    return mask


def test_weights_fall_from_edge_to_floor():
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:56, 8:56] = True
    weights = inpaint_weights(mask, tau_px=4.0, floor=0.2)

    assert weights[0, 0] == 0.0
    assert weights[8, 30] == pytest.approx(0.2 + 0.8 * np.exp(-1 / 4.0), abs=1e-3)
    assert weights[32, 32] == pytest.approx(0.2 + 0.8 * np.exp(-24 / 4.0), abs=1e-3)


def test_pixels_outside_the_mask_unchanged():
    original = _gradient_image()
    mask = _square_mask()
    received = torch.where(mask, torch.zeros_like(original), original)
    restored = torch.where(mask, torch.full_like(original, 0.5), original)

    blended = blend_with_inpainting(restored, received, mask)

    assert torch.equal(blended[~mask.expand_as(blended)], restored[~mask.expand_as(restored)])


def test_edge_follows_the_inpainting():
    # On a smooth ramp, inpainting from the boundary is nearly exact at the
    # mask edge, while a flat grey restoration is wrong there.
    original = _gradient_image()
    mask = _square_mask()
    received = torch.where(mask, torch.zeros_like(original), original)
    restored = torch.where(mask, torch.full_like(original, 0.5), original)

    blended = blend_with_inpainting(restored, received, mask, tau_px=4.0, floor=0.0)
    ring = mask.clone()
    ring[..., 18:46, 18:46] = False  # the two pixels next to the edge
    ring = ring.expand_as(original)

    restored_error = (restored - original)[ring].abs().mean()
    blended_error = (blended - original)[ring].abs().mean()
    assert blended_error < 0.5 * restored_error


def test_empty_mask_returns_restored():
    original = _gradient_image()
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    assert torch.equal(blend_with_inpainting(original, original, mask), original)
