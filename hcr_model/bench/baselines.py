"""Blind inpainting baselines for recovery: OpenCV's Telea and Navier-Stokes methods.

They fill the mask from its surroundings alone, with no hidden code, which is
what hcr's recovery must beat on the same masks.
"""

from __future__ import annotations

import cv2
import numpy as np

# OpenCV's inpainting neighbourhood radius in pixels, at the working resolution.
DEFAULT_RADIUS = 3


def _inpaint(image: np.ndarray, mask: np.ndarray, radius: int, method: int) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {image.shape[:2]}, got {mask.shape}")
    region = mask.astype(bool)
    if not region.any():
        return image.copy()

    filled = cv2.inpaint(image, region.astype(np.uint8), radius, method)
    # Keep every pixel outside the mask as received.
    return np.where(region[..., None], filled, image)


def inpaint_telea(image: np.ndarray, mask: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Fill `mask` ((H, W), nonzero = fill) in `image` ((H, W, 3) uint8) with Telea's fast marching method."""
    return _inpaint(image, mask, radius, cv2.INPAINT_TELEA)


def inpaint_ns(image: np.ndarray, mask: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Fill `mask` ((H, W), nonzero = fill) in `image` ((H, W, 3) uint8) with the Navier-Stokes method."""
    return _inpaint(image, mask, radius, cv2.INPAINT_NS)
