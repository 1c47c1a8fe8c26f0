"""Tokenizer: reconstruction quality against the number of scales, and codebook use per scale.

On the canonical grid of every suite image: PSNR and SSIM of
`decode(tokens, n_scales=k)` against the image for k = 1 .. K. For each
scale: the share of codebook entries used, and the perplexity of the token
histogram, exp of its entropy in nats. The perplexity is at most the
codebook size, and 1 for a collapsed scale. With few images the use is bounded by the token count,
which each row states.

On the test split (full suite) the section also probes the hidden code for
semantics (`code_probe`): category probes fitted on the train split's tiles
and scored on the test photos' centre tiles, for the bench's tokenizer and
for each of `probe_controls`. A control trained with `--no-distill` shows
what distillation adds. Last, encode + decode images/s on the bench's
threads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hcr_model.bench import code_probe
from hcr_model.bench.measure_context import BATCH, BenchContext, canonical_stack, mean_of
from hcr_model.bench.measure_speed import images_per_second
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
    notes = [f"codebook of {config.codebook_size} entries per scale; PSNR/SSIM of the first k scales decoded"]
    probes = _probe_rows(ctx, tokenizer, notes)
    return {
        "rows": rows,
        "images": len(originals),
        "probes": probes,
        "encode_decode_images_per_s": _encode_decode_speed(ctx, tokenizer, originals),
        "notes": notes,
    }


def _probe_rows(ctx: BenchContext, tokenizer, notes: list[str]) -> list[dict]:
    """Run the category probes of the hidden code for the bench's tokenizer and each control.

    Returns one row per tokenizer, or [] with a note where the probes cannot run.
    """
    if any(image.label is None for image in ctx.images):
        notes.append("semantic probe left out: the suite's images have no category (the full suite has)")
        return []
    from hcr_model.tokenizer import load_tokenizer, tokenizer_metadata

    resolution = tokenizer.cfg.resolution
    try:
        train = code_probe.split_tiles("train", ctx.config.probe_train_tiles, resolution)
        test = code_probe.split_tiles("test", 1, resolution)
    except FileNotFoundError as exc:  # the data set is not built (DatasetNotBuiltError)
        notes.append(f"semantic probe left out: {exc}")
        return []

    own_path = str(Path(ctx.models.folder) / "tokenizer.pt") if ctx.models.folder else None
    candidates = [("bench tokenizer", tokenizer, own_path)]
    candidates += [(path, load_tokenizer(path, device=ctx.device), path) for path in ctx.config.probe_controls]
    rows = []
    for name, model, path in candidates:
        # Weight files record whether distillation trained them; None where the file or the record is missing.
        distilled = tokenizer_metadata(path).get("distill") if path and Path(path).is_file() else None
        scores = code_probe.probe_tokenizer(model, train, {"test": test})
        rows.append({"tokenizer": name, "distill": distilled, **scores})
        logger.info("probe %s: %s", name, scores)
    notes.append(
        f"probes fitted on {ctx.config.probe_train_tiles} fixed tiles of each train photo, scored on the centre tile of each test photo"
    )
    return rows


def _encode_decode_speed(ctx: BenchContext, tokenizer, originals: torch.Tensor) -> float:
    """Measure encode + decode (all scales) in images/s at the suite's speed batch, on the bench's threads."""
    batch = originals[: ctx.config.speed_images].to(ctx.device)
    return images_per_second(lambda: tokenizer.decode(tokenizer.encode(batch)), batch.shape[0], ctx.config.speed_seconds)
