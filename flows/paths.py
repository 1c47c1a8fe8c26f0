"""The output layout of protect and audit runs, in one place.

Under a protect destination DEST:
    protected/ARCHIVE/IMAGE_ID                          protected images
    registry/archive=ARCHIVE/part-SHARD.parquet         registry rows
    _protect/ARCHIVE/manifest.parquet, shards/SHARD.done
Under an audit destination DEST:
    verdicts/sweep_date=D/archive=A/part-SWEEP_ID-SHARD.parquet
    masks/SWEEP_ID/A/IMAGE_ID.png, restored/SWEEP_ID/A/IMAGE_ID.png
    _sweeps/SWEEP_ID/manifest.parquet, shards/SHARD.done
SHARD is the shard number zero-padded to 5 digits. Object keys append `.png`
to the image id, so `a.jpg` and `a.png` never collide.
"""

import datetime
import os
import re

from flows.storage import join

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(value: str, what: str) -> str:
    """Validate an archive name or sweep id, which become path segments and partition values."""
    if not _NAME.match(value) or ".." in value:
        raise ValueError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_', '+' and '-' only, starting with a letter or digit"
        )
    return value


def default_archive(source: str) -> str:
    """Return the last path component of an archive URL (`s3://b/photos/2024/` -> `2024`)."""
    location = source.split("::")[-1]
    if "://" not in location:
        location = os.path.abspath(location)  # so that "." names the current folder
    return location.rstrip("/").rsplit("/", 1)[-1]


def default_sweep_id(archive: str, now: datetime.datetime | None = None) -> str:
    """Return `ARCHIVE-YYYYMMDD` for the current UTC date, so a same-day rerun resumes."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return f"{archive}-{moment.astimezone(datetime.UTC):%Y%m%d}"


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


# Protect.
def protected_path(dest: str, archive: str, image_id: str) -> str:
    return join(dest, "protected", archive, image_id)


def registry_root(dest: str) -> str:
    return join(dest, "registry")


def registry_part(dest: str, archive: str, shard: int) -> str:
    return join(dest, "registry", f"archive={archive}", f"part-{shard_name(shard)}.parquet")


def protect_state(dest: str, archive: str) -> str:
    return join(dest, "_protect", archive)


# Audit.
def verdicts_root(dest: str) -> str:
    return join(dest, "verdicts")


def verdict_part(dest: str, sweep_date: datetime.date, archive: str, sweep_id: str, shard: int) -> str:
    return join(
        dest, "verdicts", f"sweep_date={sweep_date.isoformat()}", f"archive={archive}", f"part-{sweep_id}-{shard_name(shard)}.parquet"
    )


def mask_path(dest: str, sweep_id: str, archive: str, image_id: str) -> str:
    return join(dest, "masks", sweep_id, archive, image_id + ".png")


def restored_path(dest: str, sweep_id: str, archive: str, image_id: str) -> str:
    return join(dest, "restored", sweep_id, archive, image_id + ".png")


def sweep_state(dest: str, sweep_id: str) -> str:
    return join(dest, "_sweeps", sweep_id)


# Run state, shared by both kinds.
def manifest_path(state: str) -> str:
    return join(state, "manifest.parquet")


def done_marker(state: str, shard: int) -> str:
    return join(state, "shards", f"{shard_name(shard)}.done")
