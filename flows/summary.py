"""The end-of-run summary: counts per verdict, throughput, and where the results are."""

from collections import Counter

from pydantic import BaseModel, Field

from flows.shard import ShardStats

MAX_ERROR_EXAMPLES = 10  # error messages printed in the summary; the rows and markers hold all of them


class RunSummary(BaseModel):
    """Outcome of a protect or audit run, over every shard of its manifest."""

    kind: str = Field(description="protect or audit")
    run_id: str = Field(description="sweep id (audit) or archive name (protect)")
    archive: str
    images: int = Field(description="entries in the manifest, rejected ones included")
    counts: dict[str, int] = Field(description="rows per verdict (audit) or outcome (protect), all shards")
    shards_total: int
    shards_run: int = Field(description="shards processed by this run")
    shards_skipped: int = Field(description="shards already done by an earlier run")
    failed_shards: dict[int, str] = Field(default_factory=dict, description="shard -> error, for shards that failed")
    images_processed: int = Field(description="images in the shards this run processed")
    seconds: float = Field(description="wall time of the run, planning and actor start included")
    processing_seconds: float = Field(description="wall time of the shard fan-out, after the actors loaded the models")
    key_id: str | None = None
    error_examples: list[tuple[str, str]] = Field(default_factory=list, description="(image_id, message) of the first errors")
    outputs: dict[str, str] = Field(default_factory=dict, description="what -> URL")
    warnings: list[str] = Field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Throughput of the fan-out: images of the shards run, per second of processing."""
        return self.images_processed / self.processing_seconds if self.processing_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed_shards

    def format(self) -> str:
        """Render the summary as plain text for the terminal."""
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items())) or "none"
        lines = [
            f"hcr {self.kind} {self.run_id}{'' if self.run_id == self.archive else f' (archive {self.archive})'}: "
            f"{self.images} images in {self.shards_total} shards",
            f"  results: {counts}",
            f"  shards: {self.shards_run} run, {self.shards_skipped} already done, {len(self.failed_shards)} failed",
        ]
        if self.images_processed:
            lines.append(
                f"  throughput: {self.images_processed} images processed in {self.processing_seconds:.1f} s "
                f"({self.images_per_second:.2f} images/s); run time {self.seconds:.1f} s"
            )
        else:
            lines.append(f"  throughput: no shard left to process; run time {self.seconds:.1f} s")
        if self.key_id:
            lines.append(f"  key_id: {self.key_id}")
        for what, url in self.outputs.items():
            lines.append(f"  {what}: {url}")
        for image_id, message in self.error_examples:
            lines.append(f"  error {image_id}: {message}")
        for shard, error in sorted(self.failed_shards.items()):
            lines.append(f"  FAILED shard {shard}: {error}")
        for warning in self.warnings:
            lines.append(f"  WARNING: {warning}")
        if self.failed_shards:
            lines.append("  Rerun the same command to redo the failed shards; finished shards are skipped.")
        return "\n".join(lines)


def summarize(
    kind: str,
    run_id: str,
    archive: str,
    images: int,
    shards_total: int,
    stats: list[ShardStats],
    failed_shards: dict[int, str],
    seconds: float,
    processing_seconds: float,
    outputs: dict[str, str],
    warnings: list[str],
) -> RunSummary:
    counts: Counter = Counter()
    for shard_stats in stats:
        counts.update(shard_stats.counts)
    run = [shard_stats for shard_stats in stats if not shard_stats.skipped]
    key_ids = {shard_stats.key_id for shard_stats in stats if shard_stats.key_id}
    return RunSummary(
        kind=kind,
        run_id=run_id,
        archive=archive,
        images=images,
        counts={name: count for name, count in counts.items() if count},
        shards_total=shards_total,
        shards_run=len(run),
        shards_skipped=len(stats) - len(run),
        failed_shards=failed_shards,
        images_processed=sum(shard_stats.images for shard_stats in run),
        seconds=seconds,
        processing_seconds=processing_seconds,
        key_id=", ".join(sorted(key_ids)) or None,
        error_examples=[error for shard_stats in stats for error in shard_stats.errors][:MAX_ERROR_EXAMPLES],
        outputs=outputs,
        warnings=warnings,
    )
