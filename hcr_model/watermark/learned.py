"""Learned localized watermark: an embedder that writes bits as a luma residual, and an extractor
that reads them back with a per-pixel detection map.

The second watermark backend, in the style of Watermark Anything and
EditGuard. It is kept beside the DCT carrier and benchmarked against it, and
it becomes the default only if it wins.

- `Embedder`: (B, 3, H, W) image and (B, N) bits -> (B, 1, H, W) luma residual
  in [-1, 1]. The bits enter as a spread-spectrum message map on the quarter
  resolution grid (each bit a fixed +-1 pattern over every position), so
  every region carries every bit and a local edit removes repetitions, not
  bits. The residual is scaled by `strength` and added to luma through
  `imaging.add_residual`, as the carrier does.
- `Extractor`: (B, 3, H, W) -> detection logits (B, 1, H/4, W/4), "this
  pixel carries the watermark", and bit logits (B, N, H/4, W/4): its estimate
  of the message map times each bit's pattern. The image's bits are the
  detection-weighted mean of the per-pixel bit logits, so edited pixels,
  which the detection map rejects, do not vote.

A first version broadcast a learned message vector instead of the fixed
patterns. Like HiDDeN, it then had to discover a code from a symmetric
start, and its bits stayed at chance for 2,400 steps on the CPU. Training
draws the patterns from `code_seed`, and `use_key` draws them from the
secret key.

Both are fully convolutional: training uses crops, the audit the canonical
grid. `hcr train watermark` (`hcr_model.training.watermark`) trains them.

NOTE: the patterns are tied to the canonical grid and there is no crop
search, so a cropped image reads at chance. The shipped model carries 64
bits, a quarter of what the payload codec needs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hcr_model.imaging import add_residual, luma_to_rgb
from hcr_model.keys import SecretKey
from hcr_model.watermark.base import Extraction, WatermarkBackend

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "learned_watermark.pt"
CODE_GRID = 64  # quarter-resolution side of the canonical 256 grid; the code patterns repeat beyond it


@dataclass(frozen=True)
class LearnedConfig:
    n_bits: int = 64
    channels: int = 32
    resolution: int = 256  # canonical grid the audit reads
    strength: float = 0.025  # residual scale at inference (luma, 0-1 range): tanh output times this
    code_seed: int = 0  # seeds the spread-spectrum code patterns

    @classmethod
    def from_dict(cls, values: dict) -> LearnedConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(8, c_out), nn.GELU())


def code_patterns(n_bits: int, height: int, width: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return the (N, height, width) +-1 spread-spectrum patterns on the quarter-resolution grid.

    Drawn once on a 64 x 64 grid (the canonical 256 grid at a quarter) and
    tiled beyond it. A training crop therefore gets the top-left part of the
    patterns that the audit reads.
    """
    generator = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 2, (n_bits, CODE_GRID, CODE_GRID), generator=generator).float() * 2 - 1
    reps_y, reps_x = -(-height // CODE_GRID), -(-width // CODE_GRID)
    return base.repeat(1, reps_y, reps_x)[:, :height, :width].to(device)


def message_map(bits: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Spread (B, N) bits over (N, h, w) patterns: the (B, 1, h, w) message map, unit variance."""
    signs = bits.float() * 2 - 1
    return torch.einsum("bn,nhw->bhw", signs, patterns).unsqueeze(1) / patterns.shape[0] ** 0.5


class Embedder(nn.Module):
    """Network from image and bits to a luma residual in [-1, 1] at the image's size (H, W multiples of 4).

    The bits enter as a spread-spectrum message map on the quarter grid
    (`message_map`). The network learns how to render that map invisibly and
    robustly in each image, not an arbitrary code, and it learned that far
    faster.
    """

    def __init__(self, config: LearnedConfig):
        super().__init__()
        c = config.channels
        self.config = config
        self.code_seed = config.code_seed
        self.stem = _block(3, c)
        self.down = nn.Sequential(_block(c, c, stride=2), _block(c, 2 * c, stride=2))
        self.mix = nn.Sequential(_block(2 * c + 1, 2 * c), _block(2 * c, 2 * c))
        self.up = nn.Sequential(nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False), _block(2 * c, c))
        self.head = nn.Sequential(_block(2 * c + 1, c), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        skip = self.stem(images * 2 - 1)
        features = self.down(skip)  # (B, 2c, H/4, W/4)
        patterns = code_patterns(self.config.n_bits, *features.shape[-2:], self.code_seed, images.device)
        message = message_map(bits, patterns)  # (B, 1, H/4, W/4)
        mixed = self.up(self.mix(torch.cat([features, message], dim=1)))
        full = F.interpolate(message, size=images.shape[-2:], mode="nearest")
        return torch.tanh(self.head(torch.cat([mixed, skip, full], dim=1)))


class Extractor(nn.Module):
    """Network from an image to (detection logits (B, 1, H/4, W/4), bit logits (B, N, H/4, W/4)).

    The network estimates the message map at each quarter-grid pixel. A
    pixel's bit logits are that estimate times each bit's pattern there.
    """

    def __init__(self, config: LearnedConfig):
        super().__init__()
        c = config.channels
        self.config = config
        self.code_seed = config.code_seed
        self.body = nn.Sequential(
            _block(3, c), _block(c, c, stride=2), _block(c, 2 * c, stride=2), _block(2 * c, 2 * c), _block(2 * c, 2 * c)
        )
        self.detect = nn.Conv2d(2 * c, 1, 1)
        self.message = nn.Conv2d(2 * c, 1, 1)
        self.gain = nn.Parameter(torch.tensor(4.0))  # logit scale of one pixel's vote

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images * 2 - 1)
        estimate = self.message(features)  # (B, 1, h, w)
        patterns = code_patterns(self.config.n_bits, *estimate.shape[-2:], self.code_seed, images.device)
        return self.detect(features), self.gain * estimate * patterns.unsqueeze(0)


def pooled_bits(detection_logits: torch.Tensor, bit_logits: torch.Tensor) -> torch.Tensor:
    """Pool (B, N, h, w) bit logits to (B, N), weighting each pixel by its detection probability from (B, 1, h, w) logits."""
    weights = torch.sigmoid(detection_logits)
    return (bit_logits * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6)


class LearnedWatermark(nn.Module, WatermarkBackend):
    """Learned backend behind the `WatermarkBackend` interface."""

    def __init__(self, config: LearnedConfig):
        super().__init__()
        self.config = config
        self.n_bits = config.n_bits
        self.resolution = config.resolution
        self.embedder = Embedder(config)
        self.extractor = Extractor(config)

    def use_key(self, key: SecretKey) -> LearnedWatermark:
        """Draw the code patterns from `key` instead of `code_seed`, and return self.

        Neither network depends on the patterns themselves: the embedder
        renders whatever message map it is given and the extractor estimates
        that map, so the patterns can be keyed after training.
        """
        seed = int.from_bytes(key.derive("watermark/learned/v1")[:8], "big") & (2**63 - 1)
        self.embedder.code_seed = self.extractor.code_seed = seed
        return self

    def residual(self, images: torch.Tensor, bits: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        """Compute the (B, 1, H, W) luma residual in image units (0-1) at `strength` (default: the config's)."""
        scale = self.config.strength if strength is None else strength
        return self.embedder(images, bits) * scale

    def embed(self, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        bits = torch.as_tensor(bits, device=x.device)
        if bits.shape != (x.shape[0], self.n_bits):
            raise ValueError(f"expected bits ({x.shape[0]}, {self.n_bits}), got {tuple(bits.shape)}")
        return add_residual(x, luma_to_rgb(self.residual(x, bits)))

    def extract(self, x: torch.Tensor) -> Extraction:
        detection, bit_logits = self.extractor(x)
        logits = pooled_bits(detection, bit_logits)
        soft = torch.tanh(logits / 2)  # the expectation of +-1 under the logit's probability
        return Extraction(
            soft_bits=soft,
            bit_confidence=soft.abs().mean(dim=1),
            watermark_score=torch.sigmoid(detection).mean(dim=(1, 2, 3)),
            slots={"detection_logits": detection, "bit_logits": bit_logits},
        )

    def evidence(self, extraction: Extraction, bits: torch.Tensor) -> torch.Tensor:
        """Return (B, 1, R/8, R/8) absence of the watermark: 1 - detection probability, averaged over each 8 x 8 block."""
        absent = 1 - torch.sigmoid(extraction.slots["detection_logits"])  # (B, 1, R/4, R/4)
        return F.avg_pool2d(absent, 2)


def save_learned(model: LearnedWatermark, path: str | Path, metrics: dict | None = None) -> None:
    """Write the weights, config and measured metrics to one file."""
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict(), "metrics": metrics or {}}, path)


def load_optional_learned(folder: str | Path, device: str | torch.device = "cpu") -> LearnedWatermark | None:
    """Load `folder`/learned_watermark.pt, or return None when the weights folder has none."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        logger.info("no %s in %s: the benchmark reads the DCT carrier only", WEIGHTS_NAME, folder)
        return None
    return load_learned(path, device)


def load_learned(path: str | Path, device: str | torch.device = "cpu") -> LearnedWatermark:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LearnedWatermark(LearnedConfig.from_dict(state["config"]))
    model.load_state_dict(state["state_dict"])
    logger.info("loaded learned watermark from %s (%d bits)", path, model.n_bits)
    return model.to(device).eval()
