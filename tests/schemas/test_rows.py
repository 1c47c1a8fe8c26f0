"""Verdict and registry rows: the Arrow schemas match the contract column for column."""

import datetime
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from schemas.arrow import rows_to_table
from schemas.rows import (
    REGISTRY_FILE_SCHEMA,
    REGISTRY_SCHEMA,
    VERDICT_FILE_SCHEMA,
    VERDICT_SCHEMA,
    VERDICTS,
    RegistryRow,
    VerdictRow,
)

# The verdict row contract, in order: column -> Arrow type.
VERDICT_CONTRACT = [
    ("sweep_id", pa.string()),
    ("sweep_date", pa.date32()),
    ("archive", pa.string()),
    ("shard", pa.int32()),
    ("image_id", pa.string()),
    ("source_uri", pa.string()),
    ("sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("verdict", pa.string()),
    ("watermark_score", pa.float32()),
    ("payload_valid", pa.bool_()),
    ("bit_confidence", pa.float32()),
    ("tampered_fraction", pa.float32()),
    ("mask_uri", pa.string()),
    ("restored_uri", pa.string()),
    ("restored_bbox", pa.list_(pa.int32(), 4)),
    ("retrieved_image_id", pa.string()),
    ("retrieved_label", pa.string()),
    ("retrieval_distance", pa.float32()),
    ("notes", pa.string()),
    ("error", pa.string()),
    ("key_id", pa.string()),
    ("model_version", pa.string()),
    ("processed_at", pa.timestamp("us", tz="UTC")),
    ("duration_ms", pa.float32()),
]
VERDICT_NULLABLE = {
    "mask_uri", "restored_uri", "restored_bbox", "retrieved_image_id", "retrieved_label", "retrieval_distance",
    "notes", "error", "key_id",
}
REGISTRY_CONTRACT = [
    ("archive", pa.string()),
    ("image_id", pa.string()),
    ("source_uri", pa.string()),
    ("sha256", pa.string()),
    ("protected_uri", pa.string()),
    ("hidden_code", pa.binary()),
    ("code_bits", pa.int32()),
    ("code_embedding", pa.list_(pa.float32())),
    ("label", pa.string()),
    ("metadata", pa.string()),
    ("key_id", pa.string()),
    ("model_version", pa.string()),
    ("protected_at", pa.timestamp("us", tz="UTC")),
]
# Columns beyond the contract, which allows extra ones.
REGISTRY_EXTRA = [("notes", pa.string())]


def _verdict(**changes) -> VerdictRow:
    values = dict(
        sweep_id="photos-20250101", sweep_date=datetime.date(2025, 1, 1), archive="photos", shard=0,
        image_id="2024/a.jpg", source_uri="s3://b/photos/2024/a.jpg", sha256="ab" * 32, width=640, height=480,
        verdict="tampered", watermark_score=0.97, payload_valid=True, bit_confidence=0.8, tampered_fraction=0.1,
        mask_uri="s3://b/audit/masks/photos-20250101/photos/2024/a.jpg.png", restored_bbox=[1, 2, 30, 40],
        key_id="0123456789ab", model_version="v1", processed_at=datetime.datetime(2025, 1, 1, 3, tzinfo=datetime.UTC),
        duration_ms=12.5,
    )
    values.update(changes)
    return VerdictRow(**values)


def test_verdict_columns_match_contract():
    assert [(field.name, field.type) for field in VERDICT_SCHEMA] == VERDICT_CONTRACT


def test_verdict_contract_nullable_columns():
    nullable = {field.name for field in VERDICT_SCHEMA if field.nullable}
    assert VERDICT_NULLABLE <= nullable


def test_registry_columns_match_contract():
    columns = [(field.name, field.type) for field in REGISTRY_SCHEMA]
    assert columns[: len(REGISTRY_CONTRACT)] == REGISTRY_CONTRACT
    assert columns[len(REGISTRY_CONTRACT) :] == REGISTRY_EXTRA


def test_partition_keys_not_in_files():
    assert VERDICT_FILE_SCHEMA.names == [name for name, _ in VERDICT_CONTRACT if name not in ("sweep_date", "archive")]
    assert REGISTRY_FILE_SCHEMA.names == [name for name, _ in REGISTRY_CONTRACT + REGISTRY_EXTRA if name != "archive"]


def test_verdict_values():
    assert VERDICTS == ("authentic", "tampered", "forged", "unmarked", "error")
    with pytest.raises(ValidationError):
        _verdict(verdict="suspicious")


def test_bbox_needs_four_values():
    with pytest.raises(ValidationError):
        _verdict(restored_bbox=[1, 2, 3])


def test_rows_round_trip_parquet():
    rows = [_verdict(), _verdict(image_id="b.jpg", verdict="error", width=None, height=None, watermark_score=None,
                                 payload_valid=False, bit_confidence=None, tampered_fraction=None, mask_uri=None,
                                 restored_bbox=None, duration_ms=None, error="cannot decode image b.jpg: truncated")]
    table = rows_to_table(rows, VERDICT_FILE_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    back = pq.read_table(io.BytesIO(buffer.getvalue()))

    assert back.schema.equals(VERDICT_FILE_SCHEMA)
    assert back.column("restored_bbox").to_pylist() == [[1, 2, 30, 40], None]
    assert back.column("verdict").to_pylist() == ["tampered", "error"]


def test_registry_row_binary_code():
    row = RegistryRow(
        archive="photos", image_id="a.jpg", source_uri="file:///p/a.jpg", sha256="00" * 32,
        protected_uri="file:///d/protected/photos/a.jpg", hidden_code=bytes(range(18)), code_bits=140,
        code_embedding=[0.5, -0.5], key_id="0123456789ab", model_version="v1",
        protected_at=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    )
    table = rows_to_table([row], REGISTRY_FILE_SCHEMA)
    assert table.column("hidden_code").to_pylist() == [bytes(range(18))]
    assert table.column("code_embedding").type == pa.list_(pa.float32())
