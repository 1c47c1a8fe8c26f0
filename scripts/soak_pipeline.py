"""Soak run: many images through `hcr protect` and `hcr audit`, with the memory trend.

The images are crops and scalings of the benchmark photos (run `hcr data
build` first), and 10 % of the protected copies are edited before the audit,
as in scripts/bench_pipeline.py. While each command runs, the resident
memory (RSS) of its driver process and of its largest Ray worker is sampled
every `--interval` seconds into `WORKDIR/rss.csv`. The summary gives the
peaks and the trend: the least-squares slope of the worker's RSS over the
second half of each run, in MB per 1,000 images, where a flat line (no
leak) is about 0.

Usage: python scripts/soak_pipeline.py [--images 20000] [--num-actors 1] [--workdir /tmp/hcr-soak]

NOTE: the 20,000-image run with two actors takes about two hours on two
cores (docs/BENCHMARKS.md). The slope is only meaningful when a run lasts far
longer than its start-up: a 16-image check gave slopes of thousands of MB
per 1,000 images.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from bench_pipeline import edit_share, prepare_workdir, run_cli


def trend(samples: list[dict], images: int, seconds: float) -> dict:
    """Return the peaks and the second-half worker RSS slope of one job (MB, MB per 1,000 images)."""
    times = np.array([row["seconds"] for row in samples])
    worker = np.array([row["worker_mb"] for row in samples])
    late = times >= seconds / 2
    slope = float(np.polyfit(times[late], worker[late], 1)[0]) if late.sum() >= 3 else float("nan")  # MB per second
    return {
        "seconds": seconds,
        "images_per_s": images / seconds,
        "driver_peak_mb": max((row["driver_mb"] for row in samples), default=0.0),
        "worker_peak_mb": float(worker.max()) if worker.size else 0.0,
        "worker_slope_mb_per_1000_images": slope * seconds / images * 1000,
        "samples": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000, help="images to make (default: 20000)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hcr-soak"), help="scratch folder (replaced)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model batch (default: 8)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between RSS samples (default: 2)")
    parser.add_argument("--num-actors", type=int, default=1, help="model actors per run (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops and edits (default: 0)")
    args = parser.parse_args(argv)

    source, store, edited, results, env = prepare_workdir(args.workdir, args.images, args.seed)
    hcr = [sys.executable, "-m", "flows.cli"]
    batch = ["--batch-size", str(args.batch_size), "--num-actors", str(args.num_actors), "--no-progress"]

    traces: dict[str, list[dict]] = {"protect": [], "audit": []}
    protect_cmd = [*hcr, "protect", str(source), "--out", str(store), "--archive", "soak", *batch]
    protect_s = run_cli(protect_cmd, env, args.interval, traces["protect"])["seconds"]
    edited_count = edit_share(store / "protected" / "soak", edited, args.seed)
    audit_cmd = [*hcr, "audit", str(edited), "--registry", str(store), "--out", str(results), "--archive", "soak", *batch]
    audit_s = run_cli(audit_cmd, env, args.interval, traces["audit"])["seconds"]

    with open(args.workdir / "rss.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["job", "seconds", "driver_mb", "worker_mb"])
        writer.writeheader()
        for job, samples in traces.items():
            writer.writerows({"job": job, **sample} for sample in samples)
    summary = {
        "images": args.images,
        "num_actors": args.num_actors,
        "edited": edited_count,
        "protect": trend(traces["protect"], args.images, protect_s),
        "audit": trend(traces["audit"], args.images, audit_s),
        "rss_csv": str(args.workdir / "rss.csv"),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
