"""Shared by the workers: model and key loading, batch retries, the shard call and memory release."""

import abc
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from flows.runtime import HCR_LOGGERS, LOG_LEVEL_ENV
from flows.shard import ShardSpec, ShardStats, run_shard
from schemas.config import ModelOptions

logger = logging.getLogger(__name__)


def configure_worker_logging() -> None:
    """Send hcr's log records of this worker process to its stderr at the run's level.

    A Ray worker has no handler for them, so records below WARNING were lost.
    Ray forwards a worker's stderr to the driver's console, prefixed with the
    actor and its pid. The level comes from HCR_LOG_LEVEL (default INFO).
    NOTE: on a remote cluster the variable must be set there (runtime_env).
    """
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in HCR_LOGGERS:
        named = logging.getLogger(name)
        named.setLevel(level)
        # Replace rather than add: an actor restarted in the same process must not print twice.
        named.handlers = [handler]
        named.propagate = False


def _inside_ray_actor() -> bool:
    """True in a Ray actor's process; False for a worker object built in the caller's process."""
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def load_models(model: ModelOptions):
    """Load the key and the model bundle once per worker; return (bundle, key, device).

    The key comes from `model.key_file` (a path, not the key), else from this
    process's environment (`HCR_KEY`, `HCR_KEY_FILE`) or the default key file.
    A worker never creates a key. Inside a Ray actor, CUDA_VISIBLE_DEVICES lists only the GPUs Ray
    assigned, so the default device is a GPU exactly when the actor got one.
    """
    if _inside_ray_actor():
        configure_worker_logging()
    # torch is imported here, in the worker: the driver that creates the
    # actors never needs it, and importing it costs 3-4 s of start-up.
    import torch

    from hcr_model.bundle import load_bundle
    from hcr_model.keys import SecretKey, load_key

    if model.key_file:
        path = Path(model.key_file).expanduser()
        key = SecretKey.from_hex(path.read_text(encoding="ascii"), source=f"key file {path}")
    else:
        key = load_key(create=False)
    bundle = load_bundle(model.version, device=model.device)
    # Ray sets OMP_NUM_THREADS to an actor's CPU reservation, which torch follows.
    logger.info(
        "worker loaded weights %s on %s with %d torch threads (key_id %s)",
        bundle.version, bundle.device, torch.get_num_threads(), key.key_id,
    )
    return bundle, key, bundle.device


def run_batch(batch_fn: Callable[[list], list], inputs: list, what: str) -> list:
    """Run a model batch; when it raises, retry image by image and return the errors in place.

    One image that breaks the model must not fail its whole shard, since a
    failed shard fails again on every rerun. When every image fails alone too,
    the cause is not one image (a lost GPU, say), so the first error is raised
    and the shard stays unfinished.
    """
    try:
        return batch_fn(inputs)
    except Exception as error:  # noqa: BLE001 - any model error triggers the per-image retry
        logger.warning("%s batch of %d images failed (%s: %s); retrying image by image", what, len(inputs), type(error).__name__, error)

    results: list = []
    for single in inputs:
        try:
            results.extend(batch_fn([single]))
        except Exception as error:  # noqa: BLE001 - becomes this image's error row
            logger.warning("%s failed on %s: %s: %s", what, single.image_id, type(error).__name__, error)
            results.append(error)
    if results and all(isinstance(result, Exception) for result in results):
        raise results[0]
    return results


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """Return glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS.

    A worker decodes images of every size in its helper threads and frees
    them in the model thread. glibc keeps such freed memory in per-thread
    arenas, so a long sweep's RSS crept up although nothing leaked (the
    20,000-image soak in docs/BENCHMARKS.md). malloc_trim(0) releases the free
    pages of every arena. Both steps together took 33 ms in a trial, once per
    shard.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class WorkerInfo(abc.ABC):
    """The shared part of the workers: the shard call and the self-description.

    A subclass loads its models and defines `_process(spec)`.
    """

    @abc.abstractmethod
    def _process(self, spec: ShardSpec) -> tuple[pa.Table, ShardStats]:
        """Read and handle the shard's images, write their objects; return the rows and the stats."""

    def run_shard(self, spec: ShardSpec) -> ShardStats:
        """Run one shard (skipped when already done), then release the memory it freed."""
        try:
            stats = run_shard(spec, self._process)
        finally:
            release_free_memory()
        self.shards_run += not stats.skipped
        return stats

    def _init_info(self, key_id: str, model_version: str, device) -> None:
        self.key_id = key_id
        self.model_version = model_version
        self.device = str(device)
        self.loaded_at = time.time()
        self.shards_run = 0

    def describe(self) -> dict:
        """Return pid, key_id, weights version, device, load time and shards run since the load."""
        return {
            "pid": os.getpid(),
            "key_id": self.key_id,
            "model_version": self.model_version,
            "device": self.device,
            "loaded_at": self.loaded_at,
            "shards_run": self.shards_run,
        }
