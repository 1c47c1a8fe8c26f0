"""Speed: images per second of the carrier and of the engine's batch calls.

Each measurement runs once to warm up, then repeats until `speed_seconds`
have passed. The thread count is torch's at run time (`hcr bench` sets 1
unless `--threads` sets another count), and the load average is recorded
because a shared machine slows every number down.

Rows: carrier embed and extract on canonical batches, and the full payload
read (extract and BCH/MAC decoding). The peers' embedding rate comes from the
imperceptibility section, which timed it. `Protector.protect_batch` and
`Auditor.audit_batch` run on full-size images, the audit on protected and on
tampered images (the second runs the recovery Transformer). The engine's
protected pixels are compared with the benchmark's own protection.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from hcr_model.bench.measure_context import BenchContext, canonical_stack, run_part

logger = logging.getLogger(__name__)


def images_per_second(run: Callable[[], object], images: int, seconds: float) -> float:
    """Warm up once, then repeat `run` (which handles `images` images) for at least `seconds`."""
    run()
    count, start = 0, time.perf_counter()
    while True:
        run()
        count += images
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def _carrier_rows(ctx: BenchContext, batch: int, seconds: float) -> list[dict]:
    chosen = [ctx.protected[i % len(ctx.protected)] for i in range(batch)]
    canonical = canonical_stack([p.rgb for p in chosen], ctx.resolution, ctx.device)
    bits = torch.from_numpy(np.stack([p.carrier_bits for p in chosen])).to(ctx.device)

    def read_payload():
        soft = ctx.carrier.extract(canonical).soft_bits.float().cpu().numpy()
        return [ctx.codec.decode(row) for row in soft]

    with torch.inference_mode():
        return [
            {"operation": "carrier embed (canonical grid)", "batch": batch, "images_per_s": images_per_second(lambda: ctx.carrier.embed(canonical, bits), batch, seconds)},
            {"operation": "carrier extract (canonical grid)", "batch": batch, "images_per_s": images_per_second(lambda: ctx.carrier.extract(canonical), batch, seconds)},
            {"operation": "payload read (extract + decode)", "batch": batch, "images_per_s": images_per_second(read_payload, batch, seconds)},
        ]


def _peer_rows(ctx: BenchContext) -> list[dict]:
    rows = []
    for marked_set in ctx.cache.get("marked_sets", []):
        if marked_set.embed_seconds and marked_set.method != "hcr":
            rows.append(
                {
                    "operation": f"{marked_set.method} embed (full size, from the imperceptibility run)",
                    "batch": 1,
                    "images_per_s": len(marked_set.indices) / marked_set.embed_seconds,
                }
            )
    return rows


def _engine_rows(ctx: BenchContext, batch: int, seconds: float) -> tuple[list[dict], list[str]]:
    from hcr_model.engine import ImageInput, Protector

    ctx.models.need("bundle")
    bundle = ctx.models.bundle
    chosen = [i % len(ctx.images) for i in range(batch)]
    inputs = [ImageInput(ctx.images[i].image_id, ctx.images[i].rgb) for i in chosen]
    protector = Protector(bundle, ctx.key)
    outputs = protector.protect_batch(inputs)
    difference = max(int(np.abs(o.protected_rgb.astype(int) - ctx.protected[i].rgb.astype(int)).max()) for o, i in zip(outputs, chosen))
    notes = [f"engine.Protector vs the benchmark's protection: max pixel difference {difference} grey levels"]

    protected = [ImageInput(ctx.images[i].image_id, ctx.protected[i].rgb) for i in chosen]
    cases = ctx.localization_cases
    tampered = [ImageInput(ctx.images[c.image_index].image_id, c.rgb) for c in cases[:batch]]
    rows = [
        {"operation": "Protector.protect_batch (full size)", "batch": batch, "images_per_s": images_per_second(lambda: protector.protect_batch(inputs), batch, seconds)},
        {"operation": "Auditor.audit_batch, protected images", "batch": batch, "images_per_s": images_per_second(lambda: ctx.auditor.audit_batch(protected), batch, seconds)},
        {"operation": "Auditor.audit_batch, tampered images", "batch": len(tampered), "images_per_s": images_per_second(lambda: ctx.auditor.audit_batch(tampered), len(tampered), seconds)},
    ]
    return rows, notes


def measure(ctx: BenchContext) -> dict:
    batch, seconds = ctx.config.speed_images, ctx.config.speed_seconds
    rows = _carrier_rows(ctx, batch, seconds) + _peer_rows(ctx)
    notes: list[str] = []
    errors: list[str] = []
    engine = run_part(lambda: _engine_rows(ctx, batch, seconds), "engine rows", notes, errors)
    if engine is not None:
        rows += engine[0]
        notes += engine[1]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "rows": rows,
        "threads": torch.get_num_threads(),
        "device": str(ctx.device),
        "load_average_1min": load,
        "notes": notes,
        "errors": errors,
    }
