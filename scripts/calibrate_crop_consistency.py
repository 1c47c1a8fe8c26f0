"""Measure the content-binding distance of cropped images on the validation split.

The audit judges a cropped image's content against its hidden code in two
framings (see `Auditor._cropped_distance`) and keeps the smaller distance.
This script prints that distance for genuine crops of protected validation
photos and for mismatched pairs: the code of one photo against the crop of
the next, under the crop's own alignment. A mismatched pair is what a
watermark copied onto other content and then cropped would show. The
tolerance for crops can be read off both distributions.

Usage: python scripts/calibrate_crop_consistency.py [--photos 46]
"""

import argparse
import math

import numpy as np
import torch
from PIL import Image

from hcr_model.bundle import load_bundle
from hcr_model.consistency import consistency_distance
from hcr_model.data.photos import load_photos
from hcr_model.engine import Auditor, ImageInput, Protector, canonical_batch
from hcr_model.keys import SecretKey
from hcr_model.watermark.reading import read_received

KEY = SecretKey(bytes(range(32)))
# (area kept, share of the free room above and left of the window)
CROPS = ((0.9, 0.5, 0.5), (0.75, 0.5, 0.5), (0.7, 0.1, 0.8), (0.5, 0.9, 0.2))


def crop(rgb: np.ndarray, area: float, top_share: float, left_share: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    side = math.sqrt(area)
    crop_h, crop_w = round(height * side), round(width * side)
    top, left = round((height - crop_h) * top_share), round((width - crop_w) * left_share)
    return np.ascontiguousarray(rgb[top : top + crop_h, left : left + crop_w])


def distances(auditor: Auditor, image: ImageInput, alignment, code_picture: torch.Tensor) -> tuple[float, float]:
    """(own grid, protected grid) distances of a cropped image against a code picture, no edit mask."""
    tokenizer = auditor.bundle.tokenizer
    hidden = tokenizer.cfg.hidden_scales
    canonical = canonical_batch([image], auditor.resolution, torch.device("cpu"))
    received_picture = tokenizer.decode(tokenizer.encode(canonical)[:hidden], n_scales=hidden)
    no_edit = torch.zeros(1, 1, auditor.resolution, auditor.resolution, dtype=torch.bool)
    moved = auditor._received_frame(code_picture, [alignment], [image])
    own = float(consistency_distance(moved, received_picture, no_edit)[0])
    protected = auditor._cropped_distance(image, alignment, code_picture, no_edit)
    return own, protected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=46, help="validation photos to use (default: 46, all)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    bundle = load_bundle(device="cpu")
    protector, auditor = Protector(bundle, KEY), Auditor(bundle, KEY, None)
    tokenizer = bundle.tokenizer
    hidden = tokenizer.cfg.hidden_scales
    records = load_photos("val")[: args.photos]
    inputs = [ImageInput(r.photo_id, np.asarray(Image.open(r.file).convert("RGB"))) for r in records]

    with torch.inference_mode():
        protected = [protector.protect_batch([image])[0].protected_rgb for image in inputs]
        code_pictures = []
        for rgb in protected:
            canonical = canonical_batch([ImageInput("p", rgb)], auditor.resolution, torch.device("cpu"))
            code_pictures.append(tokenizer.decode(tokenizer.encode(canonical)[:hidden], n_scales=hidden))

        genuine, mismatched, missed = [], [], 0
        for i, rgb in enumerate(protected):
            for area, top_share, left_share in CROPS:
                image = ImageInput(inputs[i].image_id, crop(rgb, area, top_share, left_share))
                canonical = canonical_batch([image], auditor.resolution, torch.device("cpu"))
                alignment = read_received(auditor.carrier, canonical, [image.rgb]).alignments[0]
                if alignment is None:
                    missed += 1
                    continue
                genuine.append((area, *distances(auditor, image, alignment, code_pictures[i])))
                other = code_pictures[(i + 1) % len(protected)]
                mismatched.append((area, *distances(auditor, image, alignment, other)))

    genuine_array, mismatched_array = np.array(genuine), np.array(mismatched)
    print(f"{len(genuine)} crops read, {missed} not found by the crop search")
    for column, name in ((1, "own grid"), (2, "protected grid")):
        for label, values in (("genuine", genuine_array[:, column]), ("mismatched", mismatched_array[:, column])):
            print(f"{name:15s} {label:10s} p50 {np.median(values):.3f} p95 {np.percentile(values, 95):.3f} max {values.max():.3f} min {values.min():.3f}")
    best_genuine = np.minimum(genuine_array[:, 1], genuine_array[:, 2])
    best_mismatched = np.minimum(mismatched_array[:, 1], mismatched_array[:, 2])
    print(f"{'min of both':15s} genuine    p50 {np.median(best_genuine):.3f} p99 {np.percentile(best_genuine, 99):.3f} max {best_genuine.max():.3f}")
    print(f"{'min of both':15s} mismatched p1 {np.percentile(best_mismatched, 1):.3f} p5 {np.percentile(best_mismatched, 5):.3f} p50 {np.median(best_mismatched):.3f}")
    tolerance = bundle.calibration.consistency_tolerance
    print(f"calibrated tolerance (uncropped) {tolerance:.3f}: genuine crops above it {np.mean(best_genuine > tolerance):.3f}, "
          f"mismatched below it {np.mean(best_mismatched <= tolerance):.3f}")
    for area in sorted({row[0] for row in genuine}):
        rows = genuine_array[:, 0] == area
        print(f"  area {area}: genuine above tolerance {np.mean(best_genuine[rows] > tolerance):.3f} (n={rows.sum()})")


if __name__ == "__main__":
    main()
