"""The optional sidecar file of labels and metadata for protect.

A CSV, JSON or Parquet file with an `image_id` column, an optional `label`
column, and any other columns, which the registry stores as a JSON object in
`metadata`. JSON may also be an object keyed by image id, whose values are a
label string or an object of columns.
"""

import csv
import io
import json
import logging

import pyarrow.parquet as pq

from flows import storage
from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

Labels = dict[str, tuple[str | None, str | None]]  # image_id -> (label, metadata JSON)


def _records_from_json(data: bytes) -> list[dict]:
    parsed = json.loads(data)
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, dict):
        return [
            {"image_id": image_id, **(value if isinstance(value, dict) else {"label": value})}
            for image_id, value in parsed.items()
        ]
    raise ValueError("a JSON sidecar must be a list of objects or an object keyed by image_id")


def _read_records(url: str, data: bytes) -> list[dict]:
    lowered = url.lower()
    if lowered.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if lowered.endswith(".json"):
        return _records_from_json(data)
    if lowered.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    raise ValueError(f"unsupported sidecar file {url}: use .csv, .json or .parquet")


def load_labels(url: str | None, options: StorageOptions) -> Labels:
    """Read a sidecar file into image_id -> (label, metadata JSON); {} without a file."""
    if not url:
        return {}
    fs, path = storage.open_url(url, options)
    records = _read_records(url, storage.read_bytes(fs, path, options))

    labels: Labels = {}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not record.get("image_id"):
            raise ValueError(f"sidecar {url}, record {number}: missing image_id")
        image_id = str(record.pop("image_id"))
        label = record.pop("label", None)
        metadata = json.dumps(record, sort_keys=True, default=str) if record else None
        labels[image_id] = (None if label in (None, "") else str(label), metadata)
    logger.info("loaded %d labels from %s", len(labels), url)
    return labels
