"""Reading results back: verdicts and registry rows as Arrow tables with their contract types.

Hive partition values are strings in the path; reading with the contract's
partitioning restores `sweep_date` as a date. The same datasets can be
queried with DuckDB through `duckdb.arrow(dataset)` or pyarrow directly.
"""

import pyarrow as pa
import pyarrow.dataset as ds

from flows import paths, storage
from schemas.config import StorageOptions
from schemas.rows import REGISTRY_PARTITION_KEYS, REGISTRY_SCHEMA, VERDICT_PARTITION_KEYS, VERDICT_SCHEMA


def _partitioning(schema: pa.Schema, keys: tuple[str, ...]) -> ds.Partitioning:
    return ds.partitioning(pa.schema([schema.field(key) for key in keys]), flavor="hive")


def verdicts_dataset(dest: str, options: StorageOptions) -> ds.Dataset:
    """Open every verdict part under an audit destination, all sweeps and archives, as one dataset."""
    fs, root = storage.open_url(paths.verdicts_root(dest), options)
    return ds.dataset(root, filesystem=fs, format="parquet", partitioning=_partitioning(VERDICT_SCHEMA, VERDICT_PARTITION_KEYS))


def read_verdicts(dest: str, options: StorageOptions, sweep_id: str | None = None) -> pa.Table:
    """Read verdict rows, optionally of one sweep, with the columns in contract order."""
    dataset = verdicts_dataset(dest, options)
    table = dataset.to_table(filter=ds.field("sweep_id") == sweep_id if sweep_id else None)
    return table.select(VERDICT_SCHEMA.names)


def registry_dataset(protect_dest: str, options: StorageOptions) -> ds.Dataset:
    """Open every registry part under a protect destination, all archives, as one dataset."""
    fs, root = storage.open_url(paths.registry_root(protect_dest), options)
    return ds.dataset(root, filesystem=fs, format="parquet", partitioning=_partitioning(REGISTRY_SCHEMA, REGISTRY_PARTITION_KEYS))
