"""Measure the DCT watermark carrier and the payload codec on real photos.

Follows the engine's path: full-resolution photo -> canonical grid -> embed ->
residual resized back to full size -> added -> rounded to uint8 -> saved (PNG
or JPEG) -> attacked (the benchmark's attack grid) -> canonical grid ->
extract -> decode. Prints one table: PSNR/SSIM, bit accuracy, payload success
and watermark score per attack, a 25 %-area paste (payload and evidence map),
copy attacks, unmarked photos and throughput on one core.

    python scripts/measure_carrier.py                      # fixture photos
    python scripts/measure_carrier.py --photos ~/.cache/hcr/data/photos --limit 60
"""

import argparse
import io
import json
import logging
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from skimage.metrics import structural_similarity

from hcr_model.bench.attacks import ATTACKS
from hcr_model.imaging import add_residual, resize_to, tensor_to_uint8, to_canonical, uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.watermark.dct import DctCarrier

logger = logging.getLogger("measure_carrier")

DEFAULT_ATTACKS = (
    "identity", "jpeg90", "jpeg75", "jpeg50", "blur1", "noise0.02", "resize0.5", "resize0.75",
    "crop90", "crop75", "brightness+30", "contrast-30", "jpeg_resize", "crop_jpeg_brightness",
)  # fmt: skip
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# A fixed key: the numbers must not depend on a user's key file.
MEASURE_KEY = SecretKey(bytes(range(32)))


def load_photos(folder: Path | None, limit: int) -> list[tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8) photos from `folder`, or scikit-image's photos when it is None."""
    if folder is None:
        import skimage.data

        names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")
        photos = [(name, getattr(skimage.data, name)()) for name in names]
    else:
        paths = sorted(p for p in folder.expanduser().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if limit and limit < len(paths):
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
        photos = []
        for path in paths:
            with Image.open(path) as image:
                photos.append((path.name, np.asarray(ImageOps.exif_transpose(image).convert("RGB"))))
    photos = [(name, np.repeat(rgb[:, :, None], 3, 2) if rgb.ndim == 2 else rgb) for name, rgb in photos]
    if limit and limit < len(photos):
        # Evenly spaced, so a limited run still spans every source of the folder.
        photos = [photos[i] for i in np.linspace(0, len(photos) - 1, limit).round().astype(int)]
    return photos


def save_and_reload(rgb: np.ndarray, storage: str) -> np.ndarray:
    """Round trip through the storage format the protected image is written in."""
    if storage == "png":
        return rgb
    quality = int(storage.removeprefix("jpeg"))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def protect(carrier: DctCarrier, rgb: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Protect one (H, W, 3) uint8 photo the way the engine does; returns (H, W, 3) uint8."""
    original = uint8_to_tensor(rgb)
    canonical = to_canonical(original, carrier.resolution)
    marked = carrier.embed(canonical, torch.from_numpy(bits)[None])
    residual = resize_to(marked - canonical, original.shape[-2:])
    return tensor_to_uint8(add_residual(original, residual))


def read(carrier: DctCarrier, codec: PayloadCodec, rgb: np.ndarray):
    """Extract and decode one (H, W, 3) uint8 image: (extraction, decoded payload)."""
    extraction = carrier.extract(to_canonical(uint8_to_tensor(rgb), carrier.resolution))
    return extraction, codec.decode(extraction.soft_bits[0].numpy())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse else float("inf")


def paste_region(target: np.ndarray, donor: np.ndarray, rng: np.random.Generator, area: float) -> tuple[np.ndarray, np.ndarray]:
    """Paste a square of `area` of the target's pixels, cut from `donor`, at a random place: (image, mask)."""
    height, width = target.shape[:2]
    side_h, side_w = round(height * math.sqrt(area)), round(width * math.sqrt(area))
    top, left = int(rng.integers(0, height - side_h + 1)), int(rng.integers(0, width - side_w + 1))
    patch = cv2.resize(donor, (side_w, side_h), interpolation=cv2.INTER_AREA)
    edited = target.copy()
    edited[top : top + side_h, left : left + side_w] = patch
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + side_h, left : left + side_w] = True
    return edited, mask


def copy_watermark(protected: np.ndarray, target: np.ndarray, denoiser: str) -> np.ndarray:
    """The copy attack: protected minus its denoised version, resized and added to other content."""
    if denoiser == "median3":
        smooth = cv2.medianBlur(protected, 3)
    elif denoiser == "gauss1":
        smooth = cv2.GaussianBlur(protected, (0, 0), 1.0)
    else:
        raise ValueError(f"unknown denoiser {denoiser!r}")
    estimate = protected.astype(np.float32) - smooth.astype(np.float32)
    estimate = cv2.resize(estimate, (target.shape[1], target.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.round(target.astype(np.float32) + estimate), 0, 255).astype(np.uint8)


def block_mask(mask: np.ndarray, grid: int) -> np.ndarray:
    """(H, W) pixel mask -> (grid, grid) share of each canonical block inside the mask."""
    return cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)


def measure_throughput(carrier: DctCarrier, batch: int = 8, repeats: int = 3) -> tuple[float, float]:
    """Canonical images per second for embed and extract, batches of `batch`."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, carrier.resolution, carrier.resolution, generator=generator)
    bits = torch.randint(0, 2, (batch, carrier.n_bits), generator=generator)
    rates = []
    for run in (lambda: carrier.embed(images, bits), lambda: carrier.extract(images)):
        run()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        rates.append(batch * repeats / (time.perf_counter() - start))
    return rates[0], rates[1]


def summarize(rows: list[dict]) -> dict:
    acc = np.array([r["bit_accuracy"] for r in rows])
    return {
        "n": len(rows),
        "bit_accuracy_mean": float(acc.mean()),
        "bit_accuracy_min": float(acc.min()),
        "payload_success": float(np.mean([r["payload_valid"] for r in rows])),
        "score_min": float(min(r["score"] for r in rows)),
    }


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    carrier = DctCarrier(MEASURE_KEY)
    codec = PayloadCodec(MEASURE_KEY, n_bits=carrier.n_bits, code_bits=args.code_bits)
    photos = load_photos(args.photos, args.limit)
    if len(photos) < 2:
        raise SystemExit("need at least 2 photos (the paste and copy attacks take content from another photo)")
    logger.info("measuring %d photos, storage %s, attacks %s", len(photos), args.storage, ",".join(args.attacks))

    per_attack: dict[str, list[dict]] = {name: [] for name in args.attacks}
    quality, paste, copies, unmarked, protected_all = [], [], {"median3": [], "gauss1": []}, [], []
    for index, (name, rgb) in enumerate(photos):
        code = rng.integers(0, 2, args.code_bits).astype(np.uint8)
        bits = codec.encode(1, code)
        protected = save_and_reload(protect(carrier, rgb, bits), args.storage)
        protected_all.append(protected)
        ssim = structural_similarity(rgb, protected, channel_axis=2, data_range=255)
        quality.append({"photo": name, "width": rgb.shape[1], "height": rgb.shape[0], "psnr": psnr(rgb, protected), "ssim": float(ssim)})

        tensor = uint8_to_tensor(protected)
        for attack_name in args.attacks:
            attacked = tensor_to_uint8(ATTACKS[attack_name].apply(tensor))
            extraction, decoded = read(carrier, codec, attacked)
            soft = extraction.soft_bits[0].numpy()
            per_attack[attack_name].append(
                {
                    "photo": name,
                    "bit_accuracy": float(((soft > 0) == bits.astype(bool)).mean()),
                    "payload_valid": bool(decoded.payload_valid and np.array_equal(decoded.code_bits, code)),
                    "score": float(extraction.watermark_score[0]),
                }
            )

        # Local edit: a square of 25 % of the area from the next photo.
        donor = photos[(index + 1) % len(photos)][1]
        edited, mask = paste_region(protected, donor, rng, args.paste_area)
        extraction, decoded = read(carrier, codec, edited)
        evidence = carrier.evidence(extraction, torch.from_numpy(bits)[None])[0, 0].numpy()
        inside = block_mask(mask, carrier.grid)
        paste.append(
            {
                "bit_accuracy": float(((extraction.soft_bits[0].numpy() > 0) == bits.astype(bool)).mean()),
                "payload_valid": bool(decoded.payload_valid and np.array_equal(decoded.code_bits, code)),
                "evidence_inside": float(evidence[inside > 0.99].mean()),
                "evidence_outside": float(evidence[inside < 0.01].mean()),
                "block_f1": block_f1(evidence > args.evidence_threshold, inside > 0.5),
            }
        )

        extraction, decoded = read(carrier, codec, rgb)
        unmarked.append({"score": float(extraction.watermark_score[0]), "payload_valid": bool(decoded.payload_valid)})

    # Copy attack: the watermark of photo i, estimated by denoising, on photo i + 1.
    for index, protected in enumerate(protected_all):
        target = photos[(index + 1) % len(photos)][1]
        for denoiser in copies:
            forged = copy_watermark(protected, target, denoiser)
            extraction, decoded = read(carrier, codec, forged)
            copies[denoiser].append({"payload_valid": bool(decoded.payload_valid), "score": float(extraction.watermark_score[0])})

    embed_rate, extract_rate = measure_throughput(carrier)
    return {
        "photos": len(photos),
        "storage": args.storage,
        "quality": quality,
        "attacks": {name: summarize(rows) for name, rows in per_attack.items()},
        "per_photo": per_attack,
        "paste": paste,
        "copies": copies,
        "unmarked": unmarked,
        "throughput": {"embed_per_s": embed_rate, "extract_per_s": extract_rate},
    }


def block_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    true_positive = float((predicted & truth).sum())
    denominator = float(predicted.sum() + truth.sum())
    return 2 * true_positive / denominator if denominator else 1.0


def print_report(result: dict) -> None:
    quality = result["quality"]
    psnrs = np.array([q["psnr"] for q in quality])
    ssims = np.array([q["ssim"] for q in quality])
    print(f"photos: {result['photos']}, protected images stored as {result['storage']}")
    print(f"PSNR protected vs original: mean {psnrs.mean():.2f} dB, min {psnrs.min():.2f} dB; SSIM mean {ssims.mean():.4f}, min {ssims.min():.4f}")
    print()
    print(f"{'attack':24s} {'bit acc mean':>12s} {'bit acc min':>11s} {'payload ok':>10s} {'score min':>9s}")
    for name, row in result["attacks"].items():
        print(f"{name:24s} {row['bit_accuracy_mean']:12.4f} {row['bit_accuracy_min']:11.4f} {row['payload_success']:10.1%} {row['score_min']:9.3f}")
    paste = result["paste"]
    print()
    print(
        f"paste 25 % area: bit acc mean {np.mean([p['bit_accuracy'] for p in paste]):.4f}, payload ok "
        f"{np.mean([p['payload_valid'] for p in paste]):.1%}, evidence inside {np.mean([p['evidence_inside'] for p in paste]):.3f} "
        f"/ outside {np.mean([p['evidence_outside'] for p in paste]):.3f}, block F1 {np.mean([p['block_f1'] for p in paste]):.3f}"
    )
    for denoiser, rows in result["copies"].items():
        print(
            f"copy attack ({denoiser} estimate): payload decodes with a valid MAC in {np.mean([r['payload_valid'] for r in rows]):.1%}, "
            f"score mean {np.mean([r['score'] for r in rows]):.3f}"
        )
    unmarked = result["unmarked"]
    print(
        f"unmarked photos: score max {max(u['score'] for u in unmarked):.4f}, "
        f"valid payloads {sum(u['payload_valid'] for u in unmarked)} of {len(unmarked)}"
    )
    rates = result["throughput"]
    print(f"throughput, one core, 256 x 256 canonical, batches of 8: embed {rates['embed_per_s']:.0f} images/s, extract {rates['extract_per_s']:.0f} images/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("tests/fixtures/photos"), help="folder of photos; 'skimage' for scikit-image's sample photos")
    parser.add_argument("--limit", type=int, default=0, help="measure at most this many photos (0: all)")
    parser.add_argument("--storage", default="png", help="format of the saved protected image: png or jpegQ (e.g. jpeg95)")
    parser.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS), choices=sorted(ATTACKS), metavar="ATTACK", help="attack names from hcr_model.bench.attacks")
    parser.add_argument("--code-bits", type=int, default=140, help="hidden code bits in the payload")
    parser.add_argument("--paste-area", type=float, default=0.25, help="share of the image area the paste edit replaces")
    parser.add_argument("--evidence-threshold", type=float, default=0.25, help="block evidence above this counts as edited for the block F1")
    parser.add_argument("--seed", type=int, default=0, help="seed for codes, paste positions and noise")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results to this JSON file")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if str(args.photos) == "skimage":
        args.photos = None
    result = run(args)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
