"""Content binding: does the hidden code in the payload belong to this image?

The hidden code's coarse decode is a blurry picture of the image it was
computed from. Outside the tampered region, its layout must match the
received image's own coarse decode; a watermark copied onto other content
does not. Both are compared on a coarse grid by correlation, per colour
channel, so that JPEG, noise, blur and global brightness or contrast changes,
which keep the layout, do not count as disagreement.
"""

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Cells left after masking below which the comparison says nothing.
MIN_KEPT_CELLS = 8


def consistency_distance(
    code_picture: torch.Tensor,
    received_picture: torch.Tensor,
    mask: torch.Tensor,
    grid: int = 16,
) -> torch.Tensor:
    """Return 1 − the correlation of the two pictures outside the mask, per image.

    code_picture, received_picture: (B, 3, R, R) in [0, 1], the coarse decodes
    of the payload's code and of the received image's own tokens.
    mask: (B, 1, R, R) bool, True where the localizer found an edit.
    Returns (B,) float in [0, 2]: about 0 for the same content, about 1 for
    unrelated content, and 0 when fewer than MIN_KEPT_CELLS cells remain.
    """
    code_cells = F.adaptive_avg_pool2d(code_picture.float(), grid).flatten(2)  # (B, 3, grid²)
    received_cells = F.adaptive_avg_pool2d(received_picture.float(), grid).flatten(2)

    # A cell touched by the mask anywhere is left out: the edit explains its difference.
    keep = (F.adaptive_max_pool2d(mask.float(), grid).flatten(2) == 0).float()  # (B, 1, grid²)
    kept = keep.sum(dim=2)  # (B, 1)

    def centre(cells: torch.Tensor) -> torch.Tensor:
        mean = (cells * keep).sum(dim=2, keepdim=True) / kept.clamp(min=1).unsqueeze(2)
        return (cells - mean) * keep

    code_centred, received_centred = centre(code_cells), centre(received_cells)
    covariance = (code_centred * received_centred).sum(dim=2)  # (B, 3)
    spread = (code_centred.square().sum(dim=2) * received_centred.square().sum(dim=2)).sqrt()
    # The small constant keeps a flat channel (a clear sky) from amplifying noise.
    correlation = covariance / (spread + 1e-4 * kept)
    distance = 1.0 - correlation.mean(dim=1)
    enough = kept[:, 0] >= MIN_KEPT_CELLS
    return torch.where(enough, distance, torch.zeros_like(distance))
