"""Ray and Prefect setup for a run: local and loopback-only by default, remote on request.

A local Ray binds every port to 127.0.0.1, sends no usage stats, writes no
auth token and starts no dashboard. Prefect without an API URL starts a
temporary server on 127.0.0.1 for the run. Both settings must be in the
environment before Ray starts or Prefect is imported, hence
`prepare_environment`.
"""

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from schemas.config import PrefectOptions, RayOptions

logger = logging.getLogger(__name__)

# Forced for a local Ray: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray binds
# 127.0.0.1 instead of the machine's network address.
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
# Defaults for a local Ray, which a user's own setting overrides. Ray starts
# its worker processes, and so the model actors, at nice 15. That put them
# below Ray's helpers, the driver and the Prefect server (nice 10, see
# flows.prefect_server), which on 2 cores took CPU from the actors. At nice 0
# the actors share the CPU with Ray and the driver and come before the server.
LOCAL_RAY_DEFAULTS = {"RAY_worker_niceness": "0"}
# Defaults only: a user's own Prefect settings win.
PREFECT_ENV_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A cold temporary server runs its database migrations first: 10-20 s on a
    # loaded 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

# Attempts to start a local Ray before giving up (see _start_local_ray).
LOCAL_RAY_START_ATTEMPTS = 3

# hcr's own loggers, and the variable that carries the CLI's --log-level to
# the actors (a local Ray's workers inherit the driver's environment).
HCR_LOGGERS = ("flows", "actors", "hcr_model", "schemas")
LOG_LEVEL_ENV = "HCR_LOG_LEVEL"


def prepare_environment(ray_options: RayOptions, prefect_options: PrefectOptions) -> None:
    """Set the Ray and Prefect environment variables this run needs (before Ray starts)."""
    if ray_options.address is None:
        _set_local_ray_environment()
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name, value in PREFECT_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if prefect_options.api_url:
        os.environ["PREFECT_API_URL"] = prefect_options.api_url


def _set_local_ray_environment() -> None:
    os.environ.update(LOCAL_RAY_ENV)
    for name, value in LOCAL_RAY_DEFAULTS.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[bool]:
    """Connect to Ray for the duration of a run; yield True when the Ray is local.

    An already initialized Ray (a test session, a notebook) is reused and left
    running. Otherwise a local Ray is started (or `options.address` joined)
    and shut down at the end.
    """
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        yield options.address is None and context.gcs_address.startswith("127.0.0.1")
        return

    if options.address:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=options.address, logging_level=logging.WARNING)
        logger.info("joined the Ray cluster at %s", options.address)
        local = False
    else:
        _set_local_ray_environment()
        _start_local_ray(options)
        logger.info("started a local Ray on 127.0.0.1 with %s CPUs", ray.cluster_resources().get("CPU"))
        local = True
    try:
        yield local
    finally:
        ray.shutdown()


@contextlib.contextmanager
def head_start(options: RayOptions, prestart_pool: Callable[[bool], None] | None = None) -> Iterator[None]:
    """Bring up a Prefect API server, Ray and the actors side by side before a flow.

    Inside a flow they would come up one after the other: Prefect's temporary
    server at the first flow run, then Ray, then the actors loading their
    models. Here the temporary server (when no Prefect API URL is set, see
    `temporary_prefect_api`) is launched first, in its own process, and Ray
    and the actors (`prestart_pool(local)`) start while it imports Prefect's
    server code. `prestart_pool` may also start the first shards on them
    (`flows.ahead`). The flow's own `ray_session` and `start_*_pool` then
    find them up. On exit the server is stopped, unused actors and plans are
    discarded and Ray is shut down.
    """
    from flows.ahead import discard

    # The server spends about 12 s of one core importing Prefect's server
    # code, and Ray's start-up and the actors' model loading fill the other
    # core meanwhile. On 2 cores, server, Ray and one actor were up after
    # 15-17 s this way and 27 s with Ray first (scripts/bench_startup.py).
    with contextlib.ExitStack() as stack:

        def start_ray_and_actors() -> None:
            local = stack.enter_context(ray_session(options))
            stack.callback(discard)
            if prestart_pool is not None:
                prestart_pool(local)

        with temporary_prefect_api(start_ray_and_actors):
            yield


@contextlib.contextmanager
def temporary_prefect_api(meanwhile: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the block against a temporary Prefect API server on 127.0.0.1 when no API URL is set.

    The server (`flows.prefect_server`) starts in its own process, and
    `meanwhile()` runs while it comes up. With an API URL set, no server is
    started and the block runs against that URL. Several flows inside one
    block share the server.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from flows.prefect_server import TemporaryServer

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        if meanwhile is not None:
            meanwhile()
        yield
        return

    server = TemporaryServer()
    server.start()
    try:
        if meanwhile is not None:
            meanwhile()
        server.wait_ready(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        # The server has no UI, so Prefect must not log "View at" links to it.
        with temporary_settings(updates={"api.url": server.api_url, "ui_url": ""}):
            try:
                yield
            finally:
                _drain_prefect_workers()
    finally:
        server.stop()


def _drain_prefect_workers() -> None:
    """Send Prefect's queued run logs and events while the server still runs.

    Otherwise Prefect's log worker tries to send them at exit, finds the
    server gone and prints "Error logging to API".
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)


def _start_local_ray(options: RayOptions) -> None:
    """Start a local Ray, retrying when its node does not come up in time.

    Ray waits a fixed 30 s for its raylet to register. On a loaded machine
    (training runs, other sweeps) that can pass, and Ray raises a bare
    Exception saying the node "timed out during startup". That case is retried
    after a shutdown; any other error is raised at once.
    """
    import ray

    for attempt in range(1, LOCAL_RAY_START_ATTEMPTS + 1):
        try:
            ray.init(
                address="local",
                num_cpus=options.num_cpus,
                include_dashboard=False,
                object_store_memory=options.object_store_mb * 2**20,
                logging_level=logging.WARNING,
            )
            return
        except Exception as error:
            if "timed out during startup" not in str(error) or attempt == LOCAL_RAY_START_ATTEMPTS:
                raise
            logger.warning("local Ray start timed out (attempt %d of %d); retrying", attempt, LOCAL_RAY_START_ATTEMPTS)
            ray.shutdown()


@contextlib.contextmanager
def prefect_settings(options: PrefectOptions) -> Iterator[None]:
    """Apply the run's Prefect API URL and turn off the per-run heartbeat thread.

    Heartbeats detect crashed runs for a Prefect worker; a CLI run reports its
    own failure, and the heartbeat costs about 1 s per flow run.
    """
    from prefect.settings import temporary_settings

    updates: dict = {"flows.heartbeat_frequency": None}
    if options.api_url:
        updates["api.url"] = options.api_url
    with temporary_settings(updates=updates):
        yield
