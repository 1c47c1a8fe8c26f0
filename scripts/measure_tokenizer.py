"""Measure a tokenizer weight file: PSNR/SSIM per number of scales, codebook usage, speed.

Images are the split's photos squashed to the canonical R × R grid (as audits
see them), plus the benchmark tiles (``TileDataset`` centre squares) and the
test fixture photos. Usage:

    python scripts/measure_tokenizer.py --weights v1 --split test --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hcr_model.imaging import to_canonical
from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "photos"
FIXTURE_NAMES = ("astronaut.jpg", "chelsea.jpg", "china.jpg", "coffee.jpg", "flower.jpg", "rocket.jpg")


def _read(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _canonical(photo: torch.Tensor, resolution: int) -> torch.Tensor:
    """Squash a photo to R × R with the audit's own resize (antialiased bicubic), so figures match `hcr bench`."""
    return to_canonical(photo[None], resolution)[0]


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = (pred - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


def _usage(counts: torch.Tensor) -> tuple[int, float]:
    p = counts.float() / counts.sum().clamp_min(1)
    nonzero = p[p > 0]
    return int((counts > 0).sum()), float((-(nonzero * nonzero.log()).sum()).exp())


@torch.no_grad()
def measure_quality(model: MultiScaleVQ, images: torch.Tensor, batch_size: int = 8) -> dict:
    """PSNR and SSIM (means over images) for each number of scales, and per-scale codebook usage."""
    from pytorch_msssim import ssim

    cfg = model.cfg
    n_scales = len(cfg.scales)
    psnr_sums, ssim_sums = np.zeros(n_scales), np.zeros(n_scales)
    counts = torch.zeros(n_scales, cfg.codebook_size, dtype=torch.long)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        tokens = model.encode(x)
        for k, t in enumerate(tokens):
            counts[k] += torch.bincount(t.flatten(), minlength=cfg.codebook_size)
        for n in range(1, n_scales + 1):
            out = model.decode(tokens, n_scales=n)
            psnr_sums[n - 1] += float(_psnr(out, x).sum())
            ssim_sums[n - 1] += float(ssim(out, x, data_range=1.0, size_average=False).sum())

    count = images.shape[0]
    per_scale = []
    for k, s in enumerate(cfg.scales):
        used, perplexity = _usage(counts[k])
        per_scale.append(
            {
                "scale": s,
                "psnr_db": psnr_sums[k] / count,
                "ssim": ssim_sums[k] / count,
                "codes_used": used,
                "perplexity": perplexity,
                "tokens": int(counts[k].sum()),
            }
        )
    return {"images": count, "per_scale": per_scale}


@torch.no_grad()
def measure_speed(model: MultiScaleVQ, images: torch.Tensor, batch_size: int = 8, repeats: int = 3) -> float:
    """Encode+decode throughput in images/s (best of ``repeats``) on the current torch threads."""
    x = images[:batch_size]
    model.decode(model.encode(x))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.decode(model.encode(x))
        best = min(best, time.perf_counter() - start)
    return x.shape[0] / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="v1", help="weight file path or shipped version name")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="benchmark split to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from hcr_model.data.photos import TileDataset, load_photos

    model = load_tokenizer(args.weights)
    resolution = model.cfg.resolution
    records = load_photos(args.split)
    canonical = torch.stack([_canonical(_read(r.file), resolution) for r in records])
    tiles = TileDataset(records, resolution=resolution, augment=False, tiles_per_photo=1)
    tile_images = torch.stack([tiles[i]["image"] for i in range(len(tiles))])
    fixtures = torch.stack([_canonical(_read(FIXTURES / name), resolution) for name in FIXTURE_NAMES])

    results = {
        "weights": str(args.weights),
        "split": args.split,
        "canonical": measure_quality(model, canonical),
        "tiles": measure_quality(model, tile_images),
        "fixtures": measure_quality(model, fixtures),
        "encode_decode_images_per_s": measure_speed(model, canonical),
        "threads": args.threads,
    }

    print(f"{args.split} split, {len(records)} photos squashed to {resolution}x{resolution}:")
    print("| scales used | PSNR dB | SSIM | codes used | perplexity | tiles PSNR dB |")
    print("|---|---|---|---|---|---|")
    for row, tile_row in zip(results["canonical"]["per_scale"], results["tiles"]["per_scale"], strict=True):
        print(
            f"| 1..{row['scale']} | {row['psnr_db']:.2f} | {row['ssim']:.3f} | {row['codes_used']} / {row['tokens']} tokens "
            f"| {row['perplexity']:.1f} | {tile_row['psnr_db']:.2f} |"
        )
    print(f"fixture photos ({len(FIXTURE_NAMES)}), all scales: {results['fixtures']['per_scale'][-1]['psnr_db']:.2f} dB")
    print(f"encode+decode: {results['encode_decode_images_per_s']:.2f} images/s ({args.threads} thread)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
