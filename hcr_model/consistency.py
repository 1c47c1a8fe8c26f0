"""Content binding: does the hidden code in the payload belong to this image?

The hidden code's coarse decode is a blurry picture of the image it was
computed from. Outside the tampered region, that picture must match the
received image's own coarse decode; a watermark copied onto other content
does not. Both are compared on a coarse grid so that JPEG, noise and blur,
which barely move coarse colours, do not count as disagreement.
"""

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def consistency_distance(
    code_picture: torch.Tensor,
    received_picture: torch.Tensor,
    mask: torch.Tensor,
    grid: int = 16,
) -> torch.Tensor:
    """Return the mean absolute colour difference outside the mask, per image.

    code_picture, received_picture: (B, 3, R, R) in [0, 1], the coarse decodes
    of the payload's code and of the received image's own tokens.
    mask: (B, 1, R, R) bool, True where the localizer found an edit.
    Returns (B,) float in [0, 1]; 0 when the mask leaves no cell to compare.
    """
    code_cells = F.adaptive_avg_pool2d(code_picture, grid)
    received_cells = F.adaptive_avg_pool2d(received_picture, grid)
    difference = (code_cells - received_cells).abs().mean(dim=1)  # (B, grid, grid)

    # A cell touched by the mask anywhere is left out: edits explain its difference.
    masked_cells = F.adaptive_max_pool2d(mask.float(), grid)[:, 0] > 0
    keep = (~masked_cells).float()
    kept = keep.sum(dim=(1, 2))
    distance = (difference * keep).sum(dim=(1, 2)) / kept.clamp(min=1.0)
    return torch.where(kept > 0, distance, torch.zeros_like(distance))
