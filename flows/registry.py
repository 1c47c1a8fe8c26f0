"""Loading the registry that protect runs wrote, across every archive partition."""

import logging

import pyarrow as pa

from flows import paths, storage
from flows.results import registry_dataset
from schemas.config import StorageOptions
from schemas.rows import REGISTRY_SCHEMA

logger = logging.getLogger(__name__)


def load_registry(protect_dest: str, options: StorageOptions) -> pa.Table | None:
    """Read every `registry/archive=*/part-*.parquet` under a protect destination.

    Returns None (and logs a warning) when the destination has no registry,
    so an audit still runs, without retrieval.
    """
    root_url = paths.registry_root(protect_dest)
    fs, root = storage.open_url(root_url, options)
    if not storage.exists(fs, root, options):
        logger.warning("no registry at %s: audits run without retrieval", root_url)
        return None

    table = storage.with_retries(registry_dataset(protect_dest, options).to_table, options, f"read registry {root_url}")
    archives = sorted(set(table.column("archive").to_pylist())) if table.num_rows else []
    logger.info("loaded registry %s: %d rows from archives %s", root_url, table.num_rows, archives)
    return table.select([name for name in REGISTRY_SCHEMA.names if name in table.column_names])
