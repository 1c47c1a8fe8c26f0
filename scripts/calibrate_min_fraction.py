"""Recalibrate the localizer's `min_fraction` on the validation split.

`min_fraction` is the smallest mask share that counts as an edit. This script
sets it to the 99th percentile (plus one pixel) of the mask share on untouched
protected validation tiles after the processing the carrier is specified to
survive: identity, JPEG 50–90, Gaussian blur σ ≤ 1, noise σ ≤ 0.02, resize,
brightness and contrast ±30 %. Harsher processing (noise σ 0.05, blur σ 2)
is left out, because the watermark itself is not specified to survive it.
It also prints the share of tampered tiles (3–35 % area, with and without
JPEG 75) that reach the new value, and rewrites the weight file in place.

Usage: python scripts/calibrate_min_fraction.py [--weights hcr_model/weights/v1/localizer.pt] [--tiles 40]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hcr_model.bench.attacks import ATTACKS
from hcr_model.bench.tampering import tamper
from hcr_model.data.photos import TileDataset, load_photos
from hcr_model.keys import SecretKey
from hcr_model.localizer import load_localizer, save_localizer
from hcr_model.payload import PayloadCodec
from hcr_model.watermark.dct import DctCarrier

SPECIFIED_ATTACKS = (
    "identity", "jpeg50", "jpeg60", "jpeg75", "jpeg90", "blur0.5", "blur1", "noise0.01", "noise0.02",
    "resize0.5", "resize0.75", "resize1.5", "brightness+30", "brightness-30", "contrast+30", "contrast-30", "jpeg_resize",
)


def mask_fractions(weights, carrier, codec, images: torch.Tensor) -> np.ndarray:
    """Mask share per image, with the evidence built as the audit builds it."""
    extraction = carrier.extract(images)
    soft = extraction.soft_bits.float().numpy()
    expected = []
    for row in soft:
        decoded = codec.decode(row)
        expected.append(codec.reencode(decoded) if decoded.ecc_ok else (row > 0).astype(np.uint8))
    evidence = carrier.evidence(extraction, torch.from_numpy(np.stack(expected)))
    _, mask = weights.predict(images, evidence)
    return mask.flatten(1).float().mean(dim=1).numpy()


def resize_back(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("hcr_model/weights/v1/localizer.pt"), help="localizer weight file")
    parser.add_argument("--tiles", type=int, default=40, help="validation tiles (default: 40)")
    parser.add_argument("--quantile", type=float, default=0.99, help="share of clean tiles below min_fraction (default: 0.99)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    weights = load_localizer(args.weights)
    key = SecretKey(bytes(range(16)))
    carrier = DctCarrier(key)
    codec = PayloadCodec(key, n_bits=carrier.n_bits)
    dataset = TileDataset(load_photos("val"), resolution=carrier.resolution, augment=False)
    picks = np.linspace(0, len(dataset) - 1, min(args.tiles, len(dataset))).astype(int)
    tiles = torch.stack([dataset[int(i)]["image"] for i in picks])
    rng = np.random.default_rng(0)
    bits = torch.from_numpy(np.stack([codec.encode(1, rng.integers(0, 2, 140, dtype=np.uint8)) for _ in picks]))

    with torch.inference_mode():
        protected = carrier.embed(tiles, bits).clamp(0, 1).mul(255).round().div(255)
        clean = np.concatenate(
            [mask_fractions(weights, carrier, codec, resize_back(ATTACKS[name].apply(protected), carrier.resolution)) for name in SPECIFIED_ATTACKS]
        )

        edited, truth = [], []
        for i, image in enumerate(protected):
            rgb = image.permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
            donor = protected[(i + 1) % len(protected)].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
            result = tamper(rgb, rng, area=float(rng.uniform(0.03, 0.35)), donor=donor)
            edited.append(torch.from_numpy(result.image).permute(2, 0, 1).float().div(255))
            truth.append(float(result.mask.mean()))
        edited = torch.stack(edited)
        tampered = np.concatenate(
            [mask_fractions(weights, carrier, codec, edited), mask_fractions(weights, carrier, codec, ATTACKS["jpeg75"].apply(edited))]
        )

    pixel = 1.0 / carrier.resolution**2
    min_fraction = float(np.quantile(clean, args.quantile)) + pixel
    record = dict(weights.calibration)
    record.update(
        {
            "min_fraction_rule": f"{args.quantile} quantile of the mask share of {len(picks)} untouched val tiles "
            f"under {', '.join(SPECIFIED_ATTACKS)}, plus one pixel (scripts/calibrate_min_fraction.py)",
            "val_clean_below_min_fraction": float((clean < min_fraction).mean()),
            "val_tampered_at_or_above_min_fraction": float((tampered >= min_fraction).mean()),
            "previous_min_fraction": weights.min_fraction,
        }
    )
    save_localizer(
        args.weights, weights.model, threshold=weights.threshold, min_fraction=min_fraction,
        version=weights.version, calibration=record, metrics=weights.metrics,
    )
    print(json.dumps({"min_fraction": min_fraction, **{k: record[k] for k in ("val_clean_below_min_fraction", "val_tampered_at_or_above_min_fraction", "previous_min_fraction")}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
