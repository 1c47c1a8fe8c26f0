"""The protect flow: plan the archive, protect every shard on the actor pool, summarize.

Writes `DEST/protected/ARCHIVE/IMAGE_ID` (same relative path and format),
`DEST/registry/archive=ARCHIVE/part-SHARD.parquet` and its run state under
`DEST/_protect/ARCHIVE/`. A rerun with the same archive name resumes: finished
shards are skipped, and images added to the archive since get new shards.
"""

import datetime
import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from actors.pool import start_protect_pool
from flows import ahead, paths, storage
from flows import manifest as manifest_module
from flows.fanout import fan_out
from flows.labels import load_labels
from flows.listing import list_archive
from flows.manifest import Manifest, ManifestInfo
from flows.runtime import ray_session
from flows.shard import ShardSpec, done_shards, read_stats
from flows.summary import RunSummary, summarize
from schemas.config import ProtectConfig


def protect_archive(config: ProtectConfig) -> str:
    """Return the archive name with its default applied and validated."""
    return paths.check_name(config.archive or paths.default_archive(config.source), "archive name")


@task(name="hcr-plan-protect", cache_policy=NO_CACHE)
def plan_protect(config: ProtectConfig, archive: str) -> Manifest:
    """Return the manifest planned ahead of the flow, else plan it now (see `plan_archive`)."""
    planned = ahead.take_manifest("protect", archive)
    return planned if planned is not None else plan_archive(config, archive)


def plan_archive(config: ProtectConfig, archive: str) -> Manifest:
    """List the archive into a manifest, or load the existing one and add new images."""
    fs, root = storage.open_url(config.source, config.storage)
    now = datetime.datetime.now(datetime.UTC)
    info = ManifestInfo(
        kind="protect",
        run_id=archive,
        archive=archive,
        source=storage.to_url(fs, root.rstrip("/")),
        sweep_date=now.date(),
        shard_size=config.plan.shard_size,
        created_at=now,
    )
    path = paths.manifest_path(paths.protect_state(config.dest, archive))
    manifest, _ = manifest_module.load_or_plan(
        path, info, lambda: list_archive(config.source, config.storage), config.storage, extend_existing=True
    )
    return manifest


def start_ahead(config: ProtectConfig) -> None:
    """Plan the archive and start its first unfinished shards on the prestarted actors (flows.ahead)."""
    archive = protect_archive(config)
    manifest = plan_archive(config, archive)
    ahead.keep_manifest("protect", archive, manifest)
    specs = protect_specs(config, archive, manifest)
    ahead.start_first_shards("protect", specs, paths.protect_state(config.dest, archive), config.storage)


def protect_specs(config: ProtectConfig, archive: str, manifest: Manifest) -> list[ShardSpec]:
    state = paths.protect_state(config.dest, archive)
    labels = load_labels(config.labels, config.storage)
    specs = []
    for shard, entries in sorted(manifest.shard_entries().items()):
        specs.append(
            ShardSpec(
                kind="protect",
                run_id=archive,
                archive=archive,
                sweep_date=manifest.info.sweep_date,
                shard=shard,
                entries=entries,
                source=config.source,
                dest=config.dest,
                part_url=paths.registry_part(config.dest, archive, shard),
                done_url=paths.done_marker(state, shard),
                storage=config.storage,
                limits=config.limits,
                batch_size=config.ray.batch_size,
                jpeg_quality=config.jpeg_quality,
                labels={entry.image_id: labels[entry.image_id] for entry in entries if entry.image_id in labels},
            )
        )
    return specs


@flow(name="hcr-protect", validate_parameters=True)
def protect_flow(config: ProtectConfig) -> RunSummary:
    """Protect every image of an archive and write the registry."""
    run_logger = get_run_logger()
    start = time.perf_counter()
    archive = protect_archive(config)

    manifest = plan_protect(config, archive)
    specs = protect_specs(config, archive, manifest)
    done = done_shards(paths.protect_state(config.dest, archive), config.storage)
    finished_before, todo = ahead.split_done("protect", specs, done)
    skipped = [read_stats(spec) for spec in finished_before]
    run_logger.info("protect %s: %d shards, %d already done, %d to run", archive, len(specs), len(skipped), len(todo))

    finished, failed, warnings = [], {}, []
    processing_seconds = 0.0
    if todo:
        with ray_session(config.ray) as local:
            pool = start_protect_pool(config.ray, config.model, local)
            try:
                # Shards started ahead of the flow began earlier, so processing counts from their dispatch.
                fan_out_start = pool.ahead_since or time.perf_counter()
                start = min(start, fan_out_start)
                finished, failed, warnings = fan_out(pool, todo, config.progress, config.limits.key_mismatch_fraction, run_logger)
                processing_seconds = time.perf_counter() - fan_out_start
            finally:
                pool.shutdown()

    outputs = {
        "protected images": storage.join(config.dest, "protected", archive),
        "registry": paths.registry_root(config.dest),
        "manifest": paths.manifest_path(paths.protect_state(config.dest, archive)),
    }
    summary = summarize(
        "protect", archive, archive, len(manifest.entries), len(specs), skipped + finished, failed,
        time.perf_counter() - start, processing_seconds, outputs, warnings,
    )
    run_logger.info("protect %s finished: %s", archive, summary.counts)
    return summary
