"""Transform-domain watermark carrier: keyed spread-transform QIM on block DCT luma.

On the canonical R x R grid the luma is cut into 8 x 8 blocks (32 x 32 blocks
at R = 256). Each block carries `slots_per_block` slots. A slot projects a
keyed group of low and mid-frequency DCT coefficients of its block onto a
keyed unit vector. Dithered QIM (spread-transform dither modulation) then
puts that projection on the lattice step * (Z + dither + b / 2) for bit b. Projecting L coefficients lets the step grow by
sqrt(L) for the same distortion, so the lattice is coarse compared with the
host projection, which keeps the reading robust to the small gain changes of
JPEG, blur and resizing. The decoder needs no host: every slot reads its bit
alone, which is what makes each block a tamper witness.

A keyed permutation assigns every slot to one of the N carrier bits, so each
bit is repeated in 8 blocks spread over the whole image at the defaults (2048
slots, 256 bits). A local edit therefore removes only some repetitions of
each bit. The soft readings of a bit's repetitions are averaged with weights that
say how well blocks of similar texture still sit on the lattice. A strength
map (texture and luminance masking) moves each projection only part of the
way to its lattice point in flat or dark blocks, where the same change is
more visible.

Amplitude synchronisation: blur, resizing and contrast scale the coefficients.
The decoder tries a grid of per-frequency gains (a Gaussian blur model times
a contrast factor) and keeps the one under which the repetitions of each bit
agree best. Resizing needs nothing more, because every image is read on the
canonical grid. Protected images should be written with
`imaging.add_residual`, which keeps the luma change where a channel saturates.

Crop synchronisation: a crop shifts and rescales the canonical grid, and the
lattice fit is lost beyond ~0.25 canonical pixel of misalignment. `embed`
therefore also adds the keyed stripe template of `watermark.sync` (before the
QIM, so the QIM still lands exactly on its lattice), and `read_synchronised`
finds the crop from it and reads the blocks the crop kept.
"""

import functools
import logging
import math

import numpy as np
import torch

from hcr_model.imaging import add_residual, luma_to_rgb, rgb_to_luma
from hcr_model.keys import SecretKey
from hcr_model.watermark.base import Extraction, WatermarkBackend
from hcr_model.watermark.sync import Alignment, SyncTemplate, block_shifts, refinement_grid, render_canvases

logger = logging.getLogger(__name__)

BLOCK = 8

# watermark_score = sigmoid(z - ZSCORE_AT_THRESHOLD), z being the agreement
# between the repetitions of each carrier bit as a z-score under "no
# watermark" (see `_agreement_zscore`). Measured with scripts/measure_carrier.py
# on 64 dataset photos: unmarked photos reached z = 2.4 at most, and every
# image whose payload decoded (clean, JPEG 50-90, blur, noise, resize,
# contrast) had z > 15. A score below WATERMARK_THRESHOLD means unmarked.
ZSCORE_AT_THRESHOLD = 6.0
WATERMARK_THRESHOLD = 0.5

# Contrast gains the crop search tries (brightness changes scale the
# projections); the full read afterwards searches the fine gain grid.
SYNC_GAINS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
SYNC_LEADERS = 3  # hypotheses refined after the first read of every candidate
# Refinement passes: (offset steps in canonical pixels, relative scale steps).
SYNC_REFINEMENT = (
    ((-0.25, 0.0, 0.25), (-0.003, 0.0, 0.003)),
    ((-0.125, 0.0, 0.125), (-0.0015, 0.0, 0.0015)),
)

# (u, v) DCT positions carrying the watermark: the low band with u, v <= 2,
# plus (0, 3) and (3, 0). Frequencies u/16 cycles per canonical pixel up to
# 3/16 survive halving a 256-pixel image, Gaussian blur sigma 1 and JPEG
# quality 50 best among the sets measured (scripts/measure_carrier.py).
DEFAULT_POSITIONS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 0), (1, 1),
    (0, 2), (2, 0), (1, 2), (2, 1), (2, 2),
    (0, 3), (3, 0),
)  # fmt: skip


def _full_precision(method):
    """Run `method` in float32 even inside an autocast region.

    Projections reach ~1000 grey levels while the lattice step is 46, and a
    bfloat16 product keeps only 8 significant bits.
    """

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return method(self, x, *args, **kwargs)

    return wrapper


def dct_matrix(size: int = BLOCK, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix (size, size): coefficients = D @ block @ D.T."""
    n = torch.arange(size, dtype=torch.float64)
    k = n.view(-1, 1)
    matrix = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype)


def blocks_dct(luma: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, H/8 * W/8, 64) DCT coefficients, blocks in raster order."""
    batch, _, height, width = luma.shape
    blocks = luma.reshape(batch, height // BLOCK, BLOCK, width // BLOCK, BLOCK).permute(0, 1, 3, 2, 4)
    coefficients = matrix @ blocks @ matrix.T
    return coefficients.reshape(batch, -1, BLOCK * BLOCK)


def blocks_idct(coefficients: torch.Tensor, matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H/8 * W/8, 64) -> (B, 1, H, W): the inverse of `blocks_dct`."""
    batch = coefficients.shape[0]
    blocks = coefficients.reshape(batch, height // BLOCK, width // BLOCK, BLOCK, BLOCK)
    pixels = matrix.T @ blocks @ matrix
    return pixels.permute(0, 1, 3, 2, 4).reshape(batch, 1, height, width)


class DctCarrier(WatermarkBackend):
    """Keyed spread-transform QIM on 8 x 8 block DCT luma of the canonical grid.

    Args:
        key: the secret key; it seeds the slot groups, projections, dither and
            the slot-to-bit permutation.
        n_bits: carrier bits per image.
        resolution: canonical grid side, a multiple of 8.
        slots_per_block: slots per 8 x 8 block; the DCT positions are split
            evenly between them.
        step: QIM lattice step of a projection, in 8-bit grey levels.
        strength_floor: fraction of the way to the lattice point a slot moves
            in the flattest, darkest blocks (1.0 everywhere in textured ones).

    At full strength in every block the luma MSE is 2 slots x step^2 / 12 per
    64 pixels = 5.5 at the defaults (40.7 dB), before the ~1 grey level RMS
    of the sync template. Measured on the 41 test photos of at least 256 px
    through the full-size path, template included (`hcr bench --suite full
    --sections imperceptibility`): PSNR mean 40.9 dB, min 40.3 dB; 41.6 dB
    without the template.
    """

    # Shortest image side (pixels) at which the payload survived JPEG 75 on
    # every test photo (scripts/measure_carrier.py); smaller images are
    # protected, but their payload is fragile.
    min_reliable_side = 224

    def __init__(
        self,
        key: SecretKey,
        n_bits: int = 256,
        resolution: int = 256,
        positions: tuple[tuple[int, int], ...] = DEFAULT_POSITIONS,
        slots_per_block: int = 2,
        step: float = 46.0,
        strength_floor: float = 0.7,
        sync_template: bool = True,
    ):
        if resolution % BLOCK or resolution < BLOCK:
            raise ValueError(f"resolution must be a positive multiple of {BLOCK}, got {resolution}")
        if len(positions) % slots_per_block:
            raise ValueError(f"{len(positions)} DCT positions do not split evenly into {slots_per_block} slots")
        n_blocks = (resolution // BLOCK) ** 2
        if n_bits < 1 or n_blocks * slots_per_block < n_bits:
            raise ValueError(f"{n_blocks * slots_per_block} slots cannot carry {n_bits} bits")
        if not 0.0 < strength_floor <= 1.0:
            raise ValueError(f"strength_floor must be in (0, 1], got {strength_floor}")

        self.n_bits = n_bits
        self.resolution = resolution
        self.positions = tuple(positions)
        self.slots_per_block = slots_per_block
        self.step = float(step)
        self.strength_floor = float(strength_floor)
        self.reliability_bins = 8
        self.key_id = key.key_id
        self.grid = resolution // BLOCK
        self.n_blocks = n_blocks
        self.n_slots = n_blocks * slots_per_block
        self._build_keyed_tables(key)
        self.sync = SyncTemplate(key, resolution) if sync_template else None
        self._device_cache: dict[tuple[str, torch.dtype], dict[str, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"DctCarrier(key_id={self.key_id!r}, n_bits={self.n_bits}, resolution={self.resolution}, "
            f"slots_per_block={self.slots_per_block}, step={self.step})"
        )

    # --- keyed tables -------------------------------------------------------

    def _build_keyed_tables(self, key: SecretKey) -> None:
        seed = int.from_bytes(key.derive("watermark/dct/v1")[:16], "big")
        rng = np.random.Generator(np.random.Philox(key=seed))
        n_positions = len(self.positions)
        group = n_positions // self.slots_per_block

        # Each block splits its positions into keyed groups, one per slot, and
        # projects each group on a keyed +-1/sqrt(L) vector. Disjoint groups
        # keep the slot directions orthonormal, so slots do not interfere.
        directions = np.zeros((self.n_blocks, self.slots_per_block, n_positions), dtype=np.float32)
        for block in range(self.n_blocks):
            order = rng.permutation(n_positions)
            signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n_positions)
            for slot in range(self.slots_per_block):
                members = order[slot * group : (slot + 1) * group]
                directions[block, slot, members] = signs[members] / math.sqrt(group)
        self._directions = directions  # (blocks, S, K)

        self._dither = rng.random((self.n_blocks, self.slots_per_block)).astype(np.float32)  # in lattice steps

        # Slot -> carrier bit: every bit gets floor or ceil of n_slots / n_bits
        # repetitions, scattered by a keyed permutation.
        repeats = math.ceil(self.n_slots / self.n_bits)
        assignment = np.tile(np.arange(self.n_bits), repeats)[: self.n_slots]
        self._slot_bit = rng.permutation(assignment).reshape(self.n_blocks, self.slots_per_block).astype(np.int64)
        self._bit_count = np.bincount(self._slot_bit.ravel(), minlength=self.n_bits).astype(np.float32)

        index = [u * BLOCK + v for u, v in self.positions]
        self._position_index = np.array(index, dtype=np.int64)
        self._frequency_sq = np.array([(u * u + v * v) / (2 * BLOCK) ** 2 for u, v in self.positions], dtype=np.float32)

    def _tables(self, device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        cache_key = (str(device), dtype)
        if cache_key not in self._device_cache:
            self._device_cache[cache_key] = {
                "dct": dct_matrix(BLOCK, dtype).to(device),
                "directions": torch.from_numpy(self._directions).to(device, dtype),
                "dither": torch.from_numpy(self._dither).to(device, dtype),
                "slot_bit": torch.from_numpy(self._slot_bit).to(device),
                "bit_count": torch.from_numpy(self._bit_count).to(device, dtype),
                "position_index": torch.from_numpy(self._position_index).to(device),
                "frequency_sq": torch.from_numpy(self._frequency_sq).to(device, dtype),
            }
        return self._device_cache[cache_key]

    # --- embedding ----------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"expected images (B, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")

    def block_texture(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, blocks, 64) DCT of luma -> (B, blocks) RMS of the AC coefficients outside the carrier band."""
        tables = self._tables(coefficients.device, coefficients.dtype)
        ac = coefficients.clone()
        ac[:, :, 0] = 0
        ac[:, :, tables["position_index"]] = 0
        return ac.pow(2).sum(-1).sqrt()

    def strength_map(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, blocks, 64) DCT of luma in grey levels -> (B, blocks) fraction of the QIM move to apply.

        Texture masking: the AC energy outside the carrier band (block and its
        neighbours). Luminance masking: changes are least visible in mid-to-bright
        blocks, more in dark ones. 1.0 in textured blocks, `strength_floor` in flat dark ones.
        """
        batch = coefficients.shape[0]
        texture = self.block_texture(coefficients).view(batch, 1, self.grid, self.grid)
        texture = torch.nn.functional.avg_pool2d(texture, 3, stride=1, padding=1, count_include_pad=False).view(batch, -1)
        luminance = coefficients[:, :, 0] / BLOCK  # block mean in grey levels

        texture_term = (texture / 40.0).clamp(0, 1)  # 40 grey levels of out-of-band AC counts as fully textured
        luminance_term = (luminance / 128.0).clamp(0, 1)
        masking = torch.maximum(texture_term, 0.5 * luminance_term)
        return self.strength_floor + (1.0 - self.strength_floor) * masking

    @_full_precision
    def embed(self, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Embed (B, N) bits into (B, 3, R, R) images in [0, 1]; returns the watermarked images.

        The output has the input's dtype: pass float32, because bfloat16 rounds
        the ~1-grey-level residual away.
        """
        self._check_images(x)
        bits = torch.as_tensor(bits, device=x.device)
        if bits.shape != (x.shape[0], self.n_bits):
            raise ValueError(f"expected bits ({x.shape[0]}, {self.n_bits}), got {tuple(bits.shape)}")
        if x.shape[0] == 0:
            return x.clone()

        work = x.float()
        if self.sync is not None:
            # The template goes in first: the QIM then quantizes the host with the template in it.
            work = add_residual(work, luma_to_rgb(self.sync.pattern(work.device).expand(work.shape[0], -1, -1, -1) / 255.0))
        tables = self._tables(work.device)
        luma = rgb_to_luma(work) * 255.0
        coefficients = blocks_dct(luma, tables["dct"])  # (B, blocks, 64)
        carrier = coefficients[:, :, tables["position_index"]]  # (B, blocks, K)
        projection = torch.einsum("bnk,nsk->bns", carrier, tables["directions"])

        # Dithered QIM: the nearest point of step * (Z + dither + bit / 2).
        slot_bits = bits.long()[:, tables["slot_bit"]].to(work.dtype)  # (B, blocks, S)
        offset = tables["dither"] + 0.5 * slot_bits
        target = (torch.round(projection / self.step - offset) + offset) * self.step
        strength = self.strength_map(coefficients).unsqueeze(-1)
        move = strength * (target - projection)  # (B, blocks, S)

        delta = torch.zeros_like(coefficients)
        delta[:, :, tables["position_index"]] = torch.einsum("bns,nsk->bnk", move, tables["directions"])
        residual = blocks_idct(delta, tables["dct"], self.resolution, self.resolution) / 255.0
        return add_residual(work, luma_to_rgb(residual)).to(x.dtype)

    # --- extraction ---------------------------------------------------------

    def _gain_grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, K) per-position gains, a Gaussian blur of sigma canonical pixels times a
        contrast factor, and (G,) fit penalties that grow with the distance from no change."""
        tables = self._tables(device)
        sigma_steps = torch.arange(7, device=device, dtype=torch.float32)
        sigmas = 0.25 * sigma_steps  # 0 .. 1.5 canonical pixels
        # Contrast factors 0.60..1.48 in 3 % steps, exactly 1 included: a 1 % gain
        # error already moves a textured block's projection by a tenth of a step.
        contrast_steps = torch.arange(-17, 14, device=device, dtype=torch.float32)
        contrasts = torch.exp(0.03 * contrast_steps)
        blur = torch.exp(-2 * math.pi**2 * sigmas.view(-1, 1) ** 2 * tables["frequency_sq"].view(1, -1))  # (sigmas, K)
        gains = (contrasts.view(-1, 1, 1) * blur.unsqueeze(0)).reshape(-1, len(self.positions))

        # Resizing to and from the canonical grid attenuates only the residual
        # (by 5-10 %), not the host. So the unit gain is right even when a small
        # blur scores about as well, and on textured photos picking that blur
        # doubled the slot errors. Another gain must beat the unit gain by these
        # margins, which real blur and contrast changes exceed many times.
        penalties = (0.01 * sigma_steps.view(1, -1) + 0.004 * contrast_steps.abs().view(-1, 1)).reshape(-1)
        return gains, penalties

    def _read_slots(self, carrier: torch.Tensor, texture: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, blocks, K) carrier coefficients -> per-slot soft bits at the best gain, and the lattice fit.

        `texture` (B, blocks) ranks blocks for the reliability weights; `valid`
        (B, blocks) is 0 for blocks outside the image (after a crop).
        """
        tables = self._tables(carrier.device)
        batch = carrier.shape[0]
        gains, penalties = self._gain_grid(carrier.device)
        inverse_gains = 1.0 / gains  # (G, K)
        weights = torch.ones(carrier.shape[:2], device=carrier.device) if valid is None else valid.float()

        # projection(g) = sum_k direction_k * coefficient_k / gain_gk: one matmul over all gains.
        terms = carrier.unsqueeze(2) * tables["directions"].unsqueeze(0)  # (B, blocks, S, K)
        projections = terms @ inverse_gains.T  # (B, blocks, S, G)
        phase = projections / self.step - tables["dither"].unsqueeze(-1)  # r, in lattice steps

        # Lattice fit per gain: mean cos(4 pi r) is 1 when every projection sits
        # on the union lattice (either bit) and ~0 for unmarked content. It is
        # the presence statistic.
        slot_weights = weights.view(batch, -1, 1, 1)
        fit = (torch.cos(4 * math.pi * phase) * slot_weights).sum(dim=(1, 2))
        fit = fit / (weights.sum(dim=1, keepdim=True) * self.slots_per_block).clamp(min=1)  # (B, G)

        # The gain is chosen by how well the repetitions of each bit agree. The
        # lattice fit cannot choose it: a wrong gain that moves a textured
        # block's projection by half a step lands on the other bit's lattice and
        # still fits, but its repetitions then disagree.
        slot_soft_all = (-torch.cos(2 * math.pi * phase) * slot_weights).reshape(batch, self.n_slots, -1)
        index = tables["slot_bit"].reshape(-1)
        combined = torch.zeros(batch, self.n_bits, slot_soft_all.shape[-1], device=carrier.device).index_add_(1, index, slot_soft_all)
        consistency = combined.abs().mean(dim=1) / tables["bit_count"].mean()  # (B, G)
        best = (consistency - penalties).argmax(dim=1)
        best_fit = torch.gather(fit, 1, best.view(-1, 1))[:, 0]
        best_phase = torch.gather(phase, 3, best.view(batch, 1, 1, 1).expand(-1, self.n_blocks, self.slots_per_block, 1))[..., 0]

        slot_soft = -torch.cos(2 * math.pi * best_phase) * weights.unsqueeze(-1)  # +1 on the bit-1 lattice, -1 on the bit-0 lattice
        reliability = self._reliability(torch.cos(4 * math.pi * best_phase).mean(-1), texture, weights)
        return {
            "slot_soft": slot_soft,
            "fit": best_fit,
            "zscore": self._agreement_zscore(slot_soft),
            "weights": weights,
            "reliability": reliability,
        }

    def _agreement_zscore(self, slot_soft: torch.Tensor) -> torch.Tensor:
        """(B, blocks, S) slot readings -> (B,) z-score of the agreement between repetitions of each bit.

        T = sum over bits of (sum of its readings)^2 / sum of all squared
        readings. Without a watermark the readings of a bit are independent and
        zero-mean, so T is about 1 with standard deviation sqrt(2 / N). A
        watermark makes the repetitions agree: T reaches the repetition count
        (8). Unlike the lattice fit, a wrong lattice or a wrong gain cannot
        raise T, because it breaks the agreement.
        """
        tables = self._tables(slot_soft.device)
        batch = slot_soft.shape[0]
        flat = slot_soft.reshape(batch, -1)
        sums = torch.zeros(batch, self.n_bits, device=slot_soft.device).index_add_(1, tables["slot_bit"].reshape(-1), flat)
        ratio = sums.pow(2).sum(dim=1) / flat.pow(2).sum(dim=1).clamp(min=1e-9)
        return (ratio - 1.0) * math.sqrt(self.n_bits / 2.0)

    def _reliability(self, block_fit: torch.Tensor, texture: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, blocks) weight of each block's slots when combining repetitions.

        Which blocks an attack damages depends on the attack: blur and
        downscaling leak textured neighbours into the carrier band, JPEG
        erases weak detail in flat blocks. Blocks are binned by texture rank,
        and each bin's mean lattice fit (the share of its slots that still sit
        on the lattice, measured without knowing the bits) sets its weight.
        """
        batch, blocks = block_fit.shape
        bins = self.reliability_bins
        rank = texture.argsort(dim=1).argsort(dim=1)
        bin_index = (rank * bins) // blocks  # (B, blocks) in 0..bins-1
        total = torch.zeros(batch, bins, device=block_fit.device).scatter_add_(1, bin_index, block_fit * weights)
        count = torch.zeros(batch, bins, device=block_fit.device).scatter_add_(1, bin_index, weights)
        bin_fit = (total / count.clamp(min=1)).clamp(min=0.0, max=0.95)
        # Odds-like weight: a bin whose slots all sit on the lattice dominates, a bin at chance gets ~0.
        bin_weight = bin_fit / (1.0 - bin_fit)
        return torch.gather(bin_weight, 1, bin_index) * weights

    def _combine(self, slot_soft: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, blocks, S) slot readings -> (B, N) averaged soft bits (0 for a bit with no valid slot)."""
        tables = self._tables(slot_soft.device)
        batch = slot_soft.shape[0]
        weighted = (slot_soft * weights.unsqueeze(-1)).reshape(batch, -1)
        slot_weights = weights.unsqueeze(-1).expand(-1, -1, self.slots_per_block).reshape(batch, -1)
        index = tables["slot_bit"].reshape(-1)
        total = torch.zeros(batch, self.n_bits, device=slot_soft.device).index_add_(1, index, weighted)
        count = torch.zeros(batch, self.n_bits, device=slot_soft.device).index_add_(1, index, slot_weights)
        return total / count.clamp(min=1e-6)

    def score(self, zscore: torch.Tensor) -> torch.Tensor:
        """z-score -> watermark_score in [0, 1], WATERMARK_THRESHOLD at ZSCORE_AT_THRESHOLD."""
        return torch.sigmoid(zscore - ZSCORE_AT_THRESHOLD)

    @_full_precision
    def extract(self, x: torch.Tensor) -> Extraction:
        """Read (B, 3, R, R) images; soft bits, confidence, score and per-slot readings."""
        self._check_images(x)
        return self._read_luma(rgb_to_luma(x.float()) * 255.0)

    # --- crop synchronisation -----------------------------------------------

    @_full_precision
    def read_synchronised(self, image: torch.Tensor) -> tuple[Extraction, Alignment] | None:
        """Read a received (1, 3, H, W) image in [0, 1] at its own size, after finding its crop.

        The sync template proposes candidate alignments, each expanded by its
        whole-period offset shifts. The hypotheses whose carrier repetitions
        agree best (the z-score of `_agreement_zscore`, at a few contrast
        gains) are refined on small grids of offsets and scales, and the best
        one is read in full. The extraction lies on the protected image's
        canonical grid, without the blocks the crop removed. Returns None for
        a carrier without a sync template.
        """
        if self.sync is None:
            return None
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        centre = (width / 2, height / 2)
        luma = rgb_to_luma(image.float()) * 255.0

        # Stage 1: every candidate with each whole-period shift, read as
        # proposed. The agreement stays far above chance within 0.5 canonical
        # pixel and 0.5 % of scale of the truth (z 20-30 where the truth gives
        # 50 on clean crops), so the right hypothesis leads before refinement.
        hypotheses = [shift for candidate in self.sync.find_alignments(luma) for shift in block_shifts(candidate, width, height, self.resolution)]
        if not hypotheses:
            return None
        zscores = self._hypothesis_zscores(luma, hypotheses)
        leaders = [hypotheses[i] for i in zscores.argsort(descending=True)[:SYNC_LEADERS].tolist()]

        # Stage 2: a coarse then a fine grid around the leaders.
        best_z, best = -math.inf, None
        for hypothesis in leaders:
            for offsets, scales in SYNC_REFINEMENT:
                group = refinement_grid(hypothesis, offsets, scales, centre)
                group_z = self._hypothesis_zscores(luma, group)
                hypothesis = group[int(group_z.argmax())]
            if float(group_z.max()) > best_z:
                best_z, best = float(group_z.max()), hypothesis

        canvas, valid = render_canvases(luma, [best], self.resolution, BLOCK)
        extraction = self._read_luma(canvas, valid)
        return extraction, Alignment(best.scale_x, best.scale_y, best.offset_x, best.offset_y, float(extraction.slots["zscore"][0]))

    def _hypothesis_zscores(self, luma: torch.Tensor, hypotheses: list[Alignment], batch: int = 32) -> torch.Tensor:
        """Return the (len(hypotheses),) agreement z-scores, each the best over SYNC_GAINS."""
        tables = self._tables(luma.device)
        out = []
        for start in range(0, len(hypotheses), batch):
            canvases, valid = render_canvases(luma, hypotheses[start : start + batch], self.resolution, BLOCK)
            coefficients = blocks_dct(canvases, tables["dct"])[:, :, tables["position_index"]]
            projection = torch.einsum("bnk,nsk->bns", coefficients, tables["directions"])
            best = torch.full((len(canvases),), -math.inf, device=luma.device)
            for gain in SYNC_GAINS:
                phase = projection / (gain * self.step) - tables["dither"]
                soft = -torch.cos(2 * math.pi * phase) * valid.unsqueeze(-1)
                best = torch.maximum(best, self._agreement_zscore(soft))
            out.append(best)
        return torch.cat(out)

    def _read_luma(self, luma: torch.Tensor, valid: torch.Tensor | None = None) -> Extraction:
        """Read (B, 1, R, R) canonical luma in grey levels, leaving out the blocks where `valid` (B, blocks) is 0."""
        tables = self._tables(luma.device)
        coefficients = blocks_dct(luma, tables["dct"])
        reading = self._read_slots(coefficients[:, :, tables["position_index"]], self.block_texture(coefficients), valid)
        zscore = reading["zscore"]
        soft_bits = self._combine(reading["slot_soft"], reading["reliability"])
        return Extraction(
            soft_bits=soft_bits,
            bit_confidence=soft_bits.abs().mean(dim=1),
            watermark_score=self.score(zscore),
            slots={
                "slot_soft": reading["slot_soft"],
                "reliability": reading["reliability"],
                "zscore": zscore,
                "lattice_fit": reading["fit"],
                "valid": reading["weights"],  # (B, blocks): 0 for blocks a crop removed
            },
        )

    def evidence(self, extraction: Extraction, bits: torch.Tensor) -> torch.Tensor:
        """(B, 1, R/8, R/8): per-block disagreement of each slot with the bit `bits` predicts for it."""
        slot_soft = extraction.slots["slot_soft"]
        tables = self._tables(slot_soft.device)
        bits = torch.as_tensor(bits, device=slot_soft.device)
        expected = bits.long()[:, tables["slot_bit"]].to(slot_soft.dtype) * 2 - 1  # (B, blocks, S) in {-1, 1}
        disagreement = (1 - slot_soft * expected).mul(0.5).mean(dim=-1)
        if "valid" in extraction.slots:
            # A block a crop removed is missing, not evidence of an edit.
            disagreement = disagreement * extraction.slots["valid"]
        return disagreement.view(-1, 1, self.grid, self.grid).clamp(0, 1)
