"""Verdict and registry rows: the pydantic models and the Arrow schemas derived from them.

Partition keys live in the path, not in the files: `sweep_date` and `archive`
for verdicts (`verdicts/sweep_date=D/archive=A/part-SWEEP_ID-SHARD.parquet`),
`archive` for the registry (`registry/archive=A/part-SHARD.parquet`). The
`*_SCHEMA` constants hold every column; the `*_FILE_SCHEMA` constants are what
a Parquet part stores.
"""

import datetime
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from schemas.arrow import ArrowType, arrow_schema

Int32 = Annotated[int, ArrowType(pa.int32())]
Float32 = Annotated[float, ArrowType(pa.float32())]
BBox = Annotated[list[int], ArrowType(pa.list_(pa.int32(), 4)), Field(min_length=4, max_length=4)]
Embedding = Annotated[list[float], ArrowType(pa.list_(pa.float32()))]

Verdict = Literal["authentic", "tampered", "forged", "unmarked", "error"]
VERDICTS: tuple[str, ...] = ("authentic", "tampered", "forged", "unmarked", "error")


class VerdictRow(BaseModel):
    """One audited image. Every input yields exactly one row, an unreadable one included."""

    model_config = ConfigDict(extra="forbid")

    sweep_id: str = Field(description="id of the sweep run")
    sweep_date: datetime.date = Field(description="UTC date the sweep started; partition key")
    archive: str = Field(description="archive name; partition key")
    shard: Int32 = Field(description="shard number in the sweep manifest")
    image_id: str = Field(description="path relative to the archive root; members as CONTAINER/MEMBER")
    source_uri: str = Field(description="full URL of the image, fsspec chained form for tar and zip members")
    sha256: str | None = Field(description="hex SHA-256 of the bytes read; null when nothing could be read")
    width: Int32 | None = Field(description="decoded width in pixels after EXIF orientation; null for errors")
    height: Int32 | None = Field(description="decoded height in pixels after EXIF orientation; null for errors")
    verdict: Verdict = Field(description="authentic, tampered, forged, unmarked or error")
    watermark_score: Float32 | None = Field(description="0..1 confidence that a watermark is present; null for errors")
    payload_valid: bool = Field(description="ECC decoded and MAC verified; false for errors")
    bit_confidence: Float32 | None = Field(description="mean decision margin of the payload bits; null for errors")
    tampered_fraction: Float32 | None = Field(description="share of pixels in the mask, 0..1; null for errors")
    mask_uri: str | None = Field(default=None, description="PNG mask, white = edited (tampered images only)")
    restored_uri: str | None = Field(default=None, description="PNG restored crop (tampered images only)")
    restored_bbox: BBox | None = Field(default=None, description="x0, y0, x1, y1 of the crop in the input, pixels")
    retrieved_image_id: str | None = Field(default=None, description="image_id of the registry match")
    retrieved_label: str | None = Field(default=None, description="label of the registry match")
    retrieval_distance: Float32 | None = Field(
        default=None, description="0 for an exact hidden-code match, else 1 - cosine similarity of code embeddings"
    )
    notes: str | None = Field(default=None, description="non-fatal remarks, joined with '; '")
    error: str | None = Field(default=None, description="what failed, for verdict = error")
    key_id: str | None = Field(default=None, description="fingerprint of the key used")
    model_version: str = Field(description="weights version used")
    processed_at: datetime.datetime = Field(description="UTC time the row was produced")
    duration_ms: Float32 | None = Field(description="model time for this image, milliseconds; null for errors")


class RegistryRow(BaseModel):
    """One protected image, as an audit looks it up."""

    model_config = ConfigDict(extra="forbid")

    archive: str = Field(description="archive name; partition key")
    image_id: str = Field(description="path relative to the archive root; members as CONTAINER/MEMBER")
    source_uri: str = Field(description="full URL of the original image")
    sha256: str = Field(description="hex SHA-256 of the original bytes")
    protected_uri: str = Field(description="URL of the protected image")
    hidden_code: bytes = Field(description="hidden code bits packed MSB first (bit i is bit 7 - i % 8 of byte i // 8)")
    code_bits: Int32 = Field(description="number of valid bits in hidden_code")
    code_embedding: Embedding = Field(description="L2-normalized code embedding searched by the nearest-neighbour index")
    label: str | None = Field(default=None, description="label from the sidecar file")
    metadata: str | None = Field(default=None, description="other sidecar columns as a JSON object")
    key_id: str = Field(description="fingerprint of the key used")
    model_version: str = Field(description="weights version used")
    protected_at: datetime.datetime = Field(description="UTC time of protection")
    notes: str | None = Field(default=None, description="non-fatal remarks of protection, joined with '; ' (extra column)")


VERDICT_PARTITION_KEYS = ("sweep_date", "archive")
REGISTRY_PARTITION_KEYS = ("archive",)

VERDICT_SCHEMA = arrow_schema(VerdictRow)
VERDICT_FILE_SCHEMA = arrow_schema(VerdictRow, exclude=VERDICT_PARTITION_KEYS)
REGISTRY_SCHEMA = arrow_schema(RegistryRow)
REGISTRY_FILE_SCHEMA = arrow_schema(RegistryRow, exclude=REGISTRY_PARTITION_KEYS)
