"""The audit flow: plan the sweep, audit every shard on the actor pool, summarize.

Writes `DEST/verdicts/sweep_date=D/archive=A/part-SWEEP_ID-SHARD.parquet`, the
masks and restored crops of tampered images under `DEST/masks/SWEEP_ID/A/` and
`DEST/restored/SWEEP_ID/A/`, and the sweep state under `DEST/_sweeps/SWEEP_ID/`.
A rerun of the same sweep id reuses its manifest and sweep date and skips
finished shards.
"""

import datetime
import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from actors.pool import start_audit_pool
from flows import ahead, paths, storage
from flows import manifest as manifest_module
from flows.fanout import fan_out
from flows.listing import list_archive
from flows.manifest import Manifest, ManifestInfo
from flows.runtime import ray_session
from flows.shard import ShardSpec, done_shards, read_stats
from flows.summary import RunSummary, summarize
from schemas.config import AuditConfig


def sweep_identity(config: AuditConfig, now: datetime.datetime | None = None) -> tuple[str, str]:
    """Return (archive, sweep_id) with their defaults applied and validated."""
    archive = paths.check_name(config.archive or paths.default_archive(config.source), "archive name")
    sweep_id = paths.check_name(config.sweep_id or paths.default_sweep_id(archive, now), "sweep id")
    return archive, sweep_id


@task(name="hcr-plan-audit", cache_policy=NO_CACHE)
def plan_audit(config: AuditConfig, archive: str, sweep_id: str) -> Manifest:
    """Return the manifest planned ahead of the flow, else plan it now (see `plan_sweep`)."""
    planned = ahead.take_manifest("audit", sweep_id)
    return planned if planned is not None else plan_sweep(config, archive, sweep_id)


def plan_sweep(config: AuditConfig, archive: str, sweep_id: str) -> Manifest:
    """List the archive into the sweep's manifest, or load the manifest of an earlier run."""
    fs, root = storage.open_url(config.source, config.storage)
    now = datetime.datetime.now(datetime.UTC)
    info = ManifestInfo(
        kind="audit",
        run_id=sweep_id,
        archive=archive,
        source=storage.to_url(fs, root.rstrip("/")),
        sweep_date=now.date(),
        shard_size=config.plan.shard_size,
        created_at=now,
    )
    path = paths.manifest_path(paths.sweep_state(config.dest, sweep_id))
    manifest, _ = manifest_module.load_or_plan(path, info, lambda: list_archive(config.source, config.storage), config.storage)
    return manifest


def start_ahead(config: AuditConfig) -> None:
    """Plan the sweep and start its first unfinished shards on the prestarted actors (flows.ahead).

    `config` must carry its archive and sweep id (`sweep_identity`), so that
    the flow, started later, plans the same sweep.
    """
    archive, sweep_id = sweep_identity(config)
    manifest = plan_sweep(config, archive, sweep_id)
    ahead.keep_manifest("audit", sweep_id, manifest)
    specs = audit_specs(config, archive, sweep_id, manifest)
    ahead.start_first_shards("audit", specs, paths.sweep_state(config.dest, sweep_id), config.storage)


def audit_specs(config: AuditConfig, archive: str, sweep_id: str, manifest: Manifest) -> list[ShardSpec]:
    state = paths.sweep_state(config.dest, sweep_id)
    sweep_date = manifest.info.sweep_date
    return [
        ShardSpec(
            kind="audit",
            run_id=sweep_id,
            archive=archive,
            sweep_date=sweep_date,
            shard=shard,
            entries=entries,
            source=config.source,
            dest=config.dest,
            part_url=paths.verdict_part(config.dest, sweep_date, archive, sweep_id, shard),
            done_url=paths.done_marker(state, shard),
            storage=config.storage,
            limits=config.limits,
            batch_size=config.ray.batch_size,
        )
        for shard, entries in sorted(manifest.shard_entries().items())
    ]


@flow(name="hcr-audit", validate_parameters=True)
def audit_flow(config: AuditConfig) -> RunSummary:
    """Give every image of an archive one verdict row; write masks and restored crops of tampered ones."""
    run_logger = get_run_logger()
    start = time.perf_counter()
    archive, sweep_id = sweep_identity(config)

    manifest = plan_audit(config, archive, sweep_id)
    specs = audit_specs(config, archive, sweep_id, manifest)
    done = done_shards(paths.sweep_state(config.dest, sweep_id), config.storage)
    finished_before, todo = ahead.split_done("audit", specs, done)
    skipped = [read_stats(spec) for spec in finished_before]
    run_logger.info("audit sweep %s: %d shards, %d already done, %d to run", sweep_id, len(specs), len(skipped), len(todo))

    finished, failed, warnings = [], {}, []
    processing_seconds = 0.0
    if todo:
        with ray_session(config.ray) as local:
            pool = start_audit_pool(config.ray, config.model, local, config.registry, config.storage)
            try:
                # Shards started ahead of the flow began earlier, so processing counts from their dispatch.
                fan_out_start = pool.ahead_since or time.perf_counter()
                start = min(start, fan_out_start)
                finished, failed, warnings = fan_out(pool, todo, config.progress, config.limits.key_mismatch_fraction, run_logger)
                processing_seconds = time.perf_counter() - fan_out_start
            finally:
                pool.shutdown()

    sweep_date = manifest.info.sweep_date.isoformat()
    outputs = {
        "verdicts": storage.join(paths.verdicts_root(config.dest), f"sweep_date={sweep_date}", f"archive={archive}"),
        "masks": storage.join(config.dest, "masks", sweep_id, archive),
        "restored": storage.join(config.dest, "restored", sweep_id, archive),
        "manifest": paths.manifest_path(paths.sweep_state(config.dest, sweep_id)),
    }
    summary = summarize(
        "audit", sweep_id, archive, len(manifest.entries), len(specs), skipped + finished, failed,
        time.perf_counter() - start, processing_seconds, outputs, warnings,
    )
    run_logger.info("audit sweep %s finished: %s", sweep_id, summary.counts)
    return summary
