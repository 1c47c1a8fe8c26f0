"""Ray actors over the workers, and a pool that lends an idle actor to each shard.

Each actor loads the models once; Prefect tasks borrow an actor for one shard
and give it back, so the models are never reloaded per shard. Actors ask for
a GPU when the cluster has one and run on CPU otherwise.
"""

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class AheadShard:
    """A shard call sent to an actor before the flow's task for it exists."""

    actor: Any
    spec: ShardSpec
    result: Any  # the ray.ObjectRef of actor.run_shard(spec)


class ActorPool:
    """A fixed set of actors, of which `lease()` lends an idle one to the caller's thread.

    Actors running a shard started ahead of the flow (`run_ahead`) join the
    idle queue once the flow's task for that shard has collected the result.
    """

    def __init__(self, actors: list, ahead: dict[int, AheadShard] | None = None, ahead_since: float | None = None):
        self.actors = actors
        # time.perf_counter() when the first shards were sent ahead, if any.
        # NOTE: the actors may still be loading their models then, so a run's
        # processing time includes that loading (2-3 s on 2 cores).
        self.ahead_since = ahead_since
        self._ahead = dict(ahead or {})
        self._ahead_lock = threading.Lock()
        self._idle: queue.Queue = queue.Queue()
        busy = {id(started.actor) for started in self._ahead.values()}
        for actor in actors:
            if id(actor) not in busy:
                self._idle.put(actor)

    @contextlib.contextmanager
    def lease(self) -> Iterator:
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def run_shard(self, spec: ShardSpec) -> ShardStats:
        with self._ahead_lock:
            started = self._ahead.pop(spec.shard, None)
        if started is not None:
            try:
                if started.spec == spec:
                    return ray.get(started.result)
                # The flow planned this shard differently (the archive changed
                # in between): let the early call end, then run the flow's spec.
                logger.warning("shard %d was started ahead with other entries, so it runs again with the flow's entries", spec.shard)
                ray.wait([started.result], num_returns=1)
            finally:
                self._idle.put(started.actor)
        with self.lease() as actor:
            return ray.get(actor.run_shard.remote(spec))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _create(worker_class, options: RayOptions, local: bool, *args) -> tuple[list, list]:
    """Create the actors and return (actors, their describe() results) at once.

    Each actor loads the models in its own process. `describe()` is sent
    right away so it runs before any shard sent later: a shard started
    ahead of the flow does not delay the readiness check.
    """
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
    return actors, [actor.describe.remote() for actor in actors]


def _wait_ready(worker_class, actors: list, described: list) -> None:
    """Wait until every actor has loaded its models, or raise with the loading error."""
    # Surface a model or key loading failure now, with its message, not at the first shard.
    try:
        infos = ray.get(described)
    except ray.exceptions.RayActorError as error:
        for actor in actors:
            ray.kill(actor)
        raise RuntimeError(f"the {worker_class.__name__} actors failed to load the models or the key: {error}") from error
    for info in infos:
        logger.info("actor pid %d ready: weights %s on %s, key_id %s", info["pid"], info["model_version"], info["device"], info["key_id"])


@dataclass
class _Prestarted:
    """Actors created ahead of a flow, and the shards already sent to them."""

    actors: list
    described: list  # the actors' describe() results, in actor order
    ahead: dict[int, AheadShard] = field(default_factory=dict)  # by shard number
    ahead_since: float | None = None


# Actors created ahead of a flow (see head_start), by run kind ("protect" or
# "audit"). The flow's start_*_pool call adopts them instead of creating its own.
# NOTE: this assumes one run per process at a time. Concurrent runs in one
# process would adopt each other's actors.
_PRESTARTED: dict[str, _Prestarted] = {}
_WORKERS = {"protect": ProtectWorker, "audit": AuditWorker}


def _start(kind: str, options: RayOptions, local: bool, *args) -> ActorPool:
    worker_class = _WORKERS[kind]
    prestarted = _PRESTARTED.pop(kind, None)
    if prestarted is None:
        prestarted = _Prestarted(*_create(worker_class, options, local, *args))
    else:
        logger.info(
            "adopting %d %s actors started ahead of the flow, with %d shards running",
            len(prestarted.actors), worker_class.__name__, len(prestarted.ahead),
        )
    _wait_ready(worker_class, prestarted.actors, prestarted.described)
    return ActorPool(prestarted.actors, prestarted.ahead, prestarted.ahead_since)


def prestart_protect_pool(options: RayOptions, model: ModelOptions, local: bool) -> None:
    """Create the protect actors now; the next start_protect_pool in this process adopts them."""
    _PRESTARTED["protect"] = _Prestarted(*_create(ProtectWorker, options, local, model))


def prestart_audit_pool(
    options: RayOptions, model: ModelOptions, local: bool, registry: str | None, registry_storage: StorageOptions
) -> None:
    """Create the audit actors now; the next start_audit_pool in this process adopts them."""
    _PRESTARTED["audit"] = _Prestarted(*_create(AuditWorker, options, local, model, registry, registry_storage))


def run_ahead(kind: str, specs: list[ShardSpec]) -> list[int]:
    """Send the first of `specs` to the prestarted `kind` actors, one each, and return their shard numbers.

    The actors start them once their models are loaded, even before the
    flow exists. The pool that adopts these actors hands each result to the
    flow's task for the same shard.
    """
    prestarted = _PRESTARTED.get(kind)
    if prestarted is None or prestarted.ahead:
        return []
    for actor, spec in zip(prestarted.actors, specs, strict=False):
        prestarted.ahead[spec.shard] = AheadShard(actor, spec, actor.run_shard.remote(spec))
    if prestarted.ahead:
        prestarted.ahead_since = time.perf_counter()
    return sorted(prestarted.ahead)


def ahead_shards(kind: str) -> set[int]:
    """Return the shard numbers of the `kind` run that were started ahead of its flow in this process."""
    prestarted = _PRESTARTED.get(kind)
    return set(prestarted.ahead) if prestarted else set()


def discard_prestarted() -> None:
    """Kill actors that were started ahead but never adopted (every shard was already done)."""
    for prestarted in _PRESTARTED.values():
        for actor in prestarted.actors:
            ray.kill(actor)
    _PRESTARTED.clear()


def start_protect_pool(options: RayOptions, model: ModelOptions, local: bool) -> ActorPool:
    return _start("protect", options, local, model)


def start_audit_pool(
    options: RayOptions, model: ModelOptions, local: bool, registry: str | None, registry_storage: StorageOptions
) -> ActorPool:
    return _start("audit", options, local, model, registry, registry_storage)
