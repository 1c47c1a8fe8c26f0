"""Storage helpers: retries with backoff, atomic local writes, S3 through a local moto server."""

import errno
import os

import pyarrow as pa
import pytest

from flows import storage
from flows.listing import list_archive
from flows.reader import LoadedImage, iter_images
from schemas.config import StorageOptions

FAST = StorageOptions(retries=3, retry_backoff_s=0.01)


class Flaky:
    def __init__(self, failures: list[BaseException]):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retries_transient_errors():
    call = Flaky([ConnectionResetError("reset"), OSError(errno.EIO, "S3 returned 503")])
    assert storage.with_retries(call, FAST, "read x") == "ok"
    assert call.calls == 3


def test_gives_up_after_retries():
    call = Flaky([TimeoutError("slow")] * 5)
    with pytest.raises(TimeoutError):
        storage.with_retries(call, FAST, "read x")
    assert call.calls == 3


@pytest.mark.parametrize("error", [FileNotFoundError("gone"), PermissionError("denied"), ValueError("bad")])
def test_no_retry_on_permanent_errors(error):
    call = Flaky([error])
    with pytest.raises(type(error)):
        storage.with_retries(call, FAST, "read x")
    assert call.calls == 1


def test_local_write_is_atomic(tmp_path):
    fs, path = storage.open_url(str(tmp_path / "a" / "b" / "part.parquet"), FAST)
    storage.write_parquet(pa.table({"x": [1, 2]}), fs, path, FAST)
    assert storage.read_parquet(fs, path, FAST).column("x").to_pylist() == [1, 2]
    assert os.listdir(tmp_path / "a" / "b") == ["part.parquet"]


def test_join_and_url(tmp_path):
    assert storage.join("s3://b/root/", "/x/", "y.png") == "s3://b/root/x/y.png"
    fs, path = storage.open_url(str(tmp_path), FAST)
    assert storage.to_url(fs, path) == f"file://{tmp_path}"


def test_s3_endpoint_round_trip(s3_endpoint, s3_bucket):
    options = StorageOptions(s3_endpoint_url=s3_endpoint)
    fs, path = storage.open_url(f"s3://{s3_bucket}/dir/obj.bin", options)
    assert fs.storage_options["endpoint_url"] == s3_endpoint
    storage.write_bytes(fs, path, b"payload", options)
    assert storage.exists(fs, path, options)
    assert storage.read_bytes(fs, path, options) == b"payload"
    assert storage.to_url(fs, path) == f"s3://{s3_bucket}/dir/obj.bin"
    storage.remove(fs, path, options)
    assert not storage.exists(fs, path, options)


def test_s3_archive_listing_and_reading(s3_endpoint, s3_bucket, hostile_archive, expected_ids):
    options = StorageOptions(s3_endpoint_url=s3_endpoint)
    fs, _ = storage.open_url(f"s3://{s3_bucket}", options)
    for path in hostile_archive.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"{s3_bucket}/src/archive/{path.relative_to(hostile_archive)}", path.read_bytes())

    entries = list_archive(f"s3://{s3_bucket}/src/archive", options)
    assert [entry.image_id for entry in entries] == sorted(expected_ids)
    member = next(entry for entry in entries if entry.image_id == "shards/00001.tar/img/a.jpg")
    assert member.source_uri == f"tar://img/a.jpg::s3://{s3_bucket}/src/archive/shards/00001.tar"

    import datetime

    from flows.shard import ShardSpec

    spec = ShardSpec(
        kind="audit", run_id="s", archive="archive", sweep_date=datetime.date(2025, 1, 1), shard=0, entries=entries,
        source=f"s3://{s3_bucket}/src/archive", dest="memory://unused", part_url="memory://u/p", done_url="memory://u/d",
        storage=options,
    )
    items = list(iter_images(spec))
    assert len(items) == len(expected_ids)
    assert sum(isinstance(item, LoadedImage) for item in items) == 6
