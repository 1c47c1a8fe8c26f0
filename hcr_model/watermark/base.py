"""The interface every watermark backend implements.

A backend works on the canonical grid: images (B, 3, R, R) float in [0, 1],
carrier bits (B, N) uint8. The payload codec above it turns carrier bits into
a verified payload. The backend only moves bits in and out of pixels and
reports which 8 x 8 blocks disagree with the bits it expected.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch


@dataclass
class Extraction:
    """Readings of a backend from a batch of images.

    `soft_bits` combines every repetition of a carrier bit: in [-1, 1], > 0
    means 1, |value| is the reliability. `watermark_score` is 0..1, calibrated
    so that unmarked photos score low (the backend states its threshold).
    `slots` contains the backend's per-slot readings, which `evidence` compares
    against expected bits. Its keys are backend-specific.
    """

    soft_bits: torch.Tensor  # (B, N) float32
    bit_confidence: torch.Tensor  # (B,) float32, mean |soft_bits|
    watermark_score: torch.Tensor  # (B,) float32 in [0, 1]
    slots: dict[str, torch.Tensor] = field(default_factory=dict)


class WatermarkBackend(ABC):
    """Embed carrier bits into canonical images and read them back."""

    n_bits: int  # carrier bits per image (N)
    resolution: int  # canonical grid side (R)

    @abstractmethod
    def embed(self, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [0, 1] and (B, N) uint8 -> watermarked (B, 3, R, R) in [0, 1]."""

    @abstractmethod
    def extract(self, x: torch.Tensor) -> Extraction:
        """Read (B, 3, R, R) images."""

    @abstractmethod
    def evidence(self, extraction: Extraction, bits: torch.Tensor) -> torch.Tensor:
        """(B, 1, R/8, R/8) in [0, 1]: per-block disagreement with the expected (B, N) bits.

        About 0 for intact blocks and 0.5 for replaced content.
        """
