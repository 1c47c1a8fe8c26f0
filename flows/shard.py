"""A shard's lifecycle, the one place that owns it: skip if done, run, write the part, mark done.

The order is the contract: objects (protected images, masks, restored crops)
are written while the shard runs, then the Parquet part, then the `.done`
marker. A shard without a marker is incomplete whatever else exists, and a
rerun redoes it, overwriting its objects and part. The marker contains the
shard's stats as JSON, so a rerun can report skipped shards too.
"""

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
from pydantic import BaseModel, Field

from flows import storage
from flows.listing import ArchiveEntry
from schemas.config import LimitOptions, StorageOptions

logger = logging.getLogger(__name__)


@dataclass
class ShardSpec:
    """Everything a worker needs for one shard. Picklable, and free of secrets."""

    kind: str  # "protect" or "audit"
    run_id: str  # sweep id (audit) or archive name (protect)
    archive: str
    sweep_date: datetime.date
    shard: int
    entries: list[ArchiveEntry]
    source: str  # archive URL the entries' paths belong to
    dest: str  # run destination URL
    part_url: str  # Parquet part of this shard
    done_url: str  # `.done` marker of this shard
    storage: StorageOptions = field(default_factory=StorageOptions)
    limits: LimitOptions = field(default_factory=LimitOptions)
    batch_size: int = 8
    jpeg_quality: int = 95  # protect only
    labels: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # image_id -> (label, metadata JSON)


class ShardStats(BaseModel):
    """Counts of one shard, stored in its `.done` marker."""

    shard: int
    images: int = Field(description="entries in the shard, rejected ones included")
    rows: int = Field(description="rows written to the Parquet part")
    counts: dict[str, int] = Field(default_factory=dict, description="rows per verdict (audit) or outcome (protect)")
    mac_failed: int = Field(default=0, description="images whose payload decoded but failed the MAC")
    errors: list[tuple[str, str]] = Field(default_factory=list, description="(image_id, message) of images that failed")
    seconds: float = Field(default=0.0, description="wall time of the shard run")
    key_id: str | None = None
    model_version: str | None = None
    skipped: bool = Field(default=False, description="true when a rerun found the marker and did nothing")


ShardProcessor = Callable[[ShardSpec], tuple[pa.Table, ShardStats]]


def done_shards(state_url: str, options: StorageOptions) -> set[int]:
    """Return the shard numbers that have a `.done` marker under a run's state folder, in one listing."""
    fs, state = storage.open_url(storage.join(state_url, "shards"), options)
    if not storage.exists(fs, state, options):
        return set()
    names = storage.list_names(fs, state, options)
    done = set()
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".done") and base[: -len(".done")].isdigit():
            done.add(int(base[: -len(".done")]))
    return done


def is_done(spec: ShardSpec) -> bool:
    fs, path = storage.open_url(spec.done_url, spec.storage)
    return storage.exists(fs, path, spec.storage)


def read_stats(spec: ShardSpec) -> ShardStats:
    """Return the stats stored in a finished shard's marker, flagged as skipped."""
    fs, path = storage.open_url(spec.done_url, spec.storage)
    stats = ShardStats.model_validate_json(storage.read_bytes(fs, path, spec.storage))
    return stats.model_copy(update={"skipped": True})


def run_shard(spec: ShardSpec, process: ShardProcessor) -> ShardStats:
    """Run one shard unless its marker exists.

    `process` reads and handles the shard's images, writes their objects and
    returns the rows and the stats. Raises when `process` does, leaving no
    marker, so the shard is redone on the next run.
    """
    if is_done(spec):
        logger.info("%s shard %d of %s: already done, skipped", spec.kind, spec.shard, spec.run_id)
        return read_stats(spec)

    start = time.perf_counter()
    table, stats = process(spec)
    if spec.kind == "audit" and table.num_rows != len(spec.entries):
        # Every input yields exactly one verdict row; anything else is a bug to surface, not to write.
        raise RuntimeError(f"audit shard {spec.shard} produced {table.num_rows} rows for {len(spec.entries)} images")

    fs, part_path = storage.open_url(spec.part_url, spec.storage)
    storage.write_parquet(table, fs, part_path, spec.storage)

    stats = stats.model_copy(update={"seconds": time.perf_counter() - start, "rows": table.num_rows})
    fs, done_path = storage.open_url(spec.done_url, spec.storage)
    storage.write_bytes(fs, done_path, stats.model_dump_json().encode(), spec.storage)

    rate = stats.images / stats.seconds if stats.seconds > 0 else 0.0
    logger.info(
        "%s shard %d of %s: %d images in %.1f s (%.2f images/s), %s",
        spec.kind, spec.shard, spec.run_id, stats.images, stats.seconds, rate, stats.counts,
    )
    return stats
