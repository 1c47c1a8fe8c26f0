"""Tokenizer: reconstruction quality against the number of scales, and codebook use per scale.

On the canonical grid of every suite image: PSNR and SSIM of
`decode(tokens, n_scales=k)` against the image for k = 1 .. K. For each
scale: the share of codebook entries used, and the perplexity of the token
histogram, exp of its entropy in nats. The perplexity is at most the
codebook size, and 1 for a collapsed scale. With few images the use is bounded by the token count,
which each row states.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from hcr_model.bench.measure_context import BATCH, BenchContext, canonical_stack, mean_of
from hcr_model.bench.metrics import psnr, ssim

logger = logging.getLogger(__name__)


def perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of a histogram of token counts."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


@torch.inference_mode()
def measure(ctx: BenchContext) -> dict:
    ctx.models.need("tokenizer")
    tokenizer = ctx.models.tokenizer
    config = tokenizer.cfg
    originals = canonical_stack([image.rgb for image in ctx.images], ctx.resolution, torch.device("cpu"))

    n_scales = len(config.scales)
    psnrs = [[] for _ in range(n_scales)]
    ssims = [[] for _ in range(n_scales)]
    counts = np.zeros((n_scales, config.codebook_size), dtype=np.int64)
    for start in range(0, len(originals), BATCH):
        batch = originals[start : start + BATCH]
        tokens = tokenizer.encode(batch.to(ctx.device))
        for k, scale_tokens in enumerate(tokens):
            counts[k] += np.bincount(scale_tokens.flatten().cpu().numpy(), minlength=config.codebook_size)
            decoded = tokenizer.decode(tokens, n_scales=k + 1).float().cpu()
            psnrs[k] += psnr(decoded, batch).tolist()
            ssims[k] += ssim(decoded, batch).tolist()

    rows = []
    for k, side in enumerate(config.scales):
        rows.append(
            {
                "scales": k + 1,
                "side": side,
                "hidden_code": k < config.hidden_scales,
                "psnr_db": mean_of(psnrs[k]),
                "ssim": mean_of(ssims[k]),
                "tokens_seen": int(counts[k].sum()),
                "codebook_used": int((counts[k] > 0).sum()),
                "usage": float((counts[k] > 0).mean()),
                "perplexity": perplexity(counts[k]),
            }
        )
    return {
        "rows": rows,
        "images": len(originals),
        "notes": [f"codebook of {config.codebook_size} entries per scale; PSNR/SSIM of the first k scales decoded"],
    }
