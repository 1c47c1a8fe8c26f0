"""Imperceptibility: PSNR and SSIM of marked vs original images, hcr and its peers.

Rows, all on the images the peers accept (at least 256 x 256 pixels), at
each image's own size after rounding to uint8:
- `hcr`: the carrier with its full payload (version, hidden code, MAC, BCH);
- `hcr-32`: the same carrier configured for 32 carrier bits, a like-for-like
  row against the 32-bit peers (no payload codec: 32 raw bits);
- `dwtDct`, `dwtDctSvd`, `rivaGan`: invisible-watermark 0.2.0 at 32 bits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from hcr_model.bench.measure_context import BenchContext, embed_full_resolution, mean_of
from hcr_model.bench.metrics import psnr, ssim
from hcr_model.engine import rgb_to_tensor
from hcr_model.watermark.dct import DctCarrier

logger = logging.getLogger(__name__)

PEER_BITS = 32
PEER_MIN_PIXELS = 256 * 256  # invisible-watermark 0.2.0 rejects smaller images


@dataclass
class MarkedSet:
    """One method's marked copies of a subset of the images."""

    method: str
    indices: list[int]  # into ctx.images
    marked: list[np.ndarray]  # (H, W, 3) uint8
    bits: list[np.ndarray]  # what was embedded: carrier bits for hcr, 32 bits otherwise
    embed_seconds: float | None  # wall time of embedding the set; None when reused from elsewhere
    note: str = ""


def eligible_indices(ctx: BenchContext) -> list[int]:
    """Indices of the images every method accepts."""
    return [i for i, image in enumerate(ctx.images) if image.rgb.shape[0] * image.rgb.shape[1] >= PEER_MIN_PIXELS]


def _random_bits(ctx: BenchContext, method: str, count: int, bits: int = PEER_BITS) -> list[np.ndarray]:
    seed = [ctx.config.seed, 3, sum(method.encode())]
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 2, size=(count, bits), dtype=np.uint8))


def _hcr_sets(ctx: BenchContext, indices: list[int]) -> list[MarkedSet]:
    protected = [ctx.protected[i] for i in indices]
    full = MarkedSet("hcr", indices, [p.rgb for p in protected], [p.carrier_bits for p in protected], None)
    full.note = "full payload (version, hidden code, MAC, BCH)"

    carrier32 = DctCarrier(ctx.key, n_bits=PEER_BITS, resolution=ctx.resolution)
    bits = _random_bits(ctx, "hcr-32", len(indices))
    start = time.perf_counter()
    marked = [embed_full_resolution(carrier32, ctx.images[i].rgb, b, ctx.device) for i, b in zip(indices, bits)]
    small = MarkedSet("hcr-32", indices, marked, bits, time.perf_counter() - start, "carrier with 32 raw bits, no payload codec")
    ctx.cache["carrier32"] = carrier32
    sets = [full, small]

    learned = ctx.models.learned_watermark
    if learned is not None:
        learned.use_key(ctx.key)  # robustness reads the same object, with the same patterns
        bits = _random_bits(ctx, "learned", len(indices), learned.n_bits)
        start = time.perf_counter()
        marked = [embed_full_resolution(learned, ctx.images[i].rgb, b, ctx.device) for i, b in zip(indices, bits)]
        note = f"learned localized watermark with {learned.n_bits} raw bits, no payload codec"
        sets.append(MarkedSet("learned", indices, marked, bits, time.perf_counter() - start, note))
    return sets


def _peer_set(ctx: BenchContext, name: str, indices: list[int]) -> MarkedSet:
    from hcr_model.bench.peers import Peer

    note = ""
    cap = ctx.config.rivagan_images
    if name == "rivaGan" and cap and len(indices) > cap:
        note = f"capped at {cap} of {len(indices)} images (RivaGAN takes seconds per image on a CPU)"
        indices = indices[:cap]
    peer = Peer(name)
    bits = _random_bits(ctx, name, len(indices))
    start = time.perf_counter()
    marked = [peer.embed(ctx.images[i].rgb, b) for i, b in zip(indices, bits)]
    return MarkedSet(name, indices, marked, bits, time.perf_counter() - start, note)


def marked_sets(ctx: BenchContext) -> tuple[list[MarkedSet], dict[str, str]]:
    """Mark the eligible images with every method once; returns the sets and the peers skipped, with reasons."""
    if "marked_sets" in ctx.cache:
        return ctx.cache["marked_sets"], ctx.cache["peers_skipped"]
    indices = eligible_indices(ctx)
    sets = _hcr_sets(ctx, indices)
    skipped = {}
    for name in ctx.config.peers:
        try:
            sets.append(_peer_set(ctx, name, indices))
        except ImportError as exc:
            skipped[name] = f"invisible-watermark not importable: {exc}"
            logger.warning("peer %s skipped: %s", name, exc)
    ctx.cache["marked_sets"], ctx.cache["peers_skipped"] = sets, skipped
    return sets, skipped


def measure(ctx: BenchContext) -> dict:
    sets, skipped = marked_sets(ctx)
    rows = []
    for marked_set in sets:
        psnrs, ssims = [], []
        for index, marked in zip(marked_set.indices, marked_set.marked):
            original = rgb_to_tensor(ctx.images[index].rgb).double()
            received = rgb_to_tensor(marked).double()
            psnrs.append(float(psnr(received, original)[0]))
            ssims.append(float(ssim(received, original)[0]))
        rows.append(
            {
                "method": marked_set.method,
                "bits": len(marked_set.bits[0]) if marked_set.bits else None,
                "images": len(marked_set.indices),
                "psnr_db": mean_of(psnrs),
                "psnr_db_min": min(psnrs) if psnrs else None,
                "ssim": mean_of(ssims),
                "note": marked_set.note,
            }
        )
    excluded = len(ctx.images) - len(eligible_indices(ctx))
    notes = [f"{excluded} image(s) under 256 x 256 pixels left out: the peers reject them"] if excluded else []
    notes += [f"{name} skipped: {reason}" for name, reason in skipped.items()]
    return {"rows": rows, "notes": notes}
