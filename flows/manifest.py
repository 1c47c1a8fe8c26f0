"""The run manifest: the archive's listing with a fixed image-to-shard mapping.

A run lists its archive once and writes the manifest. A rerun loads it, so
each image stays in the same shard and finished shards can be skipped. Images
are sorted by image_id and cut into consecutive shards of `shard_size`, which
keeps the members of one tar or zip in few shards. A protect rerun may extend
the manifest: images that appeared since get new shards after the last one,
and existing shards are untouched.
"""

import datetime
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyarrow as pa
from pydantic import BaseModel

from flows import storage
from flows.listing import ArchiveEntry
from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("member", pa.string()),
        pa.field("container", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("error", pa.string()),
    ]
)
_INFO_KEY = b"hcr.manifest"


class ManifestInfo(BaseModel):
    """Identity of a planned run, stored in the manifest's Parquet schema metadata."""

    kind: str  # "audit" or "protect"
    run_id: str  # the sweep id of an audit, the archive name of a protect run
    archive: str
    source: str  # archive URL as given
    sweep_date: datetime.date  # UTC date of the first plan, kept by every rerun
    shard_size: int
    created_at: datetime.datetime


@dataclass
class Manifest:
    info: ManifestInfo
    entries: list[ArchiveEntry]
    shard_of: list[int]  # shard number of each entry, same order

    @property
    def shards(self) -> list[int]:
        return sorted(set(self.shard_of))

    def shard_entries(self) -> dict[int, list[ArchiveEntry]]:
        grouped: dict[int, list[ArchiveEntry]] = {}
        for entry, shard in zip(self.entries, self.shard_of, strict=True):
            grouped.setdefault(shard, []).append(entry)
        return grouped

    def to_table(self) -> pa.Table:
        records = [dict(asdict(entry), shard=shard) for entry, shard in zip(self.entries, self.shard_of, strict=True)]
        table = pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA)
        return table.replace_schema_metadata({_INFO_KEY: self.info.model_dump_json().encode()})

    @classmethod
    def from_table(cls, table: pa.Table) -> "Manifest":
        metadata = table.schema.metadata or {}
        if _INFO_KEY not in metadata:
            raise ValueError("not an hcr manifest: the Parquet metadata has no hcr.manifest entry")
        info = ManifestInfo.model_validate_json(metadata[_INFO_KEY])
        rows = table.select(MANIFEST_SCHEMA.names).to_pylist()
        entries = [ArchiveEntry(**{key: row[key] for key in row if key != "shard"}) for row in rows]
        return cls(info=info, entries=entries, shard_of=[row["shard"] for row in rows])


def assign_shards(entries: list[ArchiveEntry], shard_size: int, first_shard: int = 0) -> list[int]:
    """Return the shard of each entry: consecutive runs of `shard_size` in image_id order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    order = sorted(range(len(entries)), key=lambda index: entries[index].image_id)
    shard_of = [0] * len(entries)
    for rank, index in enumerate(order):
        shard_of[index] = first_shard + rank // shard_size
    return shard_of


def plan(info: ManifestInfo, entries: list[ArchiveEntry]) -> Manifest:
    ordered = sorted(entries, key=lambda entry: entry.image_id)
    return Manifest(info=info, entries=ordered, shard_of=assign_shards(ordered, info.shard_size))


def extend(manifest: Manifest, entries: list[ArchiveEntry]) -> tuple[Manifest, int]:
    """Append images not yet in the manifest as new shards; return (manifest, images added)."""
    known = {entry.image_id for entry in manifest.entries}
    new = sorted((entry for entry in entries if entry.image_id not in known), key=lambda entry: entry.image_id)
    if not new:
        return manifest, 0
    first = max(manifest.shard_of, default=-1) + 1
    extended = Manifest(
        info=manifest.info,
        entries=manifest.entries + new,
        shard_of=manifest.shard_of + assign_shards(new, manifest.info.shard_size, first_shard=first),
    )
    return extended, len(new)


def load_or_plan(
    path: str,
    info: ManifestInfo,
    list_entries: Callable[[], list[ArchiveEntry]],
    options: StorageOptions,
    extend_existing: bool = False,
) -> tuple[Manifest, bool]:
    """Load the manifest at `path` URL, or list the archive and write a new one.

    Returns (manifest, reused). A reused manifest keeps its shard size and
    sweep date. Raises ValueError when the stored manifest belongs to another
    source or archive, because a run never overwrites another run's files.
    """
    fs, fs_path = storage.open_url(path, options)
    if storage.exists(fs, fs_path, options):
        manifest = Manifest.from_table(storage.read_parquet(fs, fs_path, options))
        _check_same_run(manifest.info, info, path)
        if manifest.info.shard_size != info.shard_size:
            logger.info("reusing manifest %s with its shard size %d (requested %d)", path, manifest.info.shard_size, info.shard_size)
        if extend_existing:
            manifest, added = extend(manifest, list_entries())
            if added:
                storage.write_parquet(manifest.to_table(), fs, fs_path, options)
                logger.info("added %d new images to manifest %s", added, path)
        logger.info("reusing manifest %s: %d images in %d shards", path, len(manifest.entries), len(manifest.shards))
        return manifest, True

    manifest = plan(info, list_entries())
    storage.write_parquet(manifest.to_table(), fs, fs_path, options)
    logger.info("planned %d images in %d shards of up to %d; manifest %s", len(manifest.entries), len(manifest.shards), info.shard_size, path)
    return manifest, False


def load(path: str, options: StorageOptions) -> Manifest:
    fs, fs_path = storage.open_url(path, options)
    return Manifest.from_table(storage.read_parquet(fs, fs_path, options))


def _check_same_run(stored: ManifestInfo, requested: ManifestInfo, path: str) -> None:
    for field in ("kind", "run_id", "archive", "source"):
        old, new = getattr(stored, field), getattr(requested, field)
        if old != new:
            raise ValueError(
                f"manifest {path} was planned with {field} {old!r}, this run has {new!r}; "
                "choose another --sweep-id (audit) or --archive (protect) instead of reusing its files"
            )

