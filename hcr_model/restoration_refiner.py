"""A small U-Net that refines the restored region after the inpainting blend.

The restoration so far is fixed arithmetic: the Transformer's decoded region,
shifted to match the authentic pixels at the mask edge (`recovery.composite`),
then blended with Telea inpainting by distance from the edge
(`restoration_blend`). Neither step looks at the picture: the decode is
blurry and its colours drift, and the blend weight depends on distance only.
The refiner takes the authentic pixels around the hole, the mask, the decoded
region and the blend as input, and predicts a correction of the blend inside
the mask.
It is trained with `python -m hcr_model.training.refiner` to minimise the
squared error against the original photo (in-mask PSNR, what the benchmark
measures).

Input channels (B, 10, R, R), all in [0, 1]:
    received * (1 - mask)   3  authentic pixels only; edited pixels are zeroed
    mask                    1
    decoded restoration     3  `composite` output before the blend
    blended restoration     3  after `blend_with_inpainting`
Output: the blended restoration plus the predicted correction inside the
mask, the received pixels outside it (bit-identical).

NOTE: a first run (1,000 steps on one CPU thread, 2,760 cached train-split
restorations) gained only 0.003 dB of in-mask PSNR on the val split, so
weights v1 ship no refiner and the audit ends with the blend.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

IN_CHANNELS = 10
WEIGHTS_NAME = "refiner.pt"


@dataclass(frozen=True)
class RefinerConfig:
    """Widths of the U-Net's levels (each level halves the resolution), its bottleneck dilations and input downsampling."""

    widths: tuple[int, ...] = (24, 48, 96, 128)
    dilations: tuple[int, ...] = (2, 4, 8)
    # The U-Net runs at 1/downsample of the input's side and its correction is
    # upsampled bilinearly. Both restorations it corrects are smooth, and a
    # quarter of the pixels makes CPU training about four times cheaper.
    downsample: int = 2

    @classmethod
    def from_dict(cls, values: dict) -> RefinerConfig:
        """Build a config from `asdict` output, whose tuples may come back from storage as lists."""
        return cls(**{name: tuple(value) if isinstance(value, list | tuple) else value for name, value in values.items()})


def _conv(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation), nn.GELU())


class RestorationRefiner(nn.Module):
    """U-Net over the 10 input channels that predicts a (B, 3, R, R) correction of the blend.

    R must be a multiple of `multiple`. The last layer starts at zero, so an
    untrained refiner returns the blend unchanged.
    """

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig()
        widths = self.config.widths
        self.stem = nn.Sequential(_conv(IN_CHANNELS, widths[0]), _conv(widths[0], widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), nn.GELU(), _conv(widths[i + 1], widths[i + 1]))
            for i in range(len(widths) - 1)
        )
        # Dilated convolutions at the coarsest level widen the view across large holes.
        self.bottleneck = nn.Sequential(*(_conv(widths[-1], widths[-1], d) for d in self.config.dilations))
        self.up = nn.ModuleList(
            nn.Sequential(_conv(widths[i + 1] + widths[i], widths[i]), _conv(widths[i], widths[i]))
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (px)."""
        return 2 ** (len(self.config.widths) - 1) * self.config.downsample

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return the (B, 3, R, R) correction for (B, 10, R, R) inputs."""
        size = inputs.shape[-2:]
        if self.config.downsample > 1:
            inputs = F.avg_pool2d(inputs, self.config.downsample)
        skips = [self.stem(inputs)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.bottleneck(skips.pop())
        for up in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        correction = self.head(x)
        if self.config.downsample > 1:
            correction = F.interpolate(correction, size=size, mode="bilinear", align_corners=False)
        return correction


def refiner_inputs(received: torch.Tensor, decoded: torch.Tensor, blended: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stack the refiner's (B, 10, R, R) input from images (B, 3, R, R) in [0, 1] and a (B, 1, R, R) bool mask."""
    keep = (~mask).to(received.dtype)
    return torch.cat([received * keep, mask.to(received.dtype), decoded, blended], dim=1)


def refine(
    model: RestorationRefiner, received: torch.Tensor, decoded: torch.Tensor, blended: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Return the refined restoration (B, 3, R, R): corrected blend inside the mask, `received` outside it."""
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    weights_dtype = next(model.parameters()).dtype
    correction = model(refiner_inputs(received, decoded, blended, mask).to(weights_dtype)).to(blended.dtype)
    inner = (blended + correction).clamp(0.0, 1.0)
    return torch.where(mask.expand_as(received), inner, received)


def save_refiner(model: RestorationRefiner, path: str | Path, metadata: dict | None = None) -> None:
    """Write the weights, the config and free-form metadata (training command, metrics) to one file."""
    payload = {"config": asdict(model.config), "state_dict": model.state_dict(), "metadata": metadata or {}}
    torch.save(payload, Path(path))


def load_optional_refiner(folder: Path, device: torch.device) -> RestorationRefiner | None:
    """Load `folder`/refiner.pt onto `device`, or return None when the weights folder has none."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        logger.info("no %s in %s: restorations end with the inpainting blend", WEIGHTS_NAME, folder)
        return None
    return load_refiner(path).to(device)


def load_refiner(path: str | Path, map_location: str | torch.device = "cpu") -> RestorationRefiner:
    """Load a refiner saved by `save_refiner`, in eval mode."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    model = RestorationRefiner(RefinerConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    logger.info("loaded restoration refiner from %s", path)
    return model
