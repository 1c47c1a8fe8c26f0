"""Localization: pixel F1, IoU and AUC per tampering kind; false positives on clean images.

Each protected image is edited once per kind (a random shape covering 5-35 %
of the pixels by default) and received as edited, or re-saved as JPEG 75.
Two views are measured:
- `localizer`: the per-pixel probability on the canonical grid against the
  ground-truth mask resized to the grid (F1 and IoU at the calibrated
  decision threshold, F1 at the mask threshold the audit draws masks at,
  AUC over all pixels);
- `audit`: the `Auditor`'s verdict and its mask at the input's size. Only
  `tampered` verdicts carry a mask, so every other verdict scores an empty mask.
False positives: the share of pixels the localizer flags on untouched
protected images and on globally processed ones (JPEG, blur, resize, ...),
with the share of those images the audit still judges `authentic`.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import torch

from hcr_model.bench.measure_context import BenchContext, TamperCase, apply_attack, canonical_mask, group_positions, mean_of, run_part
from hcr_model.bench.metrics import false_positive_rate, pixel_auc, pixel_f1, pixel_iou

logger = logging.getLogger(__name__)

def _localizer_scores(ctx: BenchContext, cases: list[TamperCase]) -> dict[str, np.ndarray]:
    probability = ctx.tamper_probability([case.rgb for case in cases])
    truth = torch.cat([canonical_mask(case.mask, ctx.resolution) for case in cases])
    threshold = ctx.localizer_threshold
    return {
        "f1": pixel_f1(probability, truth, threshold).numpy(),
        "iou": pixel_iou(probability, truth, threshold).numpy(),
        "mask_f1": pixel_f1(probability, truth, float(ctx.models.localizer.mask_threshold)).numpy(),
        "auc": pixel_auc(probability, truth).numpy(),
    }


def _audit_scores(ctx: BenchContext, cases: list[TamperCase]) -> dict[str, list]:
    audits = ctx.localization_audits
    f1, iou = [], []
    for case, audit in zip(cases, audits):
        predicted = audit.mask if audit.mask is not None else np.zeros_like(case.mask)
        pred = torch.from_numpy(predicted)[None]
        truth = torch.from_numpy(case.mask)[None]
        f1.append(float(pixel_f1(pred, truth)[0]))
        iou.append(float(pixel_iou(pred, truth)[0]))
    return {"f1": f1, "iou": iou, "verdicts": [audit.verdict for audit in audits]}


def _tamper_rows(ctx: BenchContext, notes: list[str], errors: list[str]) -> list[dict]:
    cases = ctx.localization_cases
    local = _localizer_scores(ctx, cases)
    audit = run_part(lambda: _audit_scores(ctx, cases), "audit columns", notes, errors)
    kinds, posts = [case.kind for case in cases], [case.post_edit for case in cases]
    rows = []
    for (kind, post), positions in group_positions(kinds, posts, ctx.config.tamper_kinds, ctx.config.post_edit).items():
        row = {
            "kind": kind,
            "post_edit": post,
            "images": len(positions),
            "area": mean_of(cases[p].area for p in positions),
            "f1": mean_of(local["f1"][positions]),
            "iou": mean_of(local["iou"][positions]),
            "mask_f1": mean_of(local["mask_f1"][positions]),
            "auc": mean_of(local["auc"][positions]),
        }
        if audit is not None:
            verdicts = Counter(audit["verdicts"][p] for p in positions)
            row.update(
                {
                    "audit_tampered_rate": verdicts["tampered"] / len(positions),
                    "audit_f1": mean_of(audit["f1"][p] for p in positions),
                    "audit_iou": mean_of(audit["iou"][p] for p in positions),
                    "audit_verdicts": dict(verdicts),
                }
            )
        rows.append(row)
    return rows


def _false_positive_rows(ctx: BenchContext, notes: list[str], errors: list[str]) -> list[dict]:
    ids = [image.image_id for image in ctx.images]
    min_fraction = float(ctx.models.localizer.min_fraction)
    processed = {attack: [apply_attack(attack, p.rgb) for p in ctx.protected] for attack in ("identity", *ctx.config.global_attacks)}

    def audit_all():
        return {attack: Counter(a.verdict for a in ctx.audit(received, ids)) for attack, received in processed.items()}

    verdicts = run_part(audit_all, "audit verdicts on untouched images", notes, errors)
    rows = []
    for attack, received in processed.items():
        rates = false_positive_rate(ctx.tamper_probability(received), ctx.localizer_threshold).numpy()
        row = {
            "processing": "none" if attack == "identity" else attack,
            "images": len(received),
            "fp_pixel_rate": mean_of(rates),
            "flagged_rate": float((rates >= min_fraction).mean()),
        }
        if verdicts is not None:
            row["audit_authentic_rate"] = verdicts[attack]["authentic"] / len(received)
            row["audit_verdicts"] = dict(verdicts[attack])
        rows.append(row)
    return rows


def measure(ctx: BenchContext) -> dict:
    ctx.models.need("localizer")
    thresholds = (
        f"threshold {ctx.localizer_threshold:.3f}, mask threshold {ctx.models.localizer.mask_threshold:.3f} "
        f"and min_fraction {ctx.models.localizer.min_fraction:.4f} from the localizer weights"
    )
    notes = [thresholds]
    errors: list[str] = []
    rows = _tamper_rows(ctx, notes, errors)
    false_positives = _false_positive_rows(ctx, notes, errors)
    return {"rows": rows, "false_positives": false_positives, "notes": notes, "errors": errors}
