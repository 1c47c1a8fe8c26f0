"""Named attack grid: an exact evaluation form and a differentiable training form.

Every attack is a chain of steps run in the order its name lists them. Two
forms exist:

- `Attack.apply(images)` is the evaluation form. It does what a user or a
  platform does to a saved image: real JPEG through Pillow on uint8, Pillow
  bicubic resizing, crops. Crop and resize return the new size, because the
  audit resizes whatever it receives to the canonical grid itself. The result
  is rounded to the 8-bit grid, as any saved image is, so `identity` is
  exactly 8-bit quantization. Noise uses a fixed seed, so `apply` is
  deterministic.
- `Attack.apply_train(images, rng)` is the training form, differentiable and
  size-preserving: kornia's differentiable JPEG, kornia blur, and for crop and
  resize the geometric change followed by a resize back to the input size
  (which is what the canonical grid does on receipt). Crop offsets and noise
  come from `rng`.

Images are float (B, 3, H, W) in [0, 1] on any device.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

# Seed of the evaluation form's noise: the evaluation grid must be reproducible.
EVAL_NOISE_SEED = 0


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round (B, 3, H, W) values in [0, 1] to the 8-bit grid, as saving a PNG does."""
    return torch.round(images.clamp(0, 1) * 255) / 255


def _to_uint8_arrays(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8 on CPU."""
    return (
        (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )


def _from_uint8_arrays(arrays: Sequence[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """Stack (H, W, 3) uint8 arrays into (B, 3, H, W) float on `like`'s device and dtype."""
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return stacked.to(device=like.device, dtype=like.dtype) / 255


def jpeg_pillow(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode each image as a real JPEG with Pillow (default 4:2:0 chroma)."""
    decoded = []
    for array in _to_uint8_arrays(images):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    return _from_uint8_arrays(decoded, images)


def jpeg_straight_through(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Real Pillow JPEG in the forward pass, identity gradient in the backward pass."""
    return images + (jpeg_pillow(images, quality) - images).detach()


@dataclass(frozen=True)
class Jpeg:
    """JPEG compression at `quality` (1-100)."""

    quality: int

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return jpeg_pillow(images, self.quality)

    def train(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        quality = torch.tensor([float(self.quality)], device=images.device, dtype=images.dtype)
        return kornia.enhance.jpeg_codec_differentiable(images, quality)


def _gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel size covering +-3 sigma."""
    return 2 * math.ceil(3 * sigma) + 1


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur with standard deviation `sigma` in pixels (reflected borders)."""

    sigma: float

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self.train(images, None)

    def train(self, images: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        size = _gaussian_kernel_size(self.sigma)
        return kornia.filters.gaussian_blur2d(
            images, (size, size), (self.sigma, self.sigma), border_type="reflect"
        )


@dataclass(frozen=True)
class GaussianNoise:
    """Additive Gaussian noise with standard deviation `sigma` in [0, 1] units, clipped."""

    sigma: float

    def _noisy(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=images.device).manual_seed(seed)
        noise = torch.randn(
            images.shape, generator=generator, device=images.device, dtype=images.dtype
        )
        return (images + self.sigma * noise).clamp(0, 1)

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self._noisy(images, EVAL_NOISE_SEED)

    def train(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self._noisy(images, int(rng.integers(0, 2**63 - 1)))


@dataclass(frozen=True)
class Resize:
    """Resizing of both sides by `scale` (Pillow bicubic, antialiased, when evaluating)."""

    scale: float

    def new_size(self, height: int, width: int) -> tuple[int, int]:
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        height, width = self.new_size(*images.shape[-2:])
        resized = [
            np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC))
            for array in _to_uint8_arrays(images)
        ]
        return _from_uint8_arrays(resized, images)

    def train(self, images: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        size = images.shape[-2:]
        resized = F.interpolate(
            images, size=self.new_size(*size), mode="bilinear", antialias=True, align_corners=False
        )
        return F.interpolate(resized, size=size, mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class Crop:
    """A crop that keeps `area` of the pixels (both sides scaled by sqrt(area)).

    The evaluation form keeps the centred window and returns it at its own
    size. The training form keeps a window at a random offset and resizes it
    back to the input size.
    """

    area: float

    def window(self, height: int, width: int) -> tuple[int, int]:
        side = math.sqrt(self.area)
        return max(1, round(height * side)), max(1, round(width * side))

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        crop_h, crop_w = self.window(height, width)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return images[..., top : top + crop_h, left : left + crop_w]

    def train(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        height, width = images.shape[-2:]
        crop_h, crop_w = self.window(height, width)
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        window = images[..., top : top + crop_h, left : left + crop_w]
        return F.interpolate(
            window, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )


@dataclass(frozen=True)
class Brightness:
    """Brightness change: every channel times `factor` (1.3 = +30 %), clipped to [0, 1]."""

    factor: float

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self.train(images, None)

    def train(self, images: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        return (images * self.factor).clamp(0, 1)


@dataclass(frozen=True)
class Contrast:
    """Contrast change: distances from each image's mean luma times `factor`, clipped.

    PIL's ImageEnhance.Contrast does the same with the mean rounded to 8 bits.
    """

    factor: float

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        return self.train(images, None)

    def train(self, images: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        luma = kornia.color.rgb_to_grayscale(images)
        mean = luma.mean(dim=(-3, -2, -1), keepdim=True)
        return (mean + self.factor * (images - mean)).clamp(0, 1)


JpegMode = Literal["differentiable", "straight_through"]
Step = Jpeg | GaussianBlur | GaussianNoise | Resize | Crop | Brightness | Contrast


@dataclass(frozen=True)
class Attack:
    """A named chain of steps; see the module docstring for the two forms."""

    name: str
    steps: tuple[Step, ...]
    description: str

    @property
    def changes_size(self) -> bool:
        """Whether the evaluation form can return another size than its input."""
        return any(isinstance(step, (Resize, Crop)) for step in self.steps)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Run the evaluation form; returns 8-bit-quantized images, maybe resized."""
        _check_images(images)
        out = quantize_8bit(images)
        for step in self.steps:
            out = quantize_8bit(step.eval(out))
        return out

    def apply_train(
        self,
        images: torch.Tensor,
        rng: np.random.Generator | None = None,
        *,
        jpeg_mode: JpegMode = "differentiable",
    ) -> torch.Tensor:
        """Run the differentiable training form; returns images of the input's size.

        `jpeg_mode` picks how JPEG steps run: "differentiable" (kornia's
        codec) or "straight_through" (real Pillow JPEG forward, identity
        gradient). Straight-through is exact and about 10x faster on CPU
        (8 images at 256 px, one thread: ~40 ms against ~400 ms forward and
        backward), so it suits training that needs no gradient through JPEG.
        """
        _check_images(images)
        if jpeg_mode not in ("differentiable", "straight_through"):
            raise ValueError(f"jpeg_mode must be 'differentiable' or 'straight_through', got {jpeg_mode!r}")
        rng = rng if rng is not None else np.random.default_rng()
        out = images
        for step in self.steps:
            if isinstance(step, Jpeg) and jpeg_mode == "straight_through":
                out = jpeg_straight_through(out, step.quality)
            else:
                out = step.train(out, rng)
        return out


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got {images.dtype}")


def _build_attacks() -> dict[str, Attack]:
    attacks = [Attack("identity", (), "no change (8-bit rounding only)")]
    for quality in (50, 60, 75, 90):
        attacks.append(Attack(f"jpeg{quality}", (Jpeg(quality),), f"JPEG quality {quality}"))
    for sigma, label in ((0.5, "0.5"), (1.0, "1"), (2.0, "2")):
        attacks.append(
            Attack(f"blur{label}", (GaussianBlur(sigma),), f"Gaussian blur sigma {label} px")
        )
    for sigma in (0.01, 0.02, 0.05):
        attacks.append(
            Attack(f"noise{sigma}", (GaussianNoise(sigma),), f"Gaussian noise sigma {sigma}")
        )
    for scale in (0.5, 0.75, 1.5):
        attacks.append(Attack(f"resize{scale}", (Resize(scale),), f"resize by {scale}"))
    for percent in (70, 75, 90):
        attacks.append(
            Attack(f"crop{percent}", (Crop(percent / 100),), f"crop keeping {percent} % of the area")
        )
    for sign, factor in (("+", 1.3), ("-", 0.7)):
        attacks.append(
            Attack(f"brightness{sign}30", (Brightness(factor),), f"brightness {sign}30 %")
        )
        attacks.append(Attack(f"contrast{sign}30", (Contrast(factor),), f"contrast {sign}30 %"))
    attacks.append(
        Attack("jpeg_resize", (Jpeg(75), Resize(0.75)), "JPEG quality 75, then resize by 0.75")
    )
    attacks.append(
        Attack(
            "crop_jpeg_brightness",
            (Crop(0.9), Jpeg(75), Brightness(1.3)),
            "crop keeping 90 % of the area, JPEG quality 75, then brightness +30 %",
        )
    )
    return {attack.name: attack for attack in attacks}


ATTACKS: dict[str, Attack] = _build_attacks()


def random_train_attack(
    images: torch.Tensor,
    rng: np.random.Generator,
    names: Sequence[str] | None = None,
    *,
    jpeg_mode: JpegMode = "differentiable",
) -> tuple[torch.Tensor, str]:
    """Apply the training form of one attack drawn uniformly from `names`.

    `names` defaults to every attack in `ATTACKS`, `identity` included. One
    attack is drawn per call and applied to the whole batch; `jpeg_mode` is
    passed to `Attack.apply_train`. Returns the attacked (B, 3, H, W) images
    and the attack's name.
    """
    names = list(names) if names is not None else list(ATTACKS)
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; expected names from ATTACKS")
    name = names[int(rng.integers(0, len(names)))]
    return ATTACKS[name].apply_train(images, rng, jpeg_mode=jpeg_mode), name
