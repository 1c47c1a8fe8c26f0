"""Measure the carrier's crop search on dataset photos: bit accuracy, z-scores and time per image.

Each photo is protected with random carrier bits through the full-size path,
cropped (centred or at a random offset), optionally re-saved as JPEG and
brightened, and read with `DctCarrier.read_synchronised`. With --unmarked the
photos are cropped without protection, which shows how high the search's
best z-score gets on unmarked content (the reader accepts a search result
from `reading.SYNC_ZSCORE_MIN` up).

Usage:
  python scripts/measure_crop_sync.py --split val --area 0.75
  python scripts/measure_crop_sync.py --split val --area 0.7 --random-offset
  python scripts/measure_crop_sync.py --split val --area 0.75 --jpeg 75
  python scripts/measure_crop_sync.py --split val --area 0.75 --unmarked
"""

import argparse
import io
import math
import time

import numpy as np
import torch
from PIL import Image

from hcr_model.bench.measure_context import embed_full_resolution
from hcr_model.data.photos import load_photos
from hcr_model.imaging import uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.watermark.dct import DctCarrier
from hcr_model.watermark.reading import SYNC_ZSCORE_MIN


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val", choices=("train", "val", "test"), help="dataset split (default: val)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (default: 0 = all)")
    parser.add_argument("--area", type=float, default=0.75, help="share of the pixels the crop keeps (default: 0.75)")
    parser.add_argument("--random-offset", action="store_true", help="place the crop at a random offset (default: centred)")
    parser.add_argument("--jpeg", type=int, default=0, help="re-save the crop as JPEG at this quality (default: 0 = no)")
    parser.add_argument("--brightness", type=float, default=1.0, help="then multiply every channel by this factor (default: 1.0)")
    parser.add_argument("--unmarked", action="store_true", help="crop unprotected photos instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bits and offsets (default: 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    carrier = DctCarrier(SecretKey(bytes(range(32))))
    rng = np.random.default_rng(args.seed)
    records = load_photos(args.split)
    records = records[: args.limit] if args.limit else records

    accuracies, zscores, seconds = [], [], []
    for record in records:
        rgb = np.asarray(Image.open(record.file).convert("RGB"))
        height, width = rgb.shape[:2]
        bits = rng.integers(0, 2, carrier.n_bits).astype(np.uint8)
        image = rgb if args.unmarked else embed_full_resolution(carrier, rgb, bits, torch.device("cpu"))

        side = math.sqrt(args.area)
        crop_h, crop_w = round(height * side), round(width * side)
        if args.random_offset:
            top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        else:
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
        received = np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])
        if args.jpeg:
            received = jpeg(received, args.jpeg)
        if args.brightness != 1.0:
            received = np.clip(np.round(received.astype(np.float64) * args.brightness), 0, 255).astype(np.uint8)

        start = time.perf_counter()
        with torch.inference_mode():
            extraction, alignment = carrier.read_synchronised(uint8_to_tensor(received))
        seconds.append(time.perf_counter() - start)
        accuracy = float(((extraction.soft_bits[0] > 0).numpy().astype(np.uint8) == bits).mean())
        accuracies.append(accuracy)
        zscores.append(alignment.score)
        print(
            f"{record.photo_id[:28]:28s} {width}x{height} bit accuracy {accuracy:.3f} z {alignment.score:5.1f} "
            f"scale {alignment.scale_x:.4f} (true {256 / width:.4f}) offset {alignment.offset_x:.2f}, {alignment.offset_y:.2f} "
            f"(true {left * 256 / width:.2f}, {top * 256 / height:.2f}) {seconds[-1]:.2f} s",
            flush=True,
        )

    accuracies, zscores = np.array(accuracies), np.array(zscores)
    print(
        f"{len(records)} photos, area {args.area}, {'random' if args.random_offset else 'centred'} offset, jpeg {args.jpeg or 'none'}, "
        f"brightness {args.brightness}, {'unmarked' if args.unmarked else 'protected'}: mean bit accuracy {accuracies.mean():.3f}, "
        f"share >= 0.97 {np.mean(accuracies >= 0.97):.3f}, accepted (z >= {SYNC_ZSCORE_MIN}) {np.mean(zscores >= SYNC_ZSCORE_MIN):.3f}, "
        f"z max {zscores.max():.1f}, {np.mean(seconds):.2f} s per image (one thread)"
    )


if __name__ == "__main__":
    main()
