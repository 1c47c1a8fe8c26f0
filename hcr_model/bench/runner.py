"""`hcr bench`: run a benchmark suite and write `results.json` and `results.md`.

Sections: imperceptibility, robustness, localization, recovery, retrieval,
forgery, tokenizer, speed. A section whose weights are missing is reported as
`skipped` with the reason, and a part of a section that needs a missing
model (the audit columns, say) is left out with a note. A section or part
that fails is reported with its exception, the other sections still run, and
the exit status is 1.

Usage:
  hcr bench --suite quick --out bench-out            # fixtures, a few minutes on 2 cores
  hcr bench --suite full --out bench-full             # the test split (`hcr data build` first)
  python -m hcr_model.bench.runner --suite quick --limit 2 --sections robustness
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hcr_model.bench import (
    measure_forgery,
    measure_imperceptibility,
    measure_localization,
    measure_recovery,
    measure_retrieval,
    measure_robustness,
    measure_speed,
    measure_tokenizer,
)
from hcr_model.bench.measure_context import BenchContext, SectionSkipped, load_models
from hcr_model.bench.report_markdown import render
from hcr_model.bench.suites import SUITES, check_config, load_suite_images
from hcr_model.bundle import select_device
from hcr_model.data.photos import DatasetNotBuiltError

logger = logging.getLogger(__name__)

SECTIONS = {
    "imperceptibility": measure_imperceptibility.measure,
    "robustness": measure_robustness.measure,
    "localization": measure_localization.measure,
    "recovery": measure_recovery.measure,
    "retrieval": measure_retrieval.measure,
    "forgery": measure_forgery.measure,
    "tokenizer": measure_tokenizer.measure,
    "speed": measure_speed.measure,
}


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcr bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick", help="quick: test fixtures; full: the test split (default: quick)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder for results.json and results.md (default: bench-results)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images; the retrieval gallery keeps every image (default: 0 = all)")
    parser.add_argument("--version", default="v1", help="shipped weights version (default: v1)")
    parser.add_argument("--weights", type=Path, default=None, help="folder with tokenizer.pt, localizer.pt, recovery.pt, calibration.json and optionally refiner.pt, used instead of --version's (default: none)")
    parser.add_argument("--sections", default=None, help=f"comma-separated sections to run (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--attacks", default=None, help="comma-separated robustness attacks, replacing the suite's (default: the suite's)")
    parser.add_argument("--peers", default=None, help="comma-separated peers among dwtDct, dwtDctSvd, rivaGan; 'none' for no peer (default: all three)")
    parser.add_argument("--rivagan-images", type=int, default=None, help="max images for RivaGAN, 0 = all (default: 1 in quick, 4 in full)")
    parser.add_argument("--kinds-per-image", type=int, default=None, help="tampering edits per image, kinds taken in turn; 0 = every kind on every image (default: 2 in quick, 3 in full)")
    parser.add_argument(
        "--probe-controls",
        default=None,
        help="comma-separated tokenizer weight files whose hidden code is probed beside the bench's tokenizer, such as one trained with --no-distill (default: none)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, the one-core speed numbers)")
    parser.add_argument("--seed", type=int, default=0, help="seed of payloads, edits and regions (default: 0)")
    return parser


def _config(args: argparse.Namespace):
    update = {"seed": args.seed}
    if args.attacks:
        update["attacks"] = _names(args.attacks)
    if args.peers:
        update["peers"] = () if args.peers == "none" else _names(args.peers)
    if args.rivagan_images is not None:
        update["rivagan_images"] = args.rivagan_images
    if args.probe_controls:
        update["probe_controls"] = _names(args.probe_controls)
    if args.kinds_per_image is not None:
        update["kinds_per_image"] = args.kinds_per_image
    config = SUITES[args.suite].model_copy(update=update)
    check_config(config)
    return config


def _clean(value):
    """Replace non-finite floats (JSON has none) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def run_section(name: str, ctx: BenchContext) -> dict:
    """Run one section; a skip or a failure becomes the section's status."""
    start, cpu_start = time.perf_counter(), time.process_time()
    logger.info("section %s: start", name)
    try:
        result = {"status": "ok", "reason": None, **SECTIONS[name](ctx)}
    except SectionSkipped as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' numbers
        logger.exception("section %s failed", name)
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu_start
    logger.info("section %s: %s in %.1f s (%.1f s of CPU)", name, result["status"], result["seconds"], result["cpu_seconds"])
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    sections = _names(args.sections) or tuple(SECTIONS)
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        print(f"error: unknown sections {unknown}; expected names from {list(SECTIONS)}", file=sys.stderr)
        return 2
    try:
        config = _config(args)
        gallery = load_suite_images(config)
    except (ValueError, FileNotFoundError, DatasetNotBuiltError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images = gallery[: args.limit] if args.limit > 0 else gallery

    start = time.perf_counter()
    device = select_device()
    models = load_models(args.version, args.weights, device)
    ctx = BenchContext(config, images, gallery, models, device)
    results = {name: run_section(name, ctx) for name in sections}

    report = _clean(
        {
            "suite": config.name,
            "command": "hcr bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "seconds": time.perf_counter() - start,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": str(device),
            },
            "weights": models.folder or f"version {args.version} not found",
            "missing_models": models.missing,
            "images": len(images),
            "gallery": len(gallery),
            "protection": ctx.protection_path,
            "config": config.model_dump(),
            "sections": results,
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(render(report))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    for name, section in results.items():
        print(f"  {name}: {section['status']}" + (f" ({section['reason']})" if section["reason"] else ""))
        for error in section.get("errors", []):
            print(f"    {error}")
    failed = any(section["status"] == "error" or section.get("errors") for section in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
