"""Compare per-image statistics that could decide whether an image was edited.

The audit calls an image edited when the share of its pixels above the
localizer's decision threshold reaches `min_fraction`. That rule never
counts a text overlay, whose glyphs cover about 4 % of the image. This
script measures whether another statistic of the same probability map would
count more edits at the same false-alarm budget. Each statistic's cut is the
99.7th percentile over untouched val tiles after the processing the carrier
is specified to survive, as in the shipped calibration. The script prints
the share of edited val tiles (5-35 % of the area, no JPEG or JPEG 50/75/90
after the edit) that reach the cut, per tampering kind.

Statistics, each at several probability thresholds t (the weights' own decision threshold among them):
- `share`: the share of pixels above t (the shipped rule at t = the decision threshold);
- `window W`: the densest W x W window's share of pixels above t (concentrated regions);
- `component`: the largest 8-connected region above t, as a share of the image;
- `mass`: the summed probability above t, as a share of the image.

Usage: python scripts/compare_edit_decisions.py [--weights v1] [--tampered 700] [--clean 1700]
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hcr_model.localizer import load_localizer
from hcr_model.training.localizer import (
    CALIBRATION_ATTACKS,
    LocalizerTrainConfig,
    SampleMaker,
    make_fixed_samples,
    predict_probability,
    protected_split,
    training_key,
)

CLEAN_QUANTILE = 0.997  # the shipped calibration's share of clean images kept below the cut
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.98)
WINDOWS_PX = (16, 32, 64)


def share_above(probability: torch.Tensor, t: float) -> np.ndarray:
    return (probability > t).flatten(1).float().mean(1).numpy()


def densest_window(probability: torch.Tensor, t: float, window: int) -> np.ndarray:
    pooled = F.avg_pool2d((probability > t).float(), window, stride=window // 4)
    return pooled.flatten(1).max(1).values.numpy()


def largest_component(probability: torch.Tensor, t: float) -> np.ndarray:
    sizes = []
    for image in (probability[:, 0] > t).numpy().astype(np.uint8):
        count, _, stats, _ = cv2.connectedComponentsWithStats(image, connectivity=8)
        sizes.append(stats[1:, cv2.CC_STAT_AREA].max() / image.size if count > 1 else 0.0)
    return np.array(sizes)


def mass_above(probability: torch.Tensor, t: float) -> np.ndarray:
    return (probability * (probability > t)).flatten(1).mean(1).numpy()


def report(name: str, tampered: np.ndarray, clean: np.ndarray, kinds: np.ndarray, attacks: np.ndarray) -> None:
    """Print the detection per kind at the cut that keeps CLEAN_QUANTILE of the clean tiles below it."""
    cut = np.quantile(clean, CLEAN_QUANTILE, method="higher") + 1e-9
    detected = tampered >= cut
    worst_attack = max(float((clean[attacks == attack] >= cut).mean()) for attack in set(attacks))
    per_kind = "  ".join(f"{kind} {detected[kinds == kind].mean():.2f}" for kind in sorted(set(kinds)))
    print(f"{name:22s} cut {cut:.4f}  edited found {detected.mean():.3f}  worst attack's clean flagged {worst_attack:.3f}  {per_kind}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="v1", help="localizer weights: a version name or a file (default: v1)")
    parser.add_argument("--tampered", type=int, default=700, help="edited val tiles (default: 700)")
    parser.add_argument("--clean", type=int, default=1700, help="untouched val tiles after the specified processing (default: 1700)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    weights = load_localizer(args.weights)
    config = LocalizerTrainConfig()
    maker = SampleMaker(training_key(config.key_seed))
    pool = protected_split(maker, "val", config.seed + 1)
    # Seeds differ from the calibration's, so these tiles are not the ones the cut was fitted on.
    tampered = make_fixed_samples(maker, pool, args.tampered, 9101, ["identity", "jpeg75", "jpeg90", "jpeg50"], 1.0, (0.05, 0.35))
    clean = make_fixed_samples(maker, pool, args.clean, 9202, list(CALIBRATION_ATTACKS), 0.0, (0.05, 0.35))
    device = torch.device("cpu")
    p_tampered = predict_probability(weights.model, tampered.image, tampered.evidence, device)
    p_clean = predict_probability(weights.model, clean.image, clean.evidence, device)
    kinds, attacks = np.array(tampered.kinds), np.array(clean.attacks)

    print(f"{args.weights}: {len(kinds)} edited and {len(attacks)} untouched val tiles; shipped threshold {weights.threshold:.3f}")
    for t in sorted({*THRESHOLDS, round(weights.threshold, 3)}):
        report(f"share t {t}", share_above(p_tampered, t), share_above(p_clean, t), kinds, attacks)
        for window in WINDOWS_PX:
            report(f"window {window} t {t}", densest_window(p_tampered, t, window), densest_window(p_clean, t, window), kinds, attacks)
        report(f"component t {t}", largest_component(p_tampered, t), largest_component(p_clean, t), kinds, attacks)
        report(f"mass t {t}", mass_above(p_tampered, t), mass_above(p_clean, t), kinds, attacks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
