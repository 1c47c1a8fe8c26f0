"""Fan shards out to the actor pool as Prefect tasks, with a progress bar.

A Prefect task borrows an idle actor for its shard. The fan-out keeps one
task more than there are actors in flight. That task waits for the next free
actor, so Prefect's API calls for a new task run happen while the actors
work instead of between two shards. A failed shard is recorded and the
others go on. Its missing marker makes the next run redo it.
"""

import logging

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from tqdm import tqdm

from actors.pool import ActorPool
from flows.shard import ShardSpec, ShardStats

logger = logging.getLogger(__name__)


@task(name="hcr-shard", task_run_name="{spec.kind}-shard-{spec.shard}", cache_policy=NO_CACHE)
def shard_task(pool: ActorPool, spec: ShardSpec) -> ShardStats:
    """Run one shard on an idle actor of the pool."""
    return pool.run_shard(spec)


def key_mismatch_warning(stats: ShardStats, fraction: float) -> str | None:
    """Return a warning when more than `fraction` of a shard's readable images failed the MAC."""
    readable = stats.images - stats.counts.get("error", 0)
    if readable <= 0 or stats.mac_failed <= fraction * readable:
        return None
    return (
        f"shard {stats.shard}: {stats.mac_failed} of {readable} images decode a payload whose MAC fails under "
        f"key_id {stats.key_id}: these images were probably protected with another key (check HCR_KEY / HCR_KEY_FILE)"
    )


def fan_out(
    pool: ActorPool,
    specs: list[ShardSpec],
    progress: bool,
    key_mismatch_fraction: float,
    run_logger: logging.Logger | logging.LoggerAdapter = logger,
) -> tuple[list[ShardStats], dict[int, str], list[str]]:
    """Run every shard; return (stats of finished shards, failed shard -> error, warnings)."""
    window = len(pool.actors) + 1
    pending = list(reversed(specs))  # pop() from the end keeps manifest order
    in_flight = {}
    finished: list[ShardStats] = []
    failed: dict[int, str] = {}
    warnings: list[str] = []

    with tqdm(total=len(specs), unit="shard", disable=not progress, desc=specs[0].kind if specs else "shards") as bar:
        while pending or in_flight:
            while pending and len(in_flight) < window:
                spec = pending.pop()
                in_flight[shard_task.submit(pool, spec)] = spec

            future = next(as_completed(list(in_flight)))
            spec = in_flight.pop(future)
            try:
                stats = future.result()
            except Exception as error:  # a shard's failure must not stop the other shards
                failed[spec.shard] = f"{type(error).__name__}: {error}"
                run_logger.error("shard %d failed: %s", spec.shard, failed[spec.shard])
            else:
                finished.append(stats)
                warning = key_mismatch_warning(stats, key_mismatch_fraction)
                if warning:
                    warnings.append(warning)
                    run_logger.warning("key mismatch suspected: %s", warning)
            bar.update(1)
            bar.set_postfix(images=sum(s.images for s in finished), failed=len(failed))
    return finished, failed, warnings
