"""`hcr demo`: the main job end to end on the bundled real photos.

It protects the photos, makes an archive of edited copies (untouched copies,
JPEG re-saves, crops, real local edits with ground-truth masks, and a few
photos that were never protected), audits that archive, and prints each
verdict beside the expected one.
"""

import argparse
import csv
import io
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
from PIL import Image

from hcr_model.bench.tampering import SHAPES, tamper

logger = logging.getLogger(__name__)

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "photos"
DEMO_KINDS = ("splice", "copy_move", "text", "erase", "inpaint", "recolor", "blur")
UNMARKED_COUNT = 2  # original photos added to the edited archive without protection
EDIT_AREA = (0.10, 0.25)  # share of the image an edit covers


def save_like(rgb: np.ndarray, path: Path, quality: int = 95) -> None:
    """Write an RGB array in the format that the file suffix selects."""
    image = Image.fromarray(rgb)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def crop_at_random(rgb: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    """Keep `area` of the pixels (both sides scaled by its square root) at a random offset."""
    height, width = rgb.shape[:2]
    side = area**0.5
    crop_h, crop_w = round(height * side), round(width * side)
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    return np.ascontiguousarray(rgb[top : top + crop_h, left : left + crop_w])


def make_edits(protected_dir: Path, originals_dir: Path, edited_dir: Path, truth_dir: Path, seed: int) -> list[dict]:
    """Write the archive to audit and return one ground-truth row per file."""
    rng = np.random.default_rng(seed)
    crop_rng = np.random.default_rng([seed, 1])  # its own stream, so the edits stay those of earlier releases
    edited_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    protected = sorted(p for p in protected_dir.iterdir() if p.is_file())
    if not protected:
        raise FileNotFoundError(f"no protected images in {protected_dir}")
    truth = []

    for index, path in enumerate(protected):
        # coffee.jpg and coffee.png must not produce the same edited names.
        stem, suffix = path.name.replace(".", "_"), path.suffix
        rgb = load_rgb(path)

        untouched = edited_dir / f"{stem}__untouched{suffix}"
        shutil.copyfile(path, untouched)
        truth.append({"image_id": untouched.name, "edit": "untouched", "expected": "authentic", "truth_mask": ""})

        # A JPEG re-save at quality 75 is processing, not tampering.
        resaved = edited_dir / f"{stem}__jpeg75.jpg"
        save_like(rgb, resaved, quality=75)
        truth.append({"image_id": resaved.name, "edit": "jpeg75", "expected": "authentic", "truth_mask": ""})

        # Every other photo is also cropped to 80 % of its area at a random
        # offset: the audit finds the crop and reads the payload.
        if index % 2 == 0:
            cropped = edited_dir / f"{stem}__crop80{suffix}"
            save_like(crop_at_random(rgb, 0.8, crop_rng), cropped)
            truth.append({"image_id": cropped.name, "edit": "crop80", "expected": "authentic", "truth_mask": ""})

        kind = DEMO_KINDS[index % len(DEMO_KINDS)]
        donor = load_rgb(protected[(index + 1) % len(protected)])
        result = tamper(
            rgb, rng, kind=kind, shape=SHAPES[index % len(SHAPES)], area=float(rng.uniform(*EDIT_AREA)), donor=donor
        )
        edited = edited_dir / f"{stem}__{kind}{suffix}"
        save_like(result.image, edited)
        mask_path = truth_dir / f"{edited.name}.png"
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(mask_path)
        truth.append({"image_id": edited.name, "edit": kind, "expected": "tampered", "truth_mask": str(mask_path)})

    originals = sorted(p for p in originals_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for path in originals[:UNMARKED_COUNT]:
        target = edited_dir / f"{path.stem}__unprotected{path.suffix}"
        shutil.copyfile(path, target)
        truth.append({"image_id": target.name, "edit": "never protected", "expected": "unmarked", "truth_mask": ""})

    with open(truth_dir / "truth.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(truth[0]))
        writer.writeheader()
        writer.writerows(truth)
    return truth


def mask_iou(mask_uri: str | None, truth_mask: str) -> float | None:
    """IoU of the audit's mask with the ground truth; None when either is missing."""
    if not truth_mask:
        return None
    truth = np.asarray(Image.open(truth_mask)) > 127
    if not mask_uri:
        return 0.0
    import fsspec

    with fsspec.open(mask_uri, "rb") as handle:
        predicted = np.asarray(Image.open(io.BytesIO(handle.read())).convert("L")) > 127
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def report(verdicts_dir: Path, truth: list[dict]) -> int:
    """Print each verdict beside the expected one; return the number of mismatches."""
    table = ds.dataset(str(verdicts_dir), format="parquet", partitioning="hive").to_table()
    rows = {row["image_id"]: row for row in table.to_pylist()}
    mismatches = 0
    print(f"\n{'image':42} {'edit':16} {'expected':10} {'verdict':10} {'mask IoU':>8}  retrieved")
    for expected in truth:
        row = rows.get(expected["image_id"])
        if row is None:
            print(f"{expected['image_id']:42} {expected['edit']:16} {expected['expected']:10} {'MISSING':10}")
            mismatches += 1
            continue
        iou = mask_iou(row.get("mask_uri"), expected["truth_mask"])
        iou_text = f"{iou:8.2f}" if iou is not None else f"{'':8}"
        marker = "" if row["verdict"] == expected["expected"] else "  <- differs"
        mismatches += row["verdict"] != expected["expected"]
        retrieved = row.get("retrieved_image_id") or "-"
        print(
            f"{expected['image_id']:42} {expected['edit']:16} {expected['expected']:10} {row['verdict']:10} "
            f"{iou_text}  {retrieved}{marker}"
        )
    print(f"\n{len(truth) - mismatches} of {len(truth)} verdicts match the ground truth.")
    return mismatches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hcr demo",
        description="Protect the bundled photos, edit copies, audit them and compare the verdicts with the truth.",
    )
    parser.add_argument("--workdir", type=Path, default=Path(".hcr-demo"), help="output folder (default: .hcr-demo; replaced)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help=f"photos to protect (default: {DEFAULT_PHOTOS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits (default: 0)")
    args = parser.parse_args(argv)
    # hcr's own loggers at INFO; third-party ones (httpx, prefect's client) stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("flows", "actors", "hcr_model", "schemas"):
        logging.getLogger(name).setLevel(logging.INFO)

    from flows.api import audit, protect
    from flows.runtime import head_start, prepare_environment
    from schemas.config import PrefectOptions, RayOptions

    if not args.photos.is_dir():
        print(f"error: photo folder {args.photos} not found; pass --photos DIR", file=sys.stderr)
        return 2
    workdir = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)

    # The demo keeps its own key unless one is configured.
    if not os.environ.get("HCR_KEY") and not os.environ.get("HCR_KEY_FILE"):
        key_file = workdir / "key"
        key_file.write_text(os.urandom(16).hex() + "\n")
        key_file.chmod(0o600)
        os.environ["HCR_KEY_FILE"] = str(key_file)
        print(f"demo key written to {key_file}")

    store, edited, truth_dir, results = workdir / "store", workdir / "edited", workdir / "truth", workdir / "audit"

    # One local Ray and one Prefect server serve both flows, which saves a start of each.
    ray_options = RayOptions()
    prepare_environment(ray_options, PrefectOptions())
    with head_start(ray_options):
        print(f"1/3 protecting {args.photos} -> {store}")
        print(protect(str(args.photos), str(store), archive="demo").format())

        print(f"\n2/3 editing copies -> {edited} (ground truth in {truth_dir})")
        truth = make_edits(store / "protected" / "demo", args.photos, edited, truth_dir, args.seed)

        print(f"\n3/3 auditing {edited} -> {results}")
        summary = audit(str(edited), str(results), registry=str(store), archive="demo-edited")
        print(summary.format())

    report(results / "verdicts", truth)
    print(
        "\nQuery the verdicts with DuckDB:\n"
        f"  duckdb -c \"SELECT verdict, count(*) FROM read_parquet('{results}/verdicts/*/*/*.parquet', "
        "hive_partitioning = true) GROUP BY verdict\""
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
