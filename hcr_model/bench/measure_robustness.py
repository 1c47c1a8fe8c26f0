"""Robustness: bit accuracy and exact-payload rate, clean and under each attack.

Each marked copy from the imperceptibility section is attacked with the
evaluation form of `ATTACKS` at its own size (a resize or crop returns a new
size), then read back:
- `hcr`: the carrier reads the canonical grid of the received image, and
  where that finds no watermark, reads it again after the crop search of
  `watermark.sync` (as the audit does). Bit
  accuracy is over the 256 raw carrier bits. A payload counts as exact when
  the codec decodes it valid (ECC and MAC) with the embedded hidden code.
- `hcr-32` and the peers: bit accuracy over 32 bits, exact = all 32 right.
A peer cannot read an attacked image under 256 x 256 pixels (`resize0.5` of
a small photo): such reads count as unreadable, are left out of the bit
accuracy and count as misses in the exact rate.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from hcr_model.bench.measure_context import BATCH, BenchContext, apply_attack, canonical_stack, mean_of
from hcr_model.bench.measure_imperceptibility import MarkedSet, marked_sets
from hcr_model.watermark.reading import read_received

logger = logging.getLogger(__name__)


def _read_carrier(ctx: BenchContext, carrier, images: list[np.ndarray]) -> np.ndarray:
    """(B, N) soft bits of `images`, read as the audit reads them (canonical grid, then the crop search)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            chunk = images[start : start + BATCH]
            canonical = canonical_stack(chunk, ctx.resolution, ctx.device)
            out.append(read_received(carrier, canonical, chunk).extraction.soft_bits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, carrier.n_bits), np.float32)


def _score_hcr(ctx: BenchContext, marked_set: MarkedSet, received: list[np.ndarray]) -> dict:
    soft = _read_carrier(ctx, ctx.carrier, received)
    accuracies, exact = [], []
    for row, index, bits in zip(soft, marked_set.indices, marked_set.bits):
        accuracies.append(float(((row > 0).astype(np.uint8) == bits).mean()))
        decoded = ctx.codec.decode(row)
        exact.append(bool(decoded.payload_valid and np.array_equal(decoded.code_bits, ctx.protected[index].code_bits)))
    return {"bit_accuracy": mean_of(accuracies), "exact_rate": float(np.mean(exact)), "unreadable": 0}


def _score_hcr32(ctx: BenchContext, marked_set: MarkedSet, received: list[np.ndarray]) -> dict:
    soft = _read_carrier(ctx, ctx.cache["carrier32"], received)
    matches = [((row > 0).astype(np.uint8) == bits) for row, bits in zip(soft, marked_set.bits)]
    return {
        "bit_accuracy": mean_of([m.mean() for m in matches]),
        "exact_rate": float(np.mean([m.all() for m in matches])),
        "unreadable": 0,
    }


def _score_learned(ctx: BenchContext, marked_set: MarkedSet, received: list[np.ndarray]) -> dict:
    """Score the learned backend, which reads the canonical grid only because it has no crop search."""
    model = ctx.models.learned_watermark
    soft = []
    with torch.inference_mode():
        for start in range(0, len(received), BATCH):
            canonical = canonical_stack(received[start : start + BATCH], ctx.resolution, ctx.device)
            soft.append(model.extract(canonical).soft_bits.float().cpu().numpy())
    matches = [((row > 0).astype(np.uint8) == bits) for row, bits in zip(np.concatenate(soft), marked_set.bits)]
    return {
        "bit_accuracy": mean_of([m.mean() for m in matches]),
        "exact_rate": float(np.mean([m.all() for m in matches])),
        "unreadable": 0,
    }


def _score_peer(marked_set: MarkedSet, received: list[np.ndarray]) -> dict:
    from hcr_model.bench.peers import Peer

    peer = Peer(marked_set.method)
    accuracies, exact, unreadable = [], [], 0
    for image, bits in zip(received, marked_set.bits):
        try:
            decoded = peer.extract(image)
        except ValueError:
            unreadable += 1
            exact.append(False)
            continue
        accuracies.append(float((decoded == bits).mean()))
        exact.append(bool((decoded == bits).all()))
    return {"bit_accuracy": mean_of(accuracies), "exact_rate": float(np.mean(exact)), "unreadable": unreadable}


def _attacks_for(ctx: BenchContext, method: str) -> list[str]:
    if method == "rivaGan" and ctx.config.rivagan_attacks:
        return [name for name in ctx.config.attacks if name in ctx.config.rivagan_attacks]
    return list(ctx.config.attacks)


def measure(ctx: BenchContext) -> dict:
    sets, skipped = marked_sets(ctx)
    rows = []
    for marked_set in sets:
        for attack in _attacks_for(ctx, marked_set.method):
            received = [apply_attack(attack, image) for image in marked_set.marked]
            if marked_set.method == "hcr":
                scores = _score_hcr(ctx, marked_set, received)
            elif marked_set.method == "hcr-32":
                scores = _score_hcr32(ctx, marked_set, received)
            elif marked_set.method == "learned":
                scores = _score_learned(ctx, marked_set, received)
            else:
                scores = _score_peer(marked_set, received)
            rows.append({"method": marked_set.method, "attack": attack, "images": len(received), **scores})
            logger.info("robustness %s %s: %s", marked_set.method, attack, scores)

    notes = [f"{s.method}: {s.note}" for s in sets if s.note]
    capped = [s.method for s in sets if s.method == "rivaGan" and ctx.config.rivagan_attacks]
    if capped:
        notes.append(f"rivaGan read under {', '.join(_attacks_for(ctx, 'rivaGan'))} only")
    notes += [f"{name} skipped: {reason}" for name, reason in skipped.items()]
    return {"rows": rows, "notes": notes}
