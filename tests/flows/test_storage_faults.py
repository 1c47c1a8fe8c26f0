"""Storage faults during a real audit shard: transient errors are retried with backoff, permanent ones recorded.

The shard runs in this process on a real AuditWorker (the v1 models) over an
in-memory fsspec filesystem that raises chosen errors on chosen calls. The
backoff sleeps are recorded instead of slept.
"""

import datetime
import errno
import io
import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from flows import paths, storage
from flows.listing import list_archive
from flows.shard import ShardSpec, done_shards
from schemas.config import ModelOptions, StorageOptions

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"
PROTOCOL = "hcrflaky"
OPTIONS = StorageOptions(retries=4, retry_backoff_s=0.2)
SOURCE = f"{PROTOCOL}://src"
DEST = f"{PROTOCOL}://out"
LOOSE = {"a.jpg": "grey.jpg", "b.png": "rgba.png"}
MEMBERS = {"img/c.webp": "photo.webp", "img/d.png": "palette.png", "img/e.png": "la.png"}
IMAGE_IDS = sorted([*LOOSE, *(f"pack.tar/{name}" for name in MEMBERS)])


@dataclass
class Fault:
    """Raise `error()` on the next `times` calls of `operation` on a path containing `match`."""

    operation: str  # "write", "read" or "open"
    match: str
    error: BaseException | Callable[[], BaseException]  # an instance, or a class or function that makes one
    times: int = 1
    after_bytes: int | None = None  # "open" only: fail inside read() once this many bytes were read


class _FailingReader:
    """A file object that raises its fault once its reads pass `after_bytes`."""

    def __init__(self, handle, fault: Fault):
        self._handle = handle
        self._fault = fault

    def read(self, size: int = -1) -> bytes:
        if self._handle.tell() >= self._fault.after_bytes:
            raise _error(self._fault)
        return self._handle.read(size)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def _error(fault: Fault) -> BaseException:
    return fault.error if isinstance(fault.error, BaseException) else fault.error()


class FlakyFileSystem(MemoryFileSystem):
    """An in-memory filesystem of its own that fails the calls listed in `faults`."""

    protocol = (PROTOCOL,)
    # Class-level, as in MemoryFileSystem: every instance shares one store.
    store: ClassVar[dict] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    faults: ClassVar[list[Fault]] = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix(f"{PROTOCOL}://"))

    def _take(self, operation: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation == operation and fault.match in path and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def pipe_file(self, path, value, *args, **kwargs):
        fault = self._take("write", path)
        if fault:
            raise _error(fault)
        return super().pipe_file(path, value, *args, **kwargs)

    def cat_file(self, path, *args, **kwargs):
        fault = self._take("read", path)
        if fault:
            raise _error(fault)
        return super().cat_file(path, *args, **kwargs)

    def _open(self, path, mode="rb", *args, **kwargs):
        handle = super()._open(path, mode, *args, **kwargs)
        fault = self._take("open", path) if "r" in mode else None
        if fault and fault.after_bytes is None:
            raise _error(fault)
        return _FailingReader(handle, fault) if fault else handle


fsspec.register_implementation(PROTOCOL, FlakyFileSystem, clobber=True)


def _transient() -> OSError:
    # s3fs reports a 503 that its own retries did not cure as EIO.
    return OSError(errno.EIO, "simulated 503 Slow Down")


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, fixture in MEMBERS.items():
            data = (CORPUS / fixture).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def flaky(monkeypatch):
    """A fresh flaky store holding the source archive; yields the list of backoff sleeps (seconds)."""
    FlakyFileSystem.store.clear()
    FlakyFileSystem.pseudo_dirs[:] = [""]
    FlakyFileSystem.faults = []
    fs = FlakyFileSystem()
    for name, fixture in LOOSE.items():
        fs.pipe_file(f"/src/{name}", (CORPUS / fixture).read_bytes())
    fs.pipe_file("/src/pack.tar", _tar_bytes())

    sleeps: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)
    yield sleeps
    FlakyFileSystem.faults = []


@pytest.fixture(scope="module")
def worker():
    from actors.audit_actor import AuditWorker

    return AuditWorker(ModelOptions())


def _spec() -> ShardSpec:
    date = datetime.date(2025, 1, 1)
    return ShardSpec(
        kind="audit", run_id="faults", archive="src", sweep_date=date, shard=0, entries=list_archive(SOURCE, OPTIONS),
        source=SOURCE, dest=DEST, part_url=paths.verdict_part(DEST, date, "src", "faults", 0),
        done_url=paths.done_marker(paths.sweep_state(DEST, "faults"), 0), storage=OPTIONS, batch_size=8,
    )


def _rows(spec: ShardSpec) -> dict[str, dict]:
    fs, path = storage.open_url(spec.part_url, OPTIONS)
    table = pq.read_table(io.BytesIO(fs.cat_file(path)))
    return {row["image_id"]: row for row in table.to_pylist()}


def _is_done(spec: ShardSpec) -> bool:
    return done_shards(paths.sweep_state(DEST, "faults"), OPTIONS) == {spec.shard}


def test_clean_run_audits_every_image(flaky, worker):
    spec = _spec()
    stats = worker.run_shard(spec)
    rows = _rows(spec)
    assert sorted(rows) == IMAGE_IDS
    assert stats.counts.get("error", 0) == 0
    assert _is_done(spec)
    assert flaky == []


def test_transient_part_write_retried(flaky, worker, caplog):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("write", "part-faults-00000.parquet", _transient, times=2)]
    with caplog.at_level(logging.WARNING, logger="flows.storage"):
        stats = worker.run_shard(spec)

    assert flaky == [0.2, 0.4]
    assert sorted(_rows(spec)) == IMAGE_IDS
    assert stats.rows == len(IMAGE_IDS)
    assert _is_done(spec)
    retries = [record.getMessage() for record in caplog.records if "part-faults-00000.parquet failed" in record.getMessage()]
    assert len(retries) == 2
    assert "attempt 1 of 4" in retries[0]
    assert "simulated 503 Slow Down" in retries[0]


def test_transient_marker_write_retried(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("write", "00000.done", ConnectionResetError, times=1)]
    worker.run_shard(spec)
    assert flaky == [0.2]
    assert _is_done(spec)


def test_transient_image_read_retried(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("read", "/src/b.png", TimeoutError, times=3)]
    worker.run_shard(spec)
    assert flaky == [0.2, 0.4, 0.8]
    assert _rows(spec)["b.png"]["verdict"] != "error"


def test_transient_tar_read_resumes(flaky, worker, caplog):
    spec = _spec()
    # The tar stream breaks after its first member; the retry reopens it for the members not read yet.
    FlakyFileSystem.faults = [Fault("open", "/src/pack.tar", _transient, times=1, after_bytes=3000)]
    with caplog.at_level(logging.WARNING, logger="flows.reader"):
        worker.run_shard(spec)

    rows = _rows(spec)
    assert sorted(rows) == IMAGE_IDS
    assert all(rows[f"pack.tar/{name}"]["verdict"] != "error" for name in MEMBERS)
    assert flaky == [0.2]
    assert any("members not read yet" in record.getMessage() for record in caplog.records)


def test_transient_errors_exhausted_fail_shard(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("read", "/src/a.jpg", _transient, times=99)]
    with pytest.raises(OSError, match="simulated 503"):
        worker.run_shard(spec)
    assert flaky == [0.2, 0.4, 0.8]
    assert not _is_done(spec)
    fs, part = storage.open_url(spec.part_url, OPTIONS)
    assert not fs.exists(part), "a transient failure must not become error rows"

    FlakyFileSystem.faults = []
    worker.run_shard(spec)
    rows = _rows(spec)
    assert sorted(rows) == IMAGE_IDS
    assert rows["a.jpg"]["verdict"] != "error"


def test_permanent_read_error_is_error_row(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("read", "/src/a.jpg", PermissionError("Access Denied"), times=99)]
    stats = worker.run_shard(spec)

    assert flaky == [], "a permanent error is not retried"
    rows = _rows(spec)
    assert sorted(rows) == IMAGE_IDS
    assert rows["a.jpg"]["verdict"] == "error"
    assert "a.jpg" in rows["a.jpg"]["error"]
    assert "Access Denied" in rows["a.jpg"]["error"]
    assert stats.counts["error"] == 1
    assert [image_id for image_id, _ in stats.errors] == ["a.jpg"]
    assert _is_done(spec)


def test_permanent_tar_error_is_error_rows(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("open", "/src/pack.tar", FileNotFoundError("pack.tar was deleted"), times=99)]
    worker.run_shard(spec)

    rows = _rows(spec)
    assert sorted(rows) == IMAGE_IDS
    for name in MEMBERS:
        row = rows[f"pack.tar/{name}"]
        assert row["verdict"] == "error"
        assert f"pack.tar/{name}" in row["error"]
        assert "pack.tar was deleted" in row["error"]
    assert flaky == []


def test_permanent_write_error_fails_shard(flaky, worker):
    spec = _spec()
    FlakyFileSystem.faults = [Fault("write", "part-faults-00000.parquet", PermissionError("Access Denied"), times=99)]
    with pytest.raises(PermissionError, match="Access Denied"):
        worker.run_shard(spec)
    assert flaky == []
    assert not _is_done(spec)


def test_listing_retries_transient_container_error(flaky):
    FlakyFileSystem.faults = [Fault("open", "/src/pack.tar", _transient, times=2)]
    entries = list_archive(SOURCE, OPTIONS)
    assert sorted(entry.image_id for entry in entries) == IMAGE_IDS
    assert all(entry.error is None for entry in entries)
    assert flaky == [0.2, 0.4]


def test_listing_raises_when_retries_run_out(flaky):
    # An error entry would stay in the sweep's manifest; raising lets a rerun list the tar again.
    FlakyFileSystem.faults = [Fault("open", "/src/pack.tar", _transient, times=99)]
    with pytest.raises(OSError, match="simulated 503"):
        list_archive(SOURCE, OPTIONS)
    assert flaky == [0.2, 0.4, 0.8]
