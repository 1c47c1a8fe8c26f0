"""Measure the audit thresholds on the validation split and write calibration.json.

Two thresholds sit beside the weights of a version:
- `watermark_threshold`: the watermark_score below which an image counts as
  unmarked. Set between the scores of unmarked photos and of protected photos
  under the attack grid.
- `consistency_tolerance`: the largest coarse colour distance between a
  payload's code picture and the received content that is still authentic.
  Set between protected-then-attacked photos (same content) and pairs of
  different photos (what a copied watermark looks like); see
  hcr_model.consistency for the distance.

Usage: python scripts/calibrate_audit.py --version v1 [--limit 120]
"""

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from hcr_model.bench.attacks import ATTACKS
from hcr_model.bundle import weights_dir
from hcr_model.consistency import consistency_distance
from hcr_model.data.photos import TileDataset, load_photos
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.tokenizer import load_tokenizer
from hcr_model.watermark.dct import DctCarrier

logger = logging.getLogger("calibrate_audit")

CALIBRATION_ATTACKS = (
    "jpeg50", "jpeg75", "blur1", "noise0.02", "resize0.5", "brightness+30", "brightness-30", "contrast+30", "contrast-30"
)


def quantize(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().div(255)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="v1", help="weights version to calibrate (default: v1)")
    parser.add_argument("--folder", type=Path, default=None, help="weights folder (default: the version's folder in the package)")
    parser.add_argument("--limit", type=int, default=120, help="validation tiles to use (default: 120)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per batch (default: 16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(1)

    folder = args.folder or weights_dir(args.version)
    tokenizer = load_tokenizer(folder / "tokenizer.pt").eval()
    key = SecretKey(bytes(range(16)))  # calibration only: thresholds do not depend on the key
    carrier = DctCarrier(key, resolution=tokenizer.cfg.resolution)
    codec = PayloadCodec(key, n_bits=carrier.n_bits, code_bits=tokenizer.cfg.code_bits)
    hidden_scales = tokenizer.cfg.hidden_scales

    dataset = TileDataset(load_photos("val"), resolution=tokenizer.cfg.resolution, augment=False)
    count = min(args.limit, len(dataset))
    attacks = [name for name in CALIBRATION_ATTACKS if name in ATTACKS]
    missing = sorted(set(CALIBRATION_ATTACKS) - set(attacks))
    if missing:
        logger.warning("attacks not in the grid, skipped: %s", missing)

    unmarked_scores, marked_scores, same_content, other_content = [], [], [], []
    with torch.inference_mode():
        for start in range(0, count, args.batch_size):
            images = torch.stack([dataset[i]["image"] for i in range(start, min(count, start + args.batch_size))])
            tokens = tokenizer.encode(images)
            code = tokenizer.hidden_code(tokens)
            bits = torch.from_numpy(np.stack([codec.encode(1, row) for row in code]))
            protected = quantize(carrier.embed(images, bits))
            code_picture = tokenizer.decode(tokens[:hidden_scales], n_scales=hidden_scales)
            no_mask = torch.zeros(images.shape[0], 1, *images.shape[2:], dtype=torch.bool)

            unmarked_scores += carrier.extract(images).watermark_score.tolist()
            for name in ("identity",) + tuple(attacks):
                received = protected if name == "identity" else ATTACKS[name].apply(protected)
                received = torch.nn.functional.interpolate(received, size=images.shape[2:], mode="bilinear", antialias=True, align_corners=False)
                marked_scores += carrier.extract(received).watermark_score.tolist()
                own = tokenizer.decode(tokenizer.encode(received), n_scales=hidden_scales)
                same_content += consistency_distance(code_picture, own, no_mask).tolist()

            # A copied watermark carries another photo's code: pair each tile
            # with the next one in the batch.
            shifted = torch.roll(images, shifts=1, dims=0)
            other = tokenizer.decode(tokenizer.encode(shifted), n_scales=hidden_scales)
            other_content += consistency_distance(code_picture, other, no_mask).tolist()
            logger.info("calibrated %d / %d tiles", min(count, start + args.batch_size), count)

    unmarked_scores, marked_scores = np.array(unmarked_scores), np.array(marked_scores)
    same_content, other_content = np.array(same_content), np.array(other_content)
    watermark_threshold = float((np.quantile(unmarked_scores, 0.999) + np.quantile(marked_scores, 0.01)) / 2)
    # Between the two populations when they separate; otherwise at the
    # same-content 99.5th percentile, because a false `forged` on an authentic
    # image is the costlier error.
    same_high, other_low = float(np.quantile(same_content, 0.995)), float(np.quantile(other_content, 0.01))
    consistency_tolerance = (same_high + other_low) / 2 if same_high < other_low else same_high
    report = {
        "watermark_threshold": watermark_threshold,
        "consistency_tolerance": consistency_tolerance,
        "source": (
            f"scripts/calibrate_audit.py --version {args.version} --limit {args.limit} on {count} val tiles, "
            f"attacks {['identity', *attacks]}, {datetime.now(timezone.utc).date()}"
        ),
        "measured": {
            "unmarked_score_max": float(unmarked_scores.max()),
            "marked_score_p01": float(np.quantile(marked_scores, 0.01)),
            "same_content_distance_p995": same_high,
            "same_content_distance_max": float(same_content.max()),
            "other_content_distance_p01": other_low,
            "other_content_flagged": float((other_content > consistency_tolerance).mean()),
        },
    }
    (folder / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
