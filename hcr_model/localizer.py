"""Learned tamper localizer: per-pixel tamper probability from image + evidence.

The watermark carrier checks every 8×8 block against the payload and returns a
block-level disagreement map (≈0 intact, ≈0.5 replaced). That map is coarse
(R/8 per side) and blind to edits that keep the watermark (a light local
blur, a recolour). The localizer fuses it with the received pixels in a small
U-Net and returns per-pixel logits at the working resolution R.

The binary mask uses a threshold calibrated on the validation split, and an
image counts as edited only when its mask covers at least ``min_fraction`` of
the pixels. Both numbers live inside the weight file, next to a description of
the data they were calibrated on (see ``hcr_model/weights/v1/localizer.md``).
The file also stores a lower ``mask_threshold`` with the best validation F1,
for drawing the mask of an image already judged edited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hcr_model.imaging import CLIP_HIGH, CLIP_LOW

logger = logging.getLogger(__name__)

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
WEIGHT_FILE_FORMAT = "hcr-localizer/1"

# The carrier's evidence map has one cell per 8×8 block of the canonical grid.
EVIDENCE_STRIDE = 8



@dataclass(frozen=True)
class LocalizerConfig:
    """Architecture of the localizer (stored in the weight file)."""

    widths: tuple[int, ...] = (16, 32, 48, 64)  # channels at R/2, R/4, R/8, R/16
    evidence_stride: int = EVIDENCE_STRIDE  # pixels per evidence cell


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.SiLU(inplace=True),
    ]


def _block(in_channels: int, out_channels: int, depth: int = 2) -> nn.Sequential:
    layers = _conv(in_channels, out_channels)
    for _ in range(depth - 1):
        layers += _conv(out_channels, out_channels)
    return nn.Sequential(*layers)


class Localizer(nn.Module):
    """U-Net over (image, upsampled evidence) with the raw evidence re-injected at R/8.

    Input: ``x`` (B, 3, H, W) in [0, 1] and ``evidence`` (B, 1, H/8, W/8) in
    [0, 1]. H and W are multiples of 16: 256 in the audit, smaller crops in
    training. Output: tamper logits (B, 1, H, W).

    Global damage (strong blur, heavy JPEG) raises the evidence everywhere,
    up to the ≈0.5 of replaced content, so the network also gets the
    evidence relative to the image's median cell (its ``background``). Edits
    cover well under half of an image, so the median is an intact level.

    The network never convolves at full resolution, which keeps it cheap on
    CPU. A pixel-unshuffle stem folds each 2×2 patch into channels at H/2.
    A pixel-shuffle head unfolds 4 logits per H/2 cell back to one logit per
    pixel, so edges still land on single pixels.
    """

    def __init__(self, config: LocalizerConfig | None = None) -> None:
        super().__init__()
        self.config = config or LocalizerConfig()
        w = self.config.widths
        if len(w) != 4:
            raise ValueError(f"LocalizerConfig.widths needs 4 entries (R/2 .. R/16), got {w}")
        if self.config.evidence_stride != 8:
            raise ValueError("the R/8 skip expects evidence_stride == 8")

        # Input channels per pixel, ×4 after the 2×2 unshuffle: RGB centred
        # on 0, the upsampled evidence, a high-pass of the luma (image minus
        # its 3×3 mean) that shows local blur and resampling, the upsampled
        # evidence minus the background, and the share of clipped channels.
        # Brightness and contrast changes wipe the watermark where they clip,
        # so evidence there is weak proof of an edit.
        self.enc1 = _block(4 * 7, w[0])  # H/2
        self.enc2 = _block(w[0], w[1])  # H/4
        # +3 at H/8: evidence, evidence - background and the background, on the native block grid.
        self.enc3 = _block(w[1] + 3, w[2])
        self.bottleneck = _block(w[2], w[3])  # H/16

        self.dec3 = _block(w[3] + w[2] + 3, w[2])
        self.dec2 = _block(w[2] + w[1], w[1], depth=1)
        self.dec1 = _block(w[1] + w[0], w[0], depth=1)
        self.head = nn.Conv2d(w[0], 4, 1)  # 4 = the 2×2 pixels of each H/2 cell

    def forward(self, x: torch.Tensor, evidence: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        """Return tamper logits (B, 1, H, W).

        ``background`` (B,) is the median of the whole image's evidence map.
        It defaults to the median of ``evidence``, which is right for whole
        images. Callers that pass crops must pass the whole image's median.
        """
        b, _, h, w = x.shape
        stride = self.config.evidence_stride
        if h % 16 or w % 16:
            raise ValueError(f"image side must be a multiple of 16, got {h}×{w}")
        if evidence.shape != (b, 1, h // stride, w // stride):
            raise ValueError(
                f"evidence must be (B, 1, H/{stride}, W/{stride}) = {(b, 1, h // stride, w // stride)}, "
                f"got {tuple(evidence.shape)}"
            )
        evidence = evidence.to(x.dtype)
        if background is None:
            background = evidence_background(evidence)
        background = background.to(x.dtype).view(b, 1, 1, 1)
        relative = evidence - background
        background_map = background.expand_as(evidence)

        luma = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        high_pass = luma - F.avg_pool2d(luma, 3, stride=1, padding=1, count_include_pad=False)
        evidence_full = F.interpolate(evidence, size=(h, w), mode="bilinear", align_corners=False)
        relative_full = evidence_full - background
        clipped = ((x >= CLIP_HIGH) | (x <= CLIP_LOW)).to(x.dtype).mean(dim=1, keepdim=True)
        inputs = torch.cat([x - 0.5, evidence_full, 4.0 * high_pass, relative_full, clipped], dim=1)  # (B, 7, H, W)

        e1 = self.enc1(F.pixel_unshuffle(inputs, 2))  # (B, w0, H/2, W/2)
        e2 = self.enc2(F.max_pool2d(e1, 2))  # (B, w1, H/4, W/4)
        block_inputs = torch.cat([evidence, relative, background_map], dim=1)  # (B, 3, H/8, W/8)
        e3 = self.enc3(torch.cat([F.max_pool2d(e2, 2), block_inputs], dim=1))  # (B, w2, H/8, W/8)
        bottom = self.bottleneck(F.max_pool2d(e3, 2))  # (B, w3, H/16, W/16)

        d3 = self.dec3(torch.cat([_upsample(bottom), e3, block_inputs], dim=1))  # (B, w2, H/8, W/8)
        d2 = self.dec2(torch.cat([_upsample(d3), e2], dim=1))  # (B, w1, H/4, W/4)
        d1 = self.dec1(torch.cat([_upsample(d2), e1], dim=1))  # (B, w0, H/2, W/2)
        return F.pixel_shuffle(self.head(d1), 2)  # (B, 1, H, W)


def evidence_background(evidence: torch.Tensor) -> torch.Tensor:
    """Return the median cell of each (B, 1, h, w) evidence map, shape (B,)."""
    return evidence.flatten(1).median(dim=1).values


def _upsample(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)


@dataclass
class LocalizerWeights:
    """A loaded localizer with its calibrated decision rule.

    ``threshold`` turns probabilities into the binary mask. ``min_fraction``
    is the smallest share of mask pixels that counts as an edit: untouched
    and globally processed validation images stay below it.
    """

    model: Localizer
    threshold: float
    min_fraction: float
    version: str
    calibration: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def mask_threshold(self) -> float:
        """Threshold with the best validation pixel F1, lower than ``threshold``.

        Use it only to draw the mask of an image that ``threshold`` and
        ``min_fraction`` already judged edited: at this threshold a few
        untouched images get large false regions.
        """
        return float(self.calibration.get("mask_threshold", self.threshold))

    def predict(self, x: torch.Tensor, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (probability (B,1,H,W), mask (B,1,H,W) bool): probability > the calibrated threshold."""
        return predict_mask(self.model, x, evidence, threshold=self.threshold)

    def is_edited(self, mask: torch.Tensor) -> torch.Tensor:
        """Return (B,) bool: whether each mask covers at least ``min_fraction`` of its pixels."""
        return mask.flatten(1).float().mean(dim=1) >= self.min_fraction


@torch.inference_mode()
def predict_mask(
    model: Localizer | LocalizerWeights,
    x: torch.Tensor,
    evidence: torch.Tensor,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Localize edits in a batch.

    ``x`` is (B, 3, H, W) in [0, 1], ``evidence`` (B, 1, H/8, W/8). Returns the
    tamper probability (B, 1, H, W) float32 and the mask (B, 1, H, W) bool,
    True where the probability exceeds the threshold (as the audit compares).
    With ``LocalizerWeights`` the calibrated threshold is the default; a bare
    ``Localizer`` needs an explicit ``threshold``.
    """
    if isinstance(model, LocalizerWeights):
        threshold = model.threshold if threshold is None else threshold
        model = model.model
    if threshold is None:
        raise ValueError("threshold is required with a bare Localizer; load one with load_localizer()")

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(x.to(device), evidence.to(device))
    finally:
        model.train(was_training)
    probability = torch.sigmoid(logits.float())
    return probability, probability > threshold


def weights_path(version: str = "v1") -> Path:
    """Return the path of the shipped localizer weights for ``version``."""
    return WEIGHTS_ROOT / version / "localizer.pt"


def save_localizer(
    path: str | Path,
    model: Localizer,
    *,
    threshold: float,
    min_fraction: float,
    version: str,
    calibration: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write the weights, the decision rule and its calibration record to one file."""
    state = {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    record = {
        "format": WEIGHT_FILE_FORMAT,
        "version": version,
        "config": {"widths": list(model.config.widths), "evidence_stride": model.config.evidence_stride},
        "state_dict": state,
        "threshold": float(threshold),
        "min_fraction": float(min_fraction),
        "calibration": calibration,
        "metrics": metrics or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(record, tmp)
    tmp.replace(path)


def load_localizer(
    version: str | Path = "v1",
    *,
    device: str | torch.device = "cpu",
) -> LocalizerWeights:
    """Load the localizer and its calibrated threshold and ``min_fraction``.

    ``version`` names a shipped version (``hcr_model/weights/<version>/localizer.pt``)
    or, as a ``Path`` or a string ending in ``.pt``, a weight file. Raises
    ``FileNotFoundError`` when the file is missing and ``ValueError`` when it
    is not a localizer weight file.
    """
    is_path = isinstance(version, Path) or str(version).endswith(".pt")
    file = Path(version) if is_path else weights_path(str(version))
    if not file.is_file():
        raise FileNotFoundError(
            f"localizer weights not found: {file}; train them with `hcr train localizer --export {file}`"
        )
    record = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != WEIGHT_FILE_FORMAT:
        raise ValueError(f"{file} is not a localizer weight file (expected format {WEIGHT_FILE_FORMAT!r})")

    config = LocalizerConfig(
        widths=tuple(record["config"]["widths"]),
        evidence_stride=int(record["config"]["evidence_stride"]),
    )
    model = Localizer(config)
    model.load_state_dict(record["state_dict"])
    model.to(device).eval()
    logger.info(
        "loaded localizer %s from %s (threshold %.3f, min_fraction %.4f)",
        record["version"],
        file,
        record["threshold"],
        record["min_fraction"],
    )
    return LocalizerWeights(
        model=model,
        threshold=float(record["threshold"]),
        min_fraction=float(record["min_fraction"]),
        version=str(record["version"]),
        calibration=dict(record.get("calibration", {})),
        metrics=dict(record.get("metrics", {})),
    )
