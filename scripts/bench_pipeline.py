"""Pipeline overhead: `hcr protect` / `hcr audit` through the CLI vs the bare batched model loop.

Both sides run in this one invocation on the same images, so the ratio holds
when the machine's speed drifts. The images are random crops and scalings of
the benchmark photos (run `hcr data build` first); a share of the protected
copies is edited with the tampering generator before the audit.

The bare loop decodes each file with Pillow and calls `Protector.protect_batch`
/ `Auditor.audit_batch` on batches of the same size as the actors use, with
nothing else: no Prefect, no Ray, no Parquet, no object writes. Peak RSS is
sampled from /proc every second: the CLI's driver process and the largest
Ray worker in its process tree.

With `--rounds N` each job's CLI and bare loop run N times each, in
alternating order (CLI first in odd rounds, bare first in even ones), and the
overhead is the ratio of the summed times. On a shared 2-core machine the
speed of identical runs varied by up to 20 % within minutes, so one pair
alone can be off by that much.

Usage: python scripts/bench_pipeline.py [--images 2000] [--jobs both|protect|audit] [--rounds 1] [--workdir /tmp/hcr-bench-pipeline]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

EDITED_SHARE = 0.10


def process_tree_rss(root_pid: int) -> tuple[int, int]:
    """Return (RSS of root_pid, max RSS of any descendant) in bytes, from /proc."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields.get("PPid", "0").strip())
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    descendants, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    return rss.get(root_pid, 0), max((rss.get(pid, 0) for pid in descendants), default=0)


def run_cli(command: list[str], env: dict, interval: float = 1.0, trace: list[dict] | None = None) -> dict:
    """Run one hcr command, sampling the RSS of its process tree; return timing and peaks.

    Samples are taken every `interval` seconds. Each one reads every process's
    /proc status (about 7 ms of CPU), so the default 1 s costs the timed
    command under 1 % of a core. With `trace`, each sample is also
    appended to it as {"seconds", "driver_mb", "worker_mb"}.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"driver": 0, "worker": 0}

    def sample() -> None:
        while process.poll() is None:
            driver, worker = process_tree_rss(process.pid)
            peaks["driver"] = max(peaks["driver"], driver)
            peaks["worker"] = max(peaks["worker"], worker)
            if trace is not None:
                trace.append({"seconds": time.perf_counter() - start, "driver_mb": driver / 2**20, "worker_mb": worker / 2**20})
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}:\n{output[-4000:]}")
    figures = {"seconds": seconds, "driver_peak_rss_mb": peaks["driver"] / 2**20, "worker_peak_rss_mb": peaks["worker"] / 2**20}
    # The run summary's time inside the actors, from the first shard to the last.
    processed = re.search(r"images processed in ([0-9.]+) s", output)
    if processed:
        figures["processing_seconds"] = float(processed.group(1))
    return figures


def make_images(target: Path, count: int, seed: int) -> None:
    """Write `count` JPEG crops and scalings of the benchmark photos."""
    from hcr_model.data.photos import load_photos

    rng = np.random.default_rng(seed)
    photos = load_photos()
    target.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        with Image.open(photos[index % len(photos)].file) as opened:
            photo = opened.convert("RGB")
        width, height = photo.size
        share = rng.uniform(0.5, 1.0)
        crop_w, crop_h = max(32, int(width * share)), max(32, int(height * share))
        x0, y0 = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        side = int(rng.integers(256, 641))
        scale = side / max(crop_w, crop_h)
        size = (max(16, round(crop_w * scale)), max(16, round(crop_h * scale)))
        photo.crop((x0, y0, x0 + crop_w, y0 + crop_h)).resize(size, Image.BICUBIC).save(target / f"{index:05d}.jpg", quality=92)


def prepare_workdir(workdir: Path, images: int, seed: int) -> tuple[Path, Path, Path, Path, dict]:
    """Replace `workdir`, make the source images in it; return (source, store, edited, results, env).

    `env` is this process's environment with a fixed benchmark HCR_KEY unless one is set.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    source, store, edited, results = (workdir / name for name in ("source", "store", "edited", "audit"))
    make_images(source, images, seed)
    env = dict(os.environ)
    env.setdefault("HCR_KEY", "00112233445566778899aabbccddeeff")
    return source, store, edited, results, env


def edit_share(protected: Path, target: Path, seed: int) -> int:
    """Copy the protected archive, editing EDITED_SHARE of it; return the edited count."""
    from hcr_model.bench.tampering import tamper

    rng = np.random.default_rng(seed)
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(protected.iterdir())
    edited = set(rng.choice(len(files), size=int(len(files) * EDITED_SHARE), replace=False).tolist())
    for index, path in enumerate(files):
        if index not in edited:
            shutil.copyfile(path, target / path.name)
            continue
        rgb = np.asarray(Image.open(path).convert("RGB"))
        donor = np.asarray(Image.open(files[(index + 1) % len(files)]).convert("RGB"))
        result = tamper(rgb, rng, donor=donor)
        Image.fromarray(result.image).save(target / path.name, quality=95)
    return len(edited)


def bare_loop(folder: Path, kind: str, batch_size: int, registry: Path | None) -> dict:
    """Decode every file and run the engine on batches; nothing else."""
    import pyarrow.dataset as ds
    import torch

    from hcr_model.bundle import load_bundle
    from hcr_model.engine import Auditor, ImageInput, Protector
    from hcr_model.keys import load_key

    torch.set_num_threads(1)
    start = time.perf_counter()
    bundle = load_bundle()
    key = load_key()
    if kind == "protect":
        runner = Protector(bundle, key).protect_batch
    else:
        table = ds.dataset(str(registry / "registry"), format="parquet", partitioning="hive").to_table()
        runner = Auditor(bundle, key, table).audit_batch
    files = sorted(folder.iterdir())
    for begin in range(0, len(files), batch_size):
        batch = [
            ImageInput(image_id=path.name, rgb=np.asarray(Image.open(path).convert("RGB")))
            for path in files[begin : begin + batch_size]
        ]
        runner(batch)
    return {"seconds": time.perf_counter() - start}


def time_job(job: str, rounds: int, cli: Callable[[int], dict], bare: Callable[[], dict]) -> list[dict]:
    """Time one job's CLI and bare loop `rounds` times each; return one {"cli", "bare"} pair per round.

    The order alternates (CLI first, then bare first), so a drift of the
    machine's speed during the run weighs on both sides alike.
    """
    pairs = []
    for round_index in range(rounds):
        if round_index % 2 == 0:
            pair = {"cli": cli(round_index)}
            pair["bare"] = bare()
        else:
            pair = {"bare": bare()}
            pair["cli"] = cli(round_index)
        pair["overhead"] = pair["cli"]["seconds"] / pair["bare"]["seconds"] - 1.0
        print(f"{job} round {round_index + 1}: CLI {pair['cli']['seconds']:.1f} s, bare {pair['bare']['seconds']:.1f} s, "
              f"overhead {pair['overhead']:+.1%}", flush=True)
        pairs.append(pair)
    return pairs


def report(job: str, images: int, pairs: list[dict]) -> dict:
    """Print and return the job's figures summed over the rounds."""
    cli_s = sum(pair["cli"]["seconds"] for pair in pairs)
    bare_s = sum(pair["bare"]["seconds"] for pair in pairs)
    # Start-up and shutdown: the CLI's wall time outside the shards' processing.
    fixed = [pair["cli"]["seconds"] - pair["cli"].get("processing_seconds", float("nan")) for pair in pairs]
    processing_s = sum(pair["cli"].get("processing_seconds", float("nan")) for pair in pairs)
    figures = {
        "rounds": pairs,
        "cli_images_per_s": images * len(pairs) / cli_s,
        "bare_images_per_s": images * len(pairs) / bare_s,
        "overhead": cli_s / bare_s - 1.0,
        "in_shard_overhead": processing_s / bare_s - 1.0,
        "fixed_seconds": fixed,
        "driver_peak_rss_mb": max(pair["cli"]["driver_peak_rss_mb"] for pair in pairs),
        "worker_peak_rss_mb": max(pair["cli"]["worker_peak_rss_mb"] for pair in pairs),
    }
    print(
        f"{job}: CLI {figures['cli_images_per_s']:.2f} images/s, bare loop {figures['bare_images_per_s']:.2f} images/s, "
        f"overhead {figures['overhead']:+.1%} over {len(pairs)} round(s) "
        f"(inside the shards {figures['in_shard_overhead']:+.1%}; CLI start-up and shutdown "
        f"{', '.join(f'{value:.1f}' for value in fixed)} s); "
        f"peak RSS driver {figures['driver_peak_rss_mb']:.0f} MB, largest worker {figures['worker_peak_rss_mb']:.0f} MB"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images to make (default: 2000)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hcr-bench-pipeline"), help="scratch folder (replaced)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model batch, both sides (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops and edits (default: 0)")
    parser.add_argument(
        "--jobs", choices=("protect", "audit", "both"), default="both",
        help="which job to time (default: both). The audit needs a protect run, which is then made but not timed "
        "against a bare loop.",
    )
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="CLI and bare-loop runs per job, in alternating order; the overhead is over their sums (default: 1)",
    )
    args = parser.parse_args(argv)

    source, store, edited, results, env = prepare_workdir(args.workdir, args.images, args.seed)
    os.environ.update(env)
    hcr = [sys.executable, "-m", "flows.cli"]
    batch = ["--batch-size", str(args.batch_size), "--no-progress"]
    jobs = ("protect", "audit") if args.jobs == "both" else (args.jobs,)
    figures: dict = {"images": args.images, "batch_size": args.batch_size}

    # Each CLI round writes to its own folder: a rerun into the same one would skip every finished shard.
    def protect_cli(round_index: int) -> dict:
        out = store if round_index == 0 else args.workdir / f"store-{round_index}"
        return run_cli([*hcr, "protect", str(source), "--out", str(out), "--archive", "bench", *batch], env)

    def audit_cli(round_index: int) -> dict:
        out = results if round_index == 0 else args.workdir / f"audit-{round_index}"
        return run_cli([*hcr, "audit", str(edited), "--registry", str(store), "--out", str(out), "--archive", "bench", *batch], env)

    if "protect" in jobs:
        figures["protect"] = report(
            "protect", args.images, time_job("protect", args.rounds, protect_cli, lambda: bare_loop(source, "protect", args.batch_size, None))
        )
    else:
        protect_cli(0)
    if "audit" in jobs:
        figures["edited"] = edit_share(store / "protected" / "bench", edited, args.seed)
        figures["audit"] = report(
            "audit", args.images, time_job("audit", args.rounds, audit_cli, lambda: bare_loop(edited, "audit", args.batch_size, store))
        )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
