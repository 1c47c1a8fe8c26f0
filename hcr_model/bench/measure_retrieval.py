"""Factual retrieval from restored pixels, and the exact payload lookup, reported apart.

Gallery: every image of the suite's source (the whole test split in the full
suite, even with `--limit`), as the registry stores it: the code
embedding of the original's hidden code. Queries: the recovery section's
images (25 % edited, each method's restoration), embedded the same way from
their own pixels; no payload is read. Scores:
- `top1_image`: the nearest gallery entry (cosine) is the query's original;
- `top1_label`: it has the original's category (test split only);
- `top1_imagenet`: it has the original's MobileNetV2 ImageNet class.
The exact lookup is the audit's own path: the payload's hidden code matched
in the registry (`retrieval_distance` 0) and naming the right image, on the
localization section's tampered images.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from hcr_model.bench.measure_context import BATCH, BenchContext, canonical_stack, run_part
from hcr_model.bench.measure_recovery import restored_images
from hcr_model.bench.metrics import top1_accuracy

logger = logging.getLogger(__name__)


@torch.inference_mode()
def _embeddings(ctx: BenchContext, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, R, R) -> (N, D) code embeddings of each image's own hidden code."""
    tokenizer = ctx.models.tokenizer
    out = []
    for start in range(0, len(images), BATCH):
        tokens = tokenizer.encode(images[start : start + BATCH].to(ctx.device))
        out.append(tokenizer.code_embedding(tokens).float().cpu())
    return torch.cat(out)


def _imagenet_classes(images: torch.Tensor) -> list[int] | None:
    """MobileNetV2 top-1 ImageNet class of each image, or None without its weights."""
    try:
        from hcr_model.semantic import classify

        return [int(c) for start in range(0, len(images), BATCH) for c in classify(images[start : start + BATCH]).argmax(dim=1)]
    except (FileNotFoundError, ImportError) as exc:
        logger.warning("ImageNet labels left out: %s", exc)
        return None


def _exact_lookup_rows(ctx: BenchContext) -> list[dict]:
    ctx.models.need("bundle")
    cases, audits = ctx.localization_cases, ctx.localization_audits
    rows = []
    for post in ctx.config.post_edit:
        pairs = [(case, audit) for case, audit in zip(cases, audits) if case.post_edit == post]
        truth = [ctx.images[case.image_index].image_id for case, _ in pairs]
        exact = [a.retrieved_image_id == t and a.retrieval_distance == 0.0 for (_, a), t in zip(pairs, truth)]
        found = [a.retrieved_image_id == t for (_, a), t in zip(pairs, truth)]
        rows.append(
            {
                "post_edit": post,
                "images": len(pairs),
                "payload_valid_rate": float(np.mean([a.payload_valid for _, a in pairs])),
                "exact_lookup_rate": float(np.mean(exact)),
                "audit_top1_image": float(np.mean(found)),
            }
        )
    return rows


def measure(ctx: BenchContext) -> dict:
    ctx.models.need("tokenizer")
    gallery = canonical_stack([image.rgb for image in ctx.gallery], ctx.resolution, torch.device("cpu"))
    gallery_embeddings = _embeddings(ctx, gallery)
    gallery_ids = [image.image_id for image in ctx.gallery]
    gallery_labels = [image.label for image in ctx.gallery]
    gallery_classes = _imagenet_classes(gallery)
    class_of = dict(zip(gallery_ids, gallery_classes)) if gallery_classes is not None else None
    has_labels = all(label is not None for label in gallery_labels)

    cases, restored, recovery_notes, _ = restored_images(ctx)
    rows = []
    for method, images in restored.items():
        embeddings = _embeddings(ctx, images)
        for post in ctx.config.post_edit:
            positions = [p for p, value in enumerate(cases.post_edit) if value == post]
            query = embeddings[positions]
            ids = [ctx.images[cases.image_index[p]].image_id for p in positions]
            row = {
                "method": method,
                "post_edit": post,
                "queries": len(positions),
                "top1_image": top1_accuracy(query, gallery_embeddings, ids, gallery_ids),
                "top1_label": None,
                "top1_imagenet": None,
            }
            if has_labels:
                labels = [ctx.images[cases.image_index[p]].label for p in positions]
                row["top1_label"] = top1_accuracy(query, gallery_embeddings, labels, gallery_labels)
            if class_of is not None:
                classes = [class_of[i] for i in ids]
                row["top1_imagenet"] = top1_accuracy(query, gallery_embeddings, classes, gallery_classes)
            rows.append(row)

    notes = [f"gallery of {len(gallery_ids)} images", *recovery_notes]
    if not has_labels:
        notes.append("top1_label left out: the fixture photos have no category")
    errors: list[str] = []
    exact = run_part(lambda: _exact_lookup_rows(ctx), "exact lookup", notes, errors)
    return {"rows": rows, "exact_lookup": exact or [], "notes": notes, "errors": errors}
