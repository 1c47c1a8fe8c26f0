"""Calibrate the copied-watermark check: keyed template present, carrier bits not agreeing.

A copy attack adds one protected image's estimated watermark to other
content. The sync template is additive, so it moves with the copy, while the
QIM bits do not: they sat on the lattice only for the first image's DCT
coefficients. A genuine protected image loses both together under most
processing, with two exceptions that the check leaves out. Blur removes the
QIM bits before the template's low harmonics, so the template is read on its
high harmonics only (`sync.HIGH_HARMONICS`). Clipping breaks the bits while
much of the template stays, and so do blur and downscaling on images below
the carrier's reliable size. So images with COPY_CLIPPED_SHARE_MAX or more of
their pixels clipped, and images with a side below
`DctCarrier.min_reliable_side`, are not checked. The audit calls an image
with an unreadable payload `forged` when all of `verdict.copied_mark` hold.

For every photo of the chosen splits this script builds:
- genuine images: the photo protected with random carrier bits, then each
  attack of the robustness grid, JPEG 30, and each tampering kind over 35 %
  of the pixels;
- unmarked images: the photo itself, after JPEG 75 and after blur 1;
- copies: the next photo with this photo's watermark estimate added, for
  each estimator of the benchmark's forgery section.
It prints the z-score quantiles of each group and the share of each group
the check flags. Every genuine and unmarked share must be 0. The payload is
not decoded here: the check is scored on every image, including genuine
ones whose payload would decode and never reach it.

Usage:
  python scripts/calibrate_copy_detection.py                  # train + val photos
  python scripts/calibrate_copy_detection.py --splits val --limit 20
"""

import argparse
import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hcr_model import verdict
from hcr_model.bench.attacks import ATTACKS
from hcr_model.bench.measure_context import apply_attack, canonical_stack, embed_full_resolution
from hcr_model.bench.measure_forgery import copy_watermark, estimate_watermark
from hcr_model.bench.tampering import TAMPER_KINDS, tamper
from hcr_model.data.photos import load_photos
from hcr_model.imaging import clipped_share, rgb_to_luma
from hcr_model.keys import SecretKey
from hcr_model.verdict import COPY_CARRIER_ZSCORE_MAX, COPY_CLIPPED_SHARE_MAX, COPY_TEMPLATE_ZSCORE, copied_mark, copy_template_needed
from hcr_model.watermark.dct import DctCarrier
from hcr_model.watermark.sync import HIGH_HARMONICS

ESTIMATORS = ("median3", "gaussian1", "median3x2", "oracle")


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def variants(index: int, photos: list[np.ndarray], protected: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return the named images built from photo `index`: genuine/..., unmarked/... and copy/..."""
    rgb, marked = photos[index], protected[index]
    out = {f"genuine/{name}": apply_attack(name, marked) for name in ATTACKS}
    out["genuine/jpeg30"] = jpeg(marked, 30)
    donor = photos[(index + 2) % len(photos)]
    for kind in TAMPER_KINDS:
        out[f"genuine/edit_{kind}"] = tamper(marked, rng, kind=kind, area=0.35, donor=donor).image
    out["unmarked/clean"] = rgb
    out["unmarked/jpeg75"] = apply_attack("jpeg75", rgb)
    out["unmarked/blur1"] = apply_attack("blur1", rgb)
    target = photos[(index + 1) % len(photos)]
    for estimator in ESTIMATORS:
        out[f"copy/{estimator}"] = copy_watermark(estimate_watermark(marked, estimator, rgb), target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", default="train,val", help="comma-separated dataset splits (default: train,val)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos of each split (default: 0 = all)")
    parser.add_argument("--template-z", type=float, default=COPY_TEMPLATE_ZSCORE, help=f"template z-score (high harmonics) from which a copy is flagged (default: {COPY_TEMPLATE_ZSCORE})")
    parser.add_argument("--carrier-z", type=float, default=COPY_CARRIER_ZSCORE_MAX, help=f"largest carrier z-score a copy may have (default: {COPY_CARRIER_ZSCORE_MAX})")
    parser.add_argument("--clipped", type=float, default=COPY_CLIPPED_SHARE_MAX, help=f"share of clipped pixels from which the check abstains (default: {COPY_CLIPPED_SHARE_MAX})")
    parser.add_argument("--save", type=Path, default=None, help="also write every image's z-scores and clipped share to this .npz file (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bits and edits (default: 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    carrier = DctCarrier(SecretKey(bytes(range(32))))
    rng = np.random.default_rng(args.seed)
    records = []
    for split in args.splits.split(","):
        found = load_photos(split)
        records.extend(found[: args.limit] if args.limit else found)
    photos = [np.asarray(Image.open(record.file).convert("RGB")) for record in records]
    protected = [embed_full_resolution(carrier, rgb, rng.integers(0, 2, carrier.n_bits).astype(np.uint8), torch.device("cpu")) for rgb in photos]
    print(f"{len(photos)} photos from {args.splits}", flush=True)

    template_z: dict[str, list[float]] = defaultdict(list)
    carrier_z: dict[str, list[float]] = defaultdict(list)
    clipped: dict[str, list[float]] = defaultdict(list)
    sides: dict[str, list[int]] = defaultdict(list)
    start = time.perf_counter()
    for index in range(len(photos)):
        named = variants(index, photos, protected, rng)
        with torch.inference_mode():
            canonical = canonical_stack(list(named.values()), carrier.resolution, torch.device("cpu"))
            tz = carrier.sync.presence_zscore(rgb_to_luma(canonical) * 255.0, HIGH_HARMONICS).tolist()
            cz = carrier.extract(canonical).slots["zscore"].tolist()
            share = clipped_share(canonical).tolist()
        for name, t, c, k in zip(named, tz, cz, share):
            template_z[name].append(t)
            carrier_z[name].append(c)
            clipped[name].append(k)
            sides[name].append(min(named[name].shape[:2]))
        if (index + 1) % 25 == 0:
            print(f"  {index + 1} / {len(photos)} photos, {time.perf_counter() - start:.0f} s", flush=True)

    if args.save is not None:
        columns = {"template_z": template_z, "carrier_z": carrier_z, "clipped": clipped, "side": sides}
        np.savez(args.save, **{f"{name}:{column}": np.array(values[name]) for column, values in columns.items() for name in template_z})
        print(f"saved {args.save}")

    # The thresholds on the command line replace the library's for this report.
    verdict.COPY_TEMPLATE_ZSCORE, verdict.COPY_CARRIER_ZSCORE_MAX, verdict.COPY_CLIPPED_SHARE_MAX = args.template_z, args.carrier_z, args.clipped
    print(
        f"\ncheck: template z (high harmonics) >= {args.template_z} + {verdict.COPY_TEMPLATE_SLOPE} per carrier z above "
        f"{verdict.COPY_CARRIER_ZSCORE_FREE}, carrier z <= {args.carrier_z}, "
        f"clipped share < {args.clipped}, shorter side >= {carrier.min_reliable_side} px"
    )
    print(f"{'group':28s} {'template z: min / p50 / max':>30s} {'carrier z: min / p50 / max':>30s} {'flagged':>8s}")
    for name in sorted(template_z):
        t, c, k = np.array(template_z[name]), np.array(carrier_z[name]), np.array(clipped[name])
        side = np.array(sides[name])
        flagged = float(np.mean([copied_mark(*row, carrier.min_reliable_side) for row in zip(t, c, k, side)]))
        print(f"{name:28s} {t.min():9.1f} {np.median(t):9.1f} {t.max():9.1f} {c.min():9.1f} {np.median(c):9.1f} {c.max():9.1f} {flagged:8.3f}")

    # The margin the thresholds leave: the genuine and unmarked reads nearest
    # to being flagged, by how much template z-score they lack.
    near = []
    for name, values in template_z.items():
        if name.startswith("copy/"):
            continue
        for t, c, k, side in zip(values, carrier_z[name], clipped[name], sides[name]):
            if c <= args.carrier_z and k < args.clipped and side >= carrier.min_reliable_side:
                near.append((copy_template_needed(c) - t, t, c, k, side, name))
    print("\ngenuine or unmarked reads nearest to the check (template z lacking):")
    for lacking, t, c, k, side, name in sorted(near)[:8]:
        print(f"  lacking {lacking:5.1f}  template z {t:6.1f}  carrier z {c:6.1f}  clipped {k:4.2f}  shorter side {side:4d} px  {name}")

if __name__ == "__main__":
    main()
