"""Compare a run's manifest with its results: missing, duplicate and unexpected rows.

For an audit sweep every manifest entry must have exactly one verdict row.
For a protect run every entry must have exactly one registry row or an error
recorded in its shard's marker.
"""

import logging
import re

import pyarrow as pa
from pydantic import BaseModel, Field

from flows import manifest as manifest_module
from flows import paths, storage
from flows.shard import ShardStats, done_shards
from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

MAX_LISTED = 20  # ids printed per problem; the report contains all of them


class VerifyReport(BaseModel):
    kind: str
    run_id: str
    expected: int = Field(description="entries in the manifest")
    found: int = Field(description="rows found (plus recorded errors for protect)")
    missing: list[str] = Field(default_factory=list)
    duplicates: list[str] = Field(default_factory=list)
    unexpected: list[str] = Field(default_factory=list)
    unfinished_shards: list[int] = Field(default_factory=list, description="shards without a .done marker")
    unreadable_parts: list[str] = Field(
        default_factory=list, description="Parquet parts that could not be read (truncated or corrupt), with the error"
    )

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected or self.unfinished_shards or self.unreadable_parts)

    def format(self) -> str:
        status = "OK" if self.ok else "PROBLEMS FOUND"
        lines = [f"hcr verify {self.kind} {self.run_id}: {status}", f"  manifest entries: {self.expected}, rows found: {self.found}"]
        for name in ("missing", "duplicates", "unexpected", "unfinished_shards", "unreadable_parts"):
            values = getattr(self, name)
            if values:
                shown = ", ".join(str(value) for value in values[:MAX_LISTED])
                more = f" (+{len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else ""
                lines.append(f"  {name.replace('_', ' ')} ({len(values)}): {shown}{more}")
        if self.unfinished_shards:
            lines.append("  Rerun the same command to finish the unfinished shards.")
        if self.unreadable_parts:
            lines.append("  To redo the shard of an unreadable part, delete that shard's .done marker and rerun.")
        return "\n".join(lines)


def _read_ids(part_urls: list[str], options: StorageOptions) -> tuple[list[str], list[str]]:
    """Return (image ids of every readable part, "URL: error" of each unreadable part)."""
    ids: list[str] = []
    unreadable: list[str] = []
    for url in part_urls:
        fs, path = storage.open_url(url, options)
        try:
            ids.extend(storage.read_parquet(fs, path, options).column("image_id").to_pylist())
        except (pa.ArrowException, OSError, KeyError) as error:
            # A part cut short by a crash on a store without atomic writes.
            logger.warning("cannot read part %s: %s", url, error)
            unreadable.append(f"{url}: {error}")
    return ids, unreadable


def _parts(folder_url: str, pattern: re.Pattern, options: StorageOptions) -> list[str]:
    fs, folder = storage.open_url(folder_url, options)
    if not storage.exists(fs, folder, options):
        return []
    names = storage.list_names(fs, folder, options)
    return [storage.join(folder_url, name.rsplit("/", 1)[-1]) for name in sorted(names) if pattern.fullmatch(name.rsplit("/", 1)[-1])]


def _compare(
    kind: str, run_id: str, expected: list[str], found: list[str], unfinished: list[int], unreadable: list[str]
) -> VerifyReport:
    expected_set = set(expected)
    counts: dict[str, int] = {}
    for image_id in found:
        counts[image_id] = counts.get(image_id, 0) + 1
    return VerifyReport(
        kind=kind,
        run_id=run_id,
        expected=len(expected),
        found=len(found),
        missing=sorted(expected_set - counts.keys()),
        duplicates=sorted(image_id for image_id, count in counts.items() if count > 1),
        unexpected=sorted(counts.keys() - expected_set),
        unfinished_shards=unfinished,
        unreadable_parts=unreadable,
    )


def verify_sweep(dest: str, sweep_id: str, options: StorageOptions) -> VerifyReport:
    state = paths.sweep_state(dest, sweep_id)
    manifest = manifest_module.load(paths.manifest_path(state), options)
    folder = storage.join(
        paths.verdicts_root(dest), f"sweep_date={manifest.info.sweep_date.isoformat()}", f"archive={manifest.info.archive}"
    )
    parts = _parts(folder, re.compile(rf"part-{re.escape(sweep_id)}-\d{{5,}}\.parquet"), options)
    unfinished = sorted(set(manifest.shards) - done_shards(state, options))
    found, unreadable = _read_ids(parts, options)
    return _compare("audit", sweep_id, [entry.image_id for entry in manifest.entries], found, unfinished, unreadable)


def verify_protect(dest: str, archive: str, options: StorageOptions) -> VerifyReport:
    state = paths.protect_state(dest, archive)
    manifest = manifest_module.load(paths.manifest_path(state), options)
    folder = storage.join(paths.registry_root(dest), f"archive={archive}")
    parts = _parts(folder, re.compile(r"part-\d{5,}\.parquet"), options)
    found, unreadable = _read_ids(parts, options)

    done = done_shards(state, options)
    for shard in sorted(done):
        fs, path = storage.open_url(paths.done_marker(state, shard), options)
        stats = ShardStats.model_validate_json(storage.read_bytes(fs, path, options))
        found.extend(image_id for image_id, _ in stats.errors)
    unfinished = sorted(set(manifest.shards) - done)
    return _compare("protect", archive, [entry.image_id for entry in manifest.entries], found, unfinished, unreadable)
