"""Measure the shipped localizer on the test split (numbers for its model card).

Edits cover 5-35 % of protected test tiles, one cell per tampering kind,
received as saved (identity) or after JPEG quality 75. Per cell it reports
the mean per-image pixel F1 and IoU at the calibrated threshold, the pooled
pixel F1, and the share of edited images whose mask reaches
``min_fraction``. For untouched tiles
after each global attack: the pixel false-positive rate and the share of
images whose mask reaches ``min_fraction``. Then the localizer's throughput
on one CPU thread.

These tiles are protected, edited and read on the canonical 256 grid. A
second section runs the test photos at their cached size (shorter side up
to 512 px) through the product's protect path. There the residual computed
on the canonical grid is resized to the photo and added, and the edit
happens at the photo's size. The received photo is resized to the grid again.

The carrier key here differs from the training key, so the numbers also
show that the localizer does not depend on the key.

Usage: python scripts/measure_localizer.py [--weights v1] [--per-cell 24] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from hcr_model.bench.attacks import ATTACKS
from hcr_model.bench.tampering import TAMPER_KINDS, tamper
from hcr_model.imaging import add_residual, resize_to, to_canonical
from hcr_model.localizer import load_localizer
from hcr_model.training.common import setup_logging
from hcr_model.training.localizer import (
    GLOBAL_ATTACKS,
    SampleBatch,
    SampleMaker,
    concat_samples,
    per_image_scores,
    pixel_scores,
    protected_split,
    training_key,
)

logger = logging.getLogger("measure_localizer")

EDIT_ATTACKS = ("identity", "jpeg75")
CROP_ATTACKS = ("crop90", "crop75", "crop_jpeg_brightness")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="v1", help="weights version or .pt file (default: v1)")
    parser.add_argument("--split", default="test", help="data split to measure on (default: test)")
    parser.add_argument("--per-cell", type=int, default=24, help="edited images per (kind, attack) cell (default: 24)")
    parser.add_argument("--clean-per-attack", type=int, default=16, help="untouched images per global attack (default: 16)")
    parser.add_argument("--full-photos", type=int, default=16, help="photos per cell of the full-resolution section; 0 skips it (default: 16)")
    parser.add_argument("--area-min", type=float, default=0.05, help="smallest edited share of the image (default: 0.05)")
    parser.add_argument("--area-max", type=float, default=0.35, help="largest edited share of the image (default: 0.35)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    parser.add_argument("--key-seed", default="hcr/localizer-measure", help="text hashed into the carrier key (default: hcr/localizer-measure)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser


def make_cell(maker: SampleMaker, pool: torch.Tensor, rng: np.random.Generator, count: int, kind: str, attack: str, area: tuple[float, float], chunk: int = 8):
    parts = []
    for first in range(0, count, chunk):
        n = min(chunk, count - first)
        index = rng.integers(0, pool.shape[0], size=n)
        parts.append(maker.make(pool[index], rng, kinds=[kind] * n, attacks=[attack] * n, area=area))
    return concat_samples(parts)


def localize(weights, samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the masks at the calibrated threshold and at the best-F1 ``mask_threshold``."""
    probabilities = []
    for first in range(0, samples.image.shape[0], 8):
        probability, _ = weights.predict(samples.image[first : first + 8], samples.evidence[first : first + 8])
        probabilities.append(probability)
    probability = torch.cat(probabilities)
    return probability > weights.threshold, probability > weights.mask_threshold


def measure_edits(weights, maker, pool, rng, args) -> list[dict]:
    rows = []
    area = (args.area_min, args.area_max)
    for kind in TAMPER_KINDS:
        for attack in EDIT_ATTACKS:
            samples = make_cell(maker, pool, rng, args.per_cell, kind, attack, area)
            mask, fine_mask = localize(weights, samples)
            f1, iou = per_image_scores(mask, samples.mask)
            fine_f1, fine_iou = per_image_scores(fine_mask, samples.mask)
            pooled = pixel_scores(mask, samples.mask)
            rows.append(
                {
                    "kind": kind,
                    "attack": attack,
                    "images": len(f1),
                    "f1": float(f1.mean()),
                    "iou": float(iou.mean()),
                    "pooled_f1": pooled["f1"],
                    "mask_threshold_f1": float(fine_f1.mean()),
                    "mask_threshold_iou": float(fine_iou.mean()),
                    "detected": float(weights.is_edited(mask).float().mean()),
                    "payload_ecc_ok": float(samples.ecc_ok.mean()),
                }
            )
            logger.info("edit %s", rows[-1])
    return rows


def measure_clean(weights, maker, pool, rng, args) -> list[dict]:
    rows = []
    for attack in GLOBAL_ATTACKS + CROP_ATTACKS:
        samples = make_cell(maker, pool, rng, args.clean_per_attack, "none", attack, (0.05, 0.35))
        mask, _ = localize(weights, samples)
        rows.append(
            {
                "attack": attack,
                "images": mask.shape[0],
                "pixel_fpr": pixel_scores(mask, samples.mask)["fpr"],
                "flagged": float(weights.is_edited(mask).float().mean()),
                "payload_ecc_ok": float(samples.ecc_ok.mean()),
            }
        )
        logger.info("clean %s", rows[-1])
    return rows


def load_split_photos(split: str) -> list[torch.Tensor]:
    """Decode the cached photos of a split as (1, 3, H, W) float in [0, 1]."""
    from PIL import Image

    from hcr_model.data.photos import load_photos

    photos = []
    for record in load_photos(split):
        with Image.open(record.file) as image:
            array = np.asarray(image.convert("RGB"))
        photos.append(torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0)
    return photos


@torch.no_grad()
def full_resolution_cell(maker: SampleMaker, photos: list[torch.Tensor], rng: np.random.Generator, count: int, kind: str, attack: str, area: tuple[float, float]) -> SampleBatch:
    """Protect, edit and attack photos at their own size; return them on the canonical grid."""
    resolution = maker.resolution
    images, masks, areas = [], [], []
    for _ in range(count):
        photo = photos[int(rng.integers(0, len(photos)))]
        height, width = photo.shape[-2:]
        canonical = to_canonical(photo, resolution)
        code = rng.integers(0, 2, size=(1, maker.codec.code_bits), dtype=np.uint8)
        bits = torch.from_numpy(maker.codec.encode_batch(1, code))
        residual = maker.carrier.embed(canonical, bits) - canonical
        protected = add_residual(photo, resize_to(residual, (height, width)))
        protected_u8 = (protected[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()

        mask = np.zeros((height, width), bool)
        edited, edited_area = protected_u8, 0.0
        if kind != "none":
            donor = photos[int(rng.integers(0, len(photos)))][0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
            result = tamper(protected_u8, rng, kind=kind, area=float(rng.uniform(*area)), donor=donor)
            edited, mask, edited_area = result.image, result.mask, result.area

        received = ATTACKS[attack].apply(torch.from_numpy(np.ascontiguousarray(edited)).permute(2, 0, 1)[None].float() / 255.0)
        images.append(to_canonical(received, resolution))
        masks.append(cv2.resize(mask.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_AREA) >= 0.5)
        areas.append(edited_area)

    received = torch.cat(images)
    evidence, ecc_ok = maker.evidence(received)
    mask_t = torch.from_numpy(np.stack(masks))[:, None].float()
    return SampleBatch(received, evidence, mask_t, [kind] * count, [attack] * count, ecc_ok, np.array(areas))


def measure_full_resolution(weights, maker, rng, args) -> list[dict]:
    photos = load_split_photos(args.split)
    rows = []
    area = (args.area_min, args.area_max)
    for kind in ("none",) + TAMPER_KINDS:
        for attack in EDIT_ATTACKS:
            samples = full_resolution_cell(maker, photos, rng, args.full_photos, kind, attack, area)
            mask, _ = localize(weights, samples)
            f1, iou = per_image_scores(mask, samples.mask)
            rows.append(
                {
                    "kind": kind,
                    "attack": attack,
                    "images": len(f1),
                    "f1": float(f1.mean()) if kind != "none" else None,
                    "iou": float(iou.mean()) if kind != "none" else None,
                    "pixel_fpr": pixel_scores(mask, samples.mask)["fpr"],
                    "detected": float(weights.is_edited(mask).float().mean()),
                    "payload_ecc_ok": float(samples.ecc_ok.mean()),
                }
            )
            logger.info("full resolution %s", rows[-1])
    return rows


@torch.inference_mode()
def measure_speed(weights, resolution: int = 256, batch: int = 8, repeats: int = 3) -> dict:
    """Localizer forward pass only, on the CPU with the configured threads."""
    model = weights.model.cpu().eval()
    x = torch.rand(batch, 3, resolution, resolution)
    evidence = torch.rand(batch, 1, resolution // 8, resolution // 8)
    model(x, evidence)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(x, evidence)
        best = min(best, time.perf_counter() - start)
    return {"batch": batch, "images_per_s": batch / best, "threads": torch.get_num_threads()}


def summarize(edits: list[dict], clean: list[dict], full: list[dict], speed: dict, weights) -> str:
    lines = [
        f"threshold {weights.threshold:.3f}, min_fraction {weights.min_fraction:.4f}, mask_threshold {weights.mask_threshold:.3f}",
        "",
        "| kind | attack | images | F1 | IoU | pooled F1 | F1 / IoU at mask_threshold | mask ≥ min_fraction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in edits:
        lines.append(
            f"| {row['kind']} | {row['attack']} | {row['images']} | {row['f1']:.3f} | {row['iou']:.3f} | "
            f"{row['pooled_f1']:.3f} | {row['mask_threshold_f1']:.3f} / {row['mask_threshold_iou']:.3f} | {row['detected']:.0%} |"
        )
    for attack in EDIT_ATTACKS:
        subset = [row for row in edits if row["attack"] == attack]
        lines.append(
            f"| **all kinds** | {attack} | {sum(r['images'] for r in subset)} | "
            f"{np.mean([r['f1'] for r in subset]):.3f} | {np.mean([r['iou'] for r in subset]):.3f} | | "
            f"{np.mean([r['mask_threshold_f1'] for r in subset]):.3f} / {np.mean([r['mask_threshold_iou'] for r in subset]):.3f} | "
            f"{np.mean([r['detected'] for r in subset]):.0%} |"
        )
    lines += ["", "| untouched, attack | images | pixel FPR | mask ≥ min_fraction | payload ECC ok |", "|---|---|---|---|---|"]
    for row in clean:
        lines.append(f"| {row['attack']} | {row['images']} | {row['pixel_fpr']:.4f} | {row['flagged']:.0%} | {row['payload_ecc_ok']:.0%} |")
    if full:
        lines += [
            "",
            "Full-resolution protect path (test photos at their cached size):",
            "",
            "| kind | attack | images | F1 | IoU | pixel FPR | mask ≥ min_fraction | payload ECC ok |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in full:
            f1 = "—" if row["f1"] is None else f"{row['f1']:.3f}"
            iou = "—" if row["iou"] is None else f"{row['iou']:.3f}"
            lines.append(
                f"| {row['kind']} | {row['attack']} | {row['images']} | {f1} | {iou} | {row['pixel_fpr']:.4f} | "
                f"{row['detected']:.0%} | {row['payload_ecc_ok']:.0%} |"
            )
    lines += ["", f"localizer forward: {speed['images_per_s']:.1f} images/s at 256², batch {speed['batch']}, {speed['threads']} thread(s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)

    weights = load_localizer(args.weights)
    maker = SampleMaker(training_key(args.key_seed))
    pool = protected_split(maker, args.split, args.seed)
    rng = np.random.default_rng(args.seed)

    started = time.monotonic()
    edits = measure_edits(weights, maker, pool, rng, args)
    clean = measure_clean(weights, maker, pool, rng, args)
    full = measure_full_resolution(weights, maker, rng, args) if args.full_photos > 0 else []
    speed = measure_speed(weights)
    logger.info("measured in %.0f s", time.monotonic() - started)

    print(summarize(edits, clean, full, speed, weights))
    if args.json is not None:
        result = {
            "split": args.split,
            "threshold": weights.threshold,
            "min_fraction": weights.min_fraction,
            "edits": edits,
            "clean": clean,
            "full_resolution": full,
            "speed": speed,
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
