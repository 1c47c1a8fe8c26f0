"""Crop synchronisation for the DCT carrier: a keyed stripe template and the search for the crop.

The carrier reads 8 x 8 blocks of the canonical grid and loses the lattice
beyond about a quarter of a canonical pixel of misalignment. A resized image
needs nothing, because the canonical grid undoes the resize. A crop does not:
it moves the grid's origin and changes its scale (the received image is
squashed onto a grid that the original spread over more pixels).

The template makes both measurable. At protection, `SyncTemplate.pattern`
adds two keyed periodic stripe patterns to the canonical luma before the QIM
embedding: one that varies along x only and one along y only, each a sum of
the harmonics 5..14 of a 32-pixel period with keyed phases, about 1 grey
level RMS in all. Averaging the received image's whitened luma over its rows
(or columns) keeps the x (or y) stripes at full strength while the content
averages out, and the phase of that 1-D profile against the keyed harmonics
at a given scale gives the crop's offset modulo the period. `find_alignments`
scans the scale, keeps the strongest peaks, and returns them as candidate
alignments; the carrier then checks each candidate, with the offset's block
ambiguity and a fine grid around it, by how well the repetitions of each
carrier bit agree (`DctCarrier.read_synchronised`).

Coordinates are continuous: pixel i covers [i, i + 1). An alignment maps a
received pixel coordinate x to the canonical coordinate
u = offset_x + scale_x * x (and likewise for y).

Measured with scripts/measure_crop_sync.py on the 46 validation photos
(bit accuracy of the 256 carrier bits, share of photos at 0.97 or more):
centred crop to 75 % of the area 0.989 (98 %); crop to 70 % at random
offsets 0.985 (96 %); crop to 75 % then JPEG 75 0.986 (93 %); crop to 90 %,
JPEG 75, brightness +30 % 0.966 (87 %). The misses are photos whose texture
puts false peaks above the template's (a carved temple front). Unmarked
crops reach z = 5.2 at most. The search takes 0.35-0.45 s per image on one
thread, and 0.6-0.8 s on an unmarked image.

NOTE: the search assumes the crop kept at least half of each side and did
not rotate the image; a rotation or a crop below that reads as unmarked.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from hcr_model.keys import SecretKey

logger = logging.getLogger(__name__)

PERIOD = 32  # canonical pixels; 4 carrier blocks
HARMONICS = tuple(range(5, 15))  # 0.16-0.44 cycles per canonical pixel
AMPLITUDE = 1.0  # RMS of the whole template in 8-bit grey levels

# The search sees the received image at SEARCH_SIDE x SEARCH_SIDE pixels. It
# covers crops down to MIN_SIDE_FRACTION of each side (a quarter of the area
# at 0.5) and slight enlargements (up to 1 / MAX_SIDE_FRACTION).
SEARCH_SIDE = 256
MIN_SIDE_FRACTION = 0.5
MAX_SIDE_FRACTION = 1.03
SCALE_STEP = 0.0005  # relative step of the scale scan
SCALE_SEPARATION = 0.005  # peaks of the scale scan closer than this (relative) are one peak
OFFSET_STEP = 0.125  # canonical pixels
OFFSET_SEPARATION = 2.0  # canonical pixels between two offset candidates of one axis

# Whitening: a high-pass (luma minus a Gaussian blur of sigma 1 px) divided by
# the local RMS of that high-pass (sigma 4 px, plus 2 grey levels), clipped at
# 2. It weights flat regions, where the stripes stand out, above textured
# ones. Sigma 1 beat 1.5, 2 and 3 on the validation photos.
HIGHPASS_SIGMA = 1.0
LOCAL_SIGMA = 4.0
LOCAL_FLOOR = 2.0
WHITE_CLIP = 2.0


@dataclass(frozen=True)
class Alignment:
    """Received pixel coordinates -> canonical coordinates: u = offset_x + scale_x * x, v = offset_y + scale_y * y."""

    scale_x: float  # canonical pixels per received pixel
    scale_y: float
    offset_x: float  # canonical coordinate of the received image's left edge
    offset_y: float
    score: float = 0.0  # template correlation (candidates) or agreement z-score (a read)

    def shifted(self, dx: float, dy: float, relative_scale: float = 0.0, pivot: tuple[float, float] = (0.0, 0.0)) -> Alignment:
        """Move by (dx, dy) canonical pixels and scale by 1 + relative_scale around the received point `pivot` (x, y)."""
        factor = 1.0 + relative_scale
        return Alignment(
            self.scale_x * factor,
            self.scale_y * factor,
            self.offset_x + dx - self.scale_x * relative_scale * pivot[0],
            self.offset_y + dy - self.scale_y * relative_scale * pivot[1],
            self.score,
        )


class SyncTemplate:
    """The keyed stripe template of one key on the canonical R x R grid."""

    def __init__(self, key: SecretKey, resolution: int = 256, amplitude: float = AMPLITUDE):
        seed = int.from_bytes(key.derive("watermark/sync/v1")[:16], "big")
        rng = np.random.Generator(np.random.Philox(key=seed))
        self.resolution = resolution
        self.amplitude = float(amplitude)
        self.harmonics = np.array(HARMONICS, dtype=np.float64)
        self.phases = {axis: rng.random(len(HARMONICS)) * 2 * math.pi for axis in ("x", "y")}
        centres = np.arange(resolution) + 0.5
        pattern = (self.stripe(centres, "y")[:, None] + self.stripe(centres, "x")[None, :]) / math.sqrt(2)
        self._pattern = torch.from_numpy((pattern * self.amplitude).astype(np.float32)).view(1, 1, resolution, resolution)

    def stripe(self, u: np.ndarray, axis: str) -> np.ndarray:
        """Unit-RMS stripe profile at canonical coordinates `u` (any shape)."""
        angle = 2 * math.pi * np.multiply.outer(u, self.harmonics) / PERIOD + self.phases[axis]
        return np.cos(angle).sum(axis=-1) / math.sqrt(len(self.harmonics) / 2)

    def pattern(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(1, 1, R, R) template in 8-bit grey levels, to add to the canonical luma."""
        return self._pattern.to(device)

    # --- search -------------------------------------------------------------

    def find_alignments(self, luma: torch.Tensor, scales: int = 8, offsets_per_axis: int = 3) -> list[Alignment]:
        """Candidate alignments of a received (1, 1, H, W) luma in grey levels, strongest first.

        Most candidates assume a crop that keeps the aspect ratio (one scale for
        both axes, the stronger test): the `scales` strongest separated peaks of
        the summed x and y correlation, each with the `offsets_per_axis`
        strongest offsets per axis. The last ones let each axis take its own
        scale. Textured content can put a false peak above the true one, and
        the carrier's read decides between candidates.
        """
        height, width = luma.shape[-2:]
        normalised = F.interpolate(luma.float(), size=(SEARCH_SIDE, SEARCH_SIDE), mode="bicubic", align_corners=False, antialias=True)
        white = _whiten(normalised)[0, 0].double().numpy()
        ratios = _ratio_grid()  # canonical pixels per normalised pixel
        score_x = self._scan(white.mean(axis=0), ratios, "x")  # (ratios, offsets)
        score_y = self._scan(white.mean(axis=1), ratios, "y")
        best_x, best_y = score_x.max(axis=1), score_y.max(axis=1)

        pairs = [(i, i) for i in _separated_peaks(best_x + best_y, scales, SCALE_SEPARATION / SCALE_STEP)]
        separate = (int(best_x.argmax()), int(best_y.argmax()))
        if separate[0] != separate[1]:
            pairs.append(separate)

        candidates = []
        for ix, iy in pairs:
            total = float(best_x[ix] + best_y[iy])
            for ox in _circular_peaks(score_x[ix], offsets_per_axis):
                for oy in _circular_peaks(score_y[iy], offsets_per_axis):
                    candidates.append(self._alignment(ratios[ix], ratios[iy], ox, oy, width, height, total))
        return candidates

    def _scan(self, profile: np.ndarray, ratios: np.ndarray, axis: str) -> np.ndarray:
        """Correlation of a 1-D whitened profile with the stripes: (ratios, offsets).

        At ratio r a normalised pixel spans r canonical pixels, so the template
        seen at normalised coordinate x is stripe(offset + r * x). The DFT of the
        profile at frequency k * r / PERIOD, read from a finely zero-padded FFT,
        gives every offset's correlation in one product per harmonic.
        """
        centred = profile - profile.mean()
        padded = 1 << 16
        spectrum = np.fft.rfft(centred, n=padded)  # sum_x p(x) exp(-2 pi i nu x), nu = bin / padded
        frequencies = np.multiply.outer(ratios, self.harmonics) / PERIOD  # (ratios, K) cycles per normalised pixel
        position = frequencies * padded
        low = np.floor(position).astype(np.int64)
        weight = position - low
        # The spectrum is smooth at this padding: linear interpolation between bins.
        forward = spectrum[low] * (1 - weight) + spectrum[low + 1] * weight
        # sum_x p(x) exp(+2 pi i nu (x + 0.5)): pixel centres, positive exponent.
        q = np.conj(forward) * np.exp(1j * math.pi * frequencies)
        offsets = np.arange(0.0, PERIOD, OFFSET_STEP)
        rotation = np.exp(1j * (2 * math.pi * np.multiply.outer(offsets, self.harmonics) / PERIOD + self.phases[axis]))  # (O, K)
        return np.real(q @ rotation.T)

    def _alignment(self, ratio_x, ratio_y, offset_x, offset_y, width, height, score) -> Alignment:
        # One normalised pixel spans `ratio` canonical pixels and width / SEARCH_SIDE received pixels.
        return Alignment(
            scale_x=float(ratio_x * SEARCH_SIDE / width),
            scale_y=float(ratio_y * SEARCH_SIDE / height),
            offset_x=float(offset_x),
            offset_y=float(offset_y),
            score=score,
        )


def _separated_peaks(values: np.ndarray, count: int, separation: float) -> list[int]:
    """Indices of the `count` largest local maxima of `values`, each at least `separation` indices from a larger one."""
    order = np.argsort(-values)
    kept: list[int] = []
    for index in order:
        if len(kept) == count:
            break
        if all(abs(int(index) - other) >= separation for other in kept):
            kept.append(int(index))
    return kept


def _circular_peaks(values: np.ndarray, count: int) -> list[float]:
    """The `count` best offsets (canonical pixels) of one axis' correlation over the period, OFFSET_SEPARATION apart."""
    order = np.argsort(-values)
    separation = OFFSET_SEPARATION / OFFSET_STEP
    kept: list[int] = []
    for index in order:
        if len(kept) == count:
            break
        if all(min(abs(int(index) - other), len(values) - abs(int(index) - other)) >= separation for other in kept):
            kept.append(int(index))
    return [index * OFFSET_STEP for index in kept]


@functools.cache
def _ratio_grid() -> np.ndarray:
    """Canonical pixels per normalised pixel to scan: from MIN_SIDE_FRACTION to MAX_SIDE_FRACTION, log-spaced."""
    return np.exp(np.arange(math.log(MIN_SIDE_FRACTION), math.log(MAX_SIDE_FRACTION), SCALE_STEP))


def _whiten(luma: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) grey levels -> high-passed, locally normalised and clipped, same shape."""
    high = luma - kornia.filters.gaussian_blur2d(luma, _kernel(HIGHPASS_SIGMA), (HIGHPASS_SIGMA, HIGHPASS_SIGMA), border_type="reflect")
    energy = kornia.filters.gaussian_blur2d(high * high, _kernel(LOCAL_SIGMA), (LOCAL_SIGMA, LOCAL_SIGMA), border_type="reflect")
    return (high / (energy.sqrt() + LOCAL_FLOOR)).clamp(-WHITE_CLIP, WHITE_CLIP)


def _kernel(sigma: float) -> tuple[int, int]:
    side = 2 * math.ceil(3 * sigma) + 1
    return side, side


# --- geometry of a hypothesis ------------------------------------------------


def block_shifts(alignment: Alignment, width: int, height: int, resolution: int, tolerance: float = 2.0) -> list[Alignment]:
    """The template fixes the offset modulo PERIOD; every whole-period shift that keeps the
    received image inside the canonical grid (within `tolerance` canonical pixels) is a hypothesis."""
    shifts = []
    for axis_offset, extent in ((alignment.offset_x, width * alignment.scale_x), (alignment.offset_y, height * alignment.scale_y)):
        low = math.ceil((-tolerance - axis_offset) / PERIOD)
        high = math.floor((resolution + tolerance - extent - axis_offset) / PERIOD)
        shifts.append(range(low, high + 1))
    return [alignment.shifted(PERIOD * kx, PERIOD * ky) for kx in shifts[0] for ky in shifts[1]]


def render_canvases(luma: torch.Tensor, hypotheses: list[Alignment], resolution: int, block: int, margin: float = 1.0):
    """Resample a received (1, 1, H, W) luma onto the canonical grid under each hypothesis.

    Returns (B, 1, R, R) canvases (0 outside the received image) and (B, blocks)
    validity: 1 for blocks that lie inside the received image by `margin`
    canonical pixels. The image is first resized, with antialiasing, to the
    first hypothesis' scale; the hypotheses then differ from it by little, so
    the bicubic sampling that follows needs no antialiasing.
    """
    height, width = luma.shape[-2:]
    base = hypotheses[0]
    size = (max(2, round(height * base.scale_y)), max(2, round(width * base.scale_x)))
    scaled = F.interpolate(luma.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    factor_x, factor_y = size[1] / width, size[0] / height  # scaled pixels per received pixel

    device = luma.device
    centres = torch.arange(resolution, device=device, dtype=torch.float32) + 0.5
    scale_x = torch.tensor([h.scale_x for h in hypotheses], device=device).view(-1, 1)
    scale_y = torch.tensor([h.scale_y for h in hypotheses], device=device).view(-1, 1)
    offset_x = torch.tensor([h.offset_x for h in hypotheses], device=device).view(-1, 1)
    offset_y = torch.tensor([h.offset_y for h in hypotheses], device=device).view(-1, 1)

    # canonical u -> received x = (u - offset) / scale -> scaled x * factor -> [-1, 1].
    grid_x = ((centres - offset_x) / scale_x * factor_x) * 2 / size[1] - 1  # (B, R)
    grid_y = ((centres - offset_y) / scale_y * factor_y) * 2 / size[0] - 1
    batch = len(hypotheses)
    grid = torch.stack([grid_x.view(batch, 1, -1).expand(-1, resolution, -1), grid_y.view(batch, -1, 1).expand(-1, -1, resolution)], dim=-1)
    canvases = F.grid_sample(scaled.expand(batch, -1, -1, -1), grid, mode="bicubic", padding_mode="zeros", align_corners=False)

    edges = torch.arange(resolution // block, device=device, dtype=torch.float32) * block
    inside_x = (edges >= offset_x + margin) & (edges + block <= offset_x + width * scale_x - margin)  # (B, grid)
    inside_y = (edges >= offset_y + margin) & (edges + block <= offset_y + height * scale_y - margin)
    valid = (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).reshape(batch, -1).float()
    return canvases, valid


def refinement_grid(
    alignment: Alignment, offset_steps: tuple[float, ...], scale_steps: tuple[float, ...], centre: tuple[float, float]
) -> list[Alignment]:
    """Hypotheses around `alignment`: every offset step on each axis times every relative scale step.

    Scales pivot on the received image's `centre` (x, y), where the template
    fixed the offset best, so a scale step does not also shift the middle.
    """
    return [alignment.shifted(dx, dy, ds, centre) for ds in scale_steps for dx in offset_steps for dy in offset_steps]


def to_received_frame(values: torch.Tensor, alignment: Alignment, size: tuple[int, int], resolution: int) -> torch.Tensor:
    """Resample (1, C, h, w) values laid over the protected image's canonical grid onto the received one's (1, C, R, R).

    The received image of `size` (H, W), squashed onto its own canonical
    grid, covers only the crop's part of the protected grid. Received
    canonical pixel centre i + 0.5 is received pixel (i + 0.5) * W / R, and
    the alignment maps that pixel into the protected grid. Bilinear, with
    border values outside.
    """
    height, width = size
    device = values.device
    centres = torch.arange(resolution, device=device, dtype=torch.float32) + 0.5
    u = alignment.offset_x + alignment.scale_x * centres * width / resolution  # protected canonical x
    v = alignment.offset_y + alignment.scale_y * centres * height / resolution
    grid = torch.stack([(u * 2 / resolution - 1).view(1, -1).expand(resolution, -1), (v * 2 / resolution - 1).view(-1, 1).expand(-1, resolution)], dim=-1)
    return F.grid_sample(values.float(), grid.unsqueeze(0), mode="bilinear", padding_mode="border", align_corners=False).to(values.dtype)


def cropped_note(alignment: Alignment, height: int, width: int, resolution: int) -> str:
    """Name the part of the protected image that a cropped image shows, in percent of each side, for the verdict's notes."""
    left = alignment.offset_x / resolution * 100
    top = alignment.offset_y / resolution * 100
    right = (alignment.offset_x + alignment.scale_x * width) / resolution * 100
    bottom = (alignment.offset_y + alignment.scale_y * height) / resolution * 100
    return (
        f"cropped: read after crop synchronisation; the image shows x {left:.0f}-{right:.0f} %, "
        f"y {top:.0f}-{bottom:.0f} % of the protected image"
    )


def to_protected_frame(values: torch.Tensor, alignment: Alignment, size: tuple[int, int], resolution: int) -> torch.Tensor:
    """Invert `to_received_frame`: (1, C, R, R) on the received canonical grid -> (1, C, R, R) on the
    protected one, 0 outside the crop."""
    height, width = size
    device = values.device
    centres = torch.arange(resolution, device=device, dtype=torch.float32) + 0.5
    x = (centres - alignment.offset_x) / alignment.scale_x * resolution / width  # received canonical x
    y = (centres - alignment.offset_y) / alignment.scale_y * resolution / height
    grid = torch.stack([(x * 2 / resolution - 1).view(1, -1).expand(resolution, -1), (y * 2 / resolution - 1).view(-1, 1).expand(-1, resolution)], dim=-1)
    return F.grid_sample(values.float(), grid.unsqueeze(0), mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_region(alignment: Alignment, size: tuple[int, int], resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, R, R) bool: the protected canonical pixels whose centres the received image of `size` (H, W) covers."""
    height, width = size
    centres = torch.arange(resolution, device=device, dtype=torch.float32) + 0.5
    inside_x = (centres >= alignment.offset_x) & (centres <= alignment.offset_x + alignment.scale_x * width)
    inside_y = (centres >= alignment.offset_y) & (centres <= alignment.offset_y + alignment.scale_y * height)
    return (inside_y.view(-1, 1) & inside_x.view(1, -1)).view(1, 1, resolution, resolution)
