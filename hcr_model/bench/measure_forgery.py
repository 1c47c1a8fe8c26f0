"""Forgery: the copy attack, judged by the audit engine.

The attacker has one protected image and no key. They estimate its
watermark by denoising (residual = protected - filtered protected), resize
the residual to another, unprotected image's size and add it. The copy
carries image A's payload on image B's content. The audit should call it
`forged`: through a MAC failure, or through the content-binding check when
the payload survives. `authentic`, `tampered` and `unmarked` count as misses.
`authentic_rate` is reported apart: it is the share of copies the audit
accepts as genuine, the outcome the attacker wants.

A copy whose payload does not decode is still called `forged` when the
carrier's keyed sync template came along with it while the carrier's bits
did not (`hcr_model.verdict.copied_mark`). `mark_found_rate` is the share of
copies that carry any mark the audit can see: the template's high harmonics
at the copy check's z-score or the carrier's bits at the watermark threshold. The other
copies hold too little of the watermark to tell from an image that was never
protected, and read `unmarked`.

Estimators: `median3` (3 x 3 median filter), `gaussian1` (Gaussian blur,
sigma 1 px), `median3x2` (the median residual doubled, a stronger copy), and
`oracle`: protected - original, the exact watermark of an attacker who also
has the original. Even that copy need not carry a readable payload: the
QIM carrier's residual moved A's DCT projections onto its lattice, and the
same residual added to B's different projections lands off the lattice.
Pairs: image i's watermark onto image i + 1 (cyclic).
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import cv2
import numpy as np
import torch

from hcr_model.bench.measure_context import BenchContext, canonical_stack, mean_of
from hcr_model.imaging import rgb_to_luma
from hcr_model.verdict import COPY_TEMPLATE_ZSCORE
from hcr_model.watermark.dct import WATERMARK_THRESHOLD
from hcr_model.watermark.sync import HIGH_HARMONICS

logger = logging.getLogger(__name__)

_ESTIMATOR = re.compile(r"^(median3|gaussian1|oracle)(?:x(\d+(?:\.\d+)?))?$")


def estimate_watermark(protected: np.ndarray, estimator: str, original: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) float32 residual in grey levels: the estimated watermark.

    `oracle` needs `original`, the image before protection.
    """
    match = _ESTIMATOR.match(estimator)
    if match is None:
        raise ValueError(f"unknown estimator {estimator!r}; expected median3, gaussian1 or oracle, optionally with xGAIN")
    if match.group(1) == "oracle":
        if original is None:
            raise ValueError("the oracle estimate needs the original image")
        filtered = original
    elif match.group(1) == "median3":
        filtered = cv2.medianBlur(protected, 3)
    else:
        filtered = cv2.GaussianBlur(protected, (0, 0), 1.0)
    gain = float(match.group(2) or 1.0)
    return (protected.astype(np.float32) - filtered.astype(np.float32)) * gain


def copy_watermark(residual: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Add a residual, resized to the target's size, to (H, W, 3) uint8 `target`."""
    height, width = target.shape[:2]
    resized = cv2.resize(residual, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.round(target.astype(np.float32) + resized), 0, 255).astype(np.uint8)


def measure(ctx: BenchContext) -> dict:
    ctx.models.need("bundle")
    count = len(ctx.images)
    if count < 2:
        return {"rows": [], "notes": ["needs at least 2 images"]}

    rows = []
    for estimator in ctx.config.forgery_estimators:
        sources = list(range(count))
        targets = [(i + 1) % count for i in sources]
        copies = [
            copy_watermark(estimate_watermark(ctx.protected[s].rgb, estimator, ctx.images[s].rgb), ctx.images[t].rgb)
            for s, t in zip(sources, targets)
        ]
        audits = ctx.audit(copies, [f"copy-{ctx.images[t].image_id}" for t in targets])

        with torch.inference_mode():
            canonical = canonical_stack(copies, ctx.resolution, ctx.device)
            extraction = ctx.carrier.extract(canonical)
            template_z = ctx.carrier.sync.presence_zscore(rgb_to_luma(canonical) * 255.0, HIGH_HARMONICS).cpu().numpy()
        soft = extraction.soft_bits.float().cpu().numpy()
        found = (template_z >= COPY_TEMPLATE_ZSCORE) | (extraction.watermark_score.cpu().numpy() >= WATERMARK_THRESHOLD)
        accuracy = [float(((row > 0).astype(np.uint8) == ctx.protected[s].carrier_bits).mean()) for row, s in zip(soft, sources)]
        verdicts = Counter(audit.verdict for audit in audits)
        rows.append(
            {
                "estimator": estimator,
                "copies": count,
                "forged_rate": verdicts["forged"] / count,
                "authentic_rate": verdicts["authentic"] / count,
                "payload_valid_rate": float(np.mean([audit.payload_valid for audit in audits])),
                "mark_found_rate": float(found.mean()),
                "copied_bit_accuracy": mean_of(accuracy),
                "verdicts": dict(verdicts),
            }
        )
        logger.info("forgery %s: %s", estimator, dict(verdicts))
    notes = [
        "bit accuracy of the copy's carrier bits against the source's",
        f"mark found: the sync template's high harmonics at z >= {COPY_TEMPLATE_ZSCORE:g} or the carrier's watermark score >= {WATERMARK_THRESHOLD:g}",
    ]
    return {"rows": rows, "notes": notes}
