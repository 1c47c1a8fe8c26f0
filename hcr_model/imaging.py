"""Tensor helpers for the canonical grid: resizing, uint8 conversion and luma.

Images are float32 RGB tensors (B, 3, H, W) in [0, 1]. Every model works on
the canonical R × R grid; non-square inputs are squashed, not padded.
"""

import numpy as np
import torch
import torch.nn.functional as F

CANONICAL_RESOLUTION = 256

# ITU-R BT.601 luma weights, the ones JPEG uses, so a luma-only watermark sits
# in the channel JPEG keeps at full resolution.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Channel values at or beyond these count as clipped (in [0, 1]; 250 and 5 of 255,
# so JPEG ringing around a clipped area still counts).
CLIP_HIGH = 250 / 255
CLIP_LOW = 5 / 255


def clipped_share(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) share of pixels with at least one clipped channel."""
    return ((x >= CLIP_HIGH) | (x <= CLIP_LOW)).any(dim=1).float().mean(dim=(1, 2))


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, H, W) to (B, C, *size) with antialiased bicubic interpolation.

    Bicubic keeps the mid frequencies that carry the watermark better than
    bilinear in a canonical-to-full-size round trip. Bicubic overshoots, so the
    result is not clamped here: a residual must keep its sign, and callers
    clamp images.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"target size must be at least 1 x 1, got {height} x {width}")
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if not x.is_floating_point():
        raise TypeError(f"expected a floating point tensor, got {x.dtype}")
    # Bicubic needs at least 2 input pixels per side on some backends; a
    # 1-pixel side is replicated first, which is what any interpolation yields.
    if x.shape[-2] == 1 or x.shape[-1] == 1:
        x = x.expand(-1, -1, max(x.shape[-2], 2), max(x.shape[-1], 2)).contiguous()
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def to_canonical(x: torch.Tensor, resolution: int = CANONICAL_RESOLUTION) -> torch.Tensor:
    """Resize an image batch (B, 3, H, W) in [0, 1] to the canonical (B, 3, R, R) grid, clamped to [0, 1]."""
    return resize_to(x, (resolution, resolution)).clamp(0.0, 1.0)


def uint8_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (H, W) uint8 -> (1, 3, H, W) float32 in [0, 1]; grayscale is expanded to RGB."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {array.shape}")
    # The copy keeps torch from sharing (and warning about) a read-only buffer, e.g. np.asarray(PIL image).
    return torch.from_numpy(np.array(array, dtype=np.uint8, order="C", copy=True)).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> (H, W, 3) uint8, clamped and rounded."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(x.shape)}")
    return x.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) BT.601 luma, same range as the input."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def luma_to_rgb(delta: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma change -> (B, 3, H, W) RGB change that moves luma by exactly that much.

    Adding the same amount to R, G and B changes luma by that amount (the BT.601
    weights sum to 1) and leaves both chroma channels unchanged.
    """
    return delta.expand(-1, 3, -1, -1)


def add_residual(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Add a watermark residual (B, 3, H, W) to images in [0, 1] and clamp, keeping its luma change.

    Plain clamping loses the residual wherever a channel saturates (a bright red
    flower, a white sky), and the watermark lives in luma. The luma that
    clamping lost moves into the channels that still have headroom, at most
    3 times the lost amount per channel. Pixels with no headroom in the needed
    direction keep the clamped value.
    """
    raw = x + residual
    out = raw.clamp(0.0, 1.0)
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    missing = ((raw - out) * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W) luma lost to clamping
    if not bool(missing.any()):
        return out
    free = torch.where(missing > 0, out < 1.0, out > 0.0).to(x.dtype)  # channels that can still move
    share = (free * weights).sum(dim=1, keepdim=True)
    limit = 3 * missing.abs()
    step = (missing / share.clamp(min=1e-3)).clamp(-limit, limit)
    return (out + step * free).clamp(0.0, 1.0)
