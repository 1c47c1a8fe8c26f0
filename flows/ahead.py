"""Shards started before their flow, while Prefect's temporary server comes up.

`flows.runtime.head_start` starts Ray and the actors while the temporary
server imports Prefect's server code (about 12 s of one core, measured on a
2-core machine). Rather than leave the loaded actors idle until the flow's
first task, the run is planned right away (the same manifest the flow then
uses) and the first unfinished shard goes to each actor. The flow counts these shards as
running, not done, and its tasks for them collect the results
(`actors.pool.ActorPool.run_shard`).

NOTE: like the prestarted actors, this assumes one run per process at a time.
"""

import logging
from collections.abc import Callable

from actors.pool import ahead_shards, discard_prestarted, run_ahead
from flows.manifest import Manifest
from flows.shard import ShardSpec, done_shards
from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

# Manifests planned before the flow, by (kind, run id). The flow's plan task
# takes its manifest from here instead of listing the archive a second time.
_PLANNED: dict[tuple[str, str], Manifest] = {}


def keep_manifest(kind: str, run_id: str, manifest: Manifest) -> None:
    """Store the manifest planned ahead for this run, for the flow's plan task."""
    _PLANNED[(kind, run_id)] = manifest


def take_manifest(kind: str, run_id: str) -> Manifest | None:
    """Return (and forget) the manifest planned ahead for this run, if any."""
    return _PLANNED.pop((kind, run_id), None)


def start_first_shards(kind: str, specs: list[ShardSpec], state: str, options: StorageOptions) -> list[int]:
    """Send the first unfinished shards to the prestarted actors and return their numbers.

    `state` is the URL of the run's state folder, which contains the done markers.
    """
    done = done_shards(state, options)
    started = run_ahead(kind, [spec for spec in specs if spec.shard not in done])
    if started:
        logger.info("started %s shards %s ahead of the flow", kind, started)
    return started


def split_done(kind: str, specs: list[ShardSpec], done: set[int]) -> tuple[list[ShardSpec], list[ShardSpec]]:
    """Split specs into (finished before this run, to run), counting shards started ahead as to run.

    A shard started ahead may have written its done marker by the time the
    flow looks. It is still this run's work, and its task collects it.
    """
    running = ahead_shards(kind)
    finished = [spec for spec in specs if spec.shard in done and spec.shard not in running]
    todo = [spec for spec in specs if spec.shard not in done or spec.shard in running]
    return finished, todo


def try_ahead(start: Callable[[], object]) -> None:
    """Run `start()`, and on failure leave the planning to the flow.

    The flow plans again and raises the same error inside its run, where the
    user sees it, so here it is only logged.
    """
    try:
        start()
    except Exception as error:  # noqa: BLE001 - raised again by the flow's own plan task
        logger.info("no shards started ahead of the flow: %s: %s", type(error).__name__, error)
        _PLANNED.clear()


def discard() -> None:
    """Forget unused plans and kill the actors that no flow adopted, at the end of a head start."""
    _PLANNED.clear()
    discard_prestarted()
