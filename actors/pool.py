"""Ray actors over the workers, and a pool that lends an idle actor to each shard.

Each actor loads the models once; Prefect tasks borrow an actor for one shard
and give it back, so the models are never reloaded per shard. Actors ask for
a GPU when the cluster has one and run on CPU otherwise.
"""

import contextlib
import logging
import queue
from collections.abc import Iterator

import ray

from actors.audit_actor import AuditWorker
from actors.protect_actor import ProtectWorker
from flows.shard import ShardSpec, ShardStats
from schemas.config import ModelOptions, RayOptions, StorageOptions

logger = logging.getLogger(__name__)


def actor_resources(options: RayOptions, cluster: dict[str, float]) -> dict[str, float]:
    """Return the Ray resource request of one actor given the cluster's resources."""
    gpus = options.gpus_per_actor
    if gpus is None:
        available = float(cluster.get("GPU", 0.0))
        # Share the GPUs when actors outnumber them; Ray accepts fractions up to 1.
        gpus = min(1.0, available / options.num_actors) if available > 0 else 0.0
    return {"num_cpus": options.cpus_per_actor, "num_gpus": gpus}


def _check_capacity(options: RayOptions, request: dict[str, float], cluster: dict[str, float]) -> None:
    """Fail fast when a fixed cluster cannot hold every actor (they would wait forever)."""
    cpus = float(cluster.get("CPU", 0.0))
    needed = request["num_cpus"] * options.num_actors
    if needed > cpus:
        raise RuntimeError(
            f"{options.num_actors} actors x {request['num_cpus']} CPUs need {needed:g} CPUs but the Ray cluster has {cpus:g}; "
            "lower --num-actors or --cpus-per-actor"
        )


class ActorPool:
    """A fixed set of actors; `lease()` lends an idle one to the caller's thread."""

    def __init__(self, actors: list):
        self.actors = actors
        self._idle: queue.Queue = queue.Queue()
        for actor in actors:
            self._idle.put(actor)

    @contextlib.contextmanager
    def lease(self) -> Iterator:
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def run_shard(self, spec: ShardSpec) -> ShardStats:
        with self.lease() as actor:
            return ray.get(actor.run_shard.remote(spec))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _create(worker_class, options: RayOptions, local: bool, *args) -> list:
    """Create the actors and return at once. Each loads the models in its own process."""
    cluster = ray.cluster_resources()
    request = actor_resources(options, cluster)
    if local:
        _check_capacity(options, request, cluster)
    remote_class = ray.remote(worker_class).options(
        num_cpus=request["num_cpus"],
        num_gpus=request["num_gpus"],
        # A crashed actor restarts (reloading the models) and its shard call is
        # retried once; shards are idempotent.
        max_restarts=1,
        max_task_retries=1,
    )
    actors = [remote_class.remote(*args) for _ in range(options.num_actors)]
    logger.info(
        "started %d %s actors with %g CPU and %g GPU each",
        len(actors), worker_class.__name__, request["num_cpus"], request["num_gpus"],
    )
    return actors


def _wait_ready(worker_class, actors: list) -> ActorPool:
    """Wait until every actor has loaded its models, or raise with the loading error."""
    # Surface a model or key loading failure now, with its message, not at the first shard.
    try:
        infos = ray.get([actor.describe.remote() for actor in actors])
    except ray.exceptions.RayActorError as error:
        for actor in actors:
            ray.kill(actor)
        raise RuntimeError(f"the {worker_class.__name__} actors failed to load the models or the key: {error}") from error
    for info in infos:
        logger.info("actor pid %d ready: weights %s on %s, key_id %s", info["pid"], info["model_version"], info["device"], info["key_id"])
    return ActorPool(actors)


# Actors created ahead of a flow (see head_start), by worker class name. The
# flow's start_*_pool call adopts them instead of creating its own.
# NOTE: this assumes one run per process at a time. Concurrent runs in one
# process would adopt each other's actors.
_PRESTARTED: dict[str, list] = {}


def _start(worker_class, options: RayOptions, local: bool, *args) -> ActorPool:
    actors = _PRESTARTED.pop(worker_class.__name__, None)
    if actors is None:
        actors = _create(worker_class, options, local, *args)
    else:
        logger.info("adopting %d %s actors started ahead of the flow", len(actors), worker_class.__name__)
    return _wait_ready(worker_class, actors)


def prestart_protect_pool(options: RayOptions, model: ModelOptions, local: bool) -> None:
    """Create the protect actors now; the next start_protect_pool in this process adopts them."""
    _PRESTARTED[ProtectWorker.__name__] = _create(ProtectWorker, options, local, model)


def prestart_audit_pool(
    options: RayOptions, model: ModelOptions, local: bool, registry: str | None, registry_storage: StorageOptions
) -> None:
    """Create the audit actors now; the next start_audit_pool in this process adopts them."""
    _PRESTARTED[AuditWorker.__name__] = _create(AuditWorker, options, local, model, registry, registry_storage)


def discard_prestarted() -> None:
    """Kill actors that were started ahead but never adopted (every shard was already done)."""
    for actors in _PRESTARTED.values():
        for actor in actors:
            ray.kill(actor)
    _PRESTARTED.clear()


def start_protect_pool(options: RayOptions, model: ModelOptions, local: bool) -> ActorPool:
    return _start(ProtectWorker, options, local, model)


def start_audit_pool(
    options: RayOptions, model: ModelOptions, local: bool, registry: str | None, registry_storage: StorageOptions
) -> ActorPool:
    return _start(AuditWorker, options, local, model, registry, registry_storage)
