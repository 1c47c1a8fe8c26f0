"""Arrow schemas derived from pydantic row models, so each row type has one definition.

A field's Arrow type comes from its annotation: `str` is string, `bool` is
bool, `bytes` is binary, `datetime.date` is date32, `datetime.datetime` is
timestamp[us, UTC]; an `ArrowType` marker in `Annotated[...]` overrides the
default (int32, float32, fixed-size lists). A field is nullable exactly when
its annotation admits `None`.
"""

import datetime
import types
import typing
from dataclasses import dataclass

import pyarrow as pa
from pydantic import BaseModel

_DEFAULT_TYPES: dict[type, pa.DataType] = {
    str: pa.string(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    int: pa.int64(),
    float: pa.float64(),
    datetime.date: pa.date32(),
    datetime.datetime: pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class ArrowType:
    """`Annotated` marker that fixes a field's Arrow type."""

    type: pa.DataType


def _unwrap_optional(annotation) -> tuple[object, bool]:
    """Split `X | None` into (X, True); anything else into (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            raise TypeError(f"only `X | None` unions map to Arrow, got {annotation}")
        return members[0], True
    return annotation, False


def _arrow_type(annotation, metadata: list) -> pa.DataType:
    for item in metadata:
        if isinstance(item, ArrowType):
            return item.type
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _arrow_type(base, list(extra))
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(value, str) for value in values):
            return pa.string()
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        item_type, _ = _unwrap_optional(item)
        return pa.list_(_arrow_type(item_type, []))
    if annotation in _DEFAULT_TYPES:
        return _DEFAULT_TYPES[annotation]
    raise TypeError(f"no Arrow type for annotation {annotation!r}; add an ArrowType marker")


def arrow_schema(model: type[BaseModel], exclude: tuple[str, ...] = ()) -> pa.Schema:
    """Build the Arrow schema of a row model, in field order, without the `exclude` fields."""
    fields = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        annotation, nullable = _unwrap_optional(info.annotation)
        fields.append(pa.field(name, _arrow_type(annotation, list(info.metadata)), nullable=nullable))
    return pa.schema(fields)


def rows_to_table(rows: list[BaseModel], schema: pa.Schema) -> pa.Table:
    """Convert validated rows to a table of `schema`; fields not in the schema are dropped."""
    names = set(schema.names)
    records = [row.model_dump(include=names) for row in rows]
    return pa.Table.from_pylist(records, schema=schema)
