"""Shard lifecycle: part before marker, skip when done, redo when unfinished."""

import datetime
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import paths, storage
from flows.listing import ArchiveEntry
from flows.shard import ShardSpec, ShardStats, done_shards, run_shard

SCHEMA = pa.schema([("image_id", pa.string())])


def _spec(root: str, shard: int = 0, count: int = 3) -> ShardSpec:
    entries = [ArchiveEntry(image_id=f"{shard}-{index}.jpg", source_uri="file:///x", path="/x") for index in range(count)]
    state = paths.sweep_state(root, "sweep")
    return ShardSpec(
        kind="audit", run_id="sweep", archive="photos", sweep_date=datetime.date(2025, 1, 1), shard=shard,
        entries=entries, source="file:///x", dest=root,
        part_url=paths.verdict_part(root, datetime.date(2025, 1, 1), "photos", "sweep", shard),
        done_url=paths.done_marker(state, shard),
    )


class Processor:
    """A shard processor that writes one object per image and records its calls."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, spec: ShardSpec):
        self.calls += 1
        assert not os.path.exists(spec.done_url), "the marker must not exist while the shard runs"
        fs, _ = storage.open_url(spec.dest, spec.storage)
        for index, entry in enumerate(spec.entries):
            if self.fail_after is not None and index == self.fail_after:
                raise OSError("simulated crash in the middle of the shard")
            storage.write_bytes(fs, storage.join(spec.dest, "masks", entry.image_id + ".png"), b"png", spec.storage)
        table = pa.Table.from_pylist([{"image_id": entry.image_id} for entry in spec.entries], schema=SCHEMA)
        return table, ShardStats(shard=spec.shard, images=len(spec.entries), rows=table.num_rows, counts={"authentic": table.num_rows})


def test_part_then_marker(tmp_path):
    spec = _spec(str(tmp_path))
    stats = run_shard(spec, Processor())

    assert stats.rows == 3
    assert not stats.skipped
    assert pq.read_table(spec.part_url).column("image_id").to_pylist() == ["0-0.jpg", "0-1.jpg", "0-2.jpg"]
    assert os.stat(spec.done_url).st_mtime_ns >= os.stat(spec.part_url).st_mtime_ns
    assert ShardStats.model_validate_json(open(spec.done_url).read()).counts == {"authentic": 3}
    assert spec.done_url.endswith("/_sweeps/sweep/shards/00000.done")
    assert "/verdicts/sweep_date=2025-01-01/archive=photos/part-sweep-00000.parquet" in spec.part_url


def test_rerun_skips_done_shard(tmp_path):
    spec = _spec(str(tmp_path))
    processor = Processor()
    run_shard(spec, processor)
    again = run_shard(spec, processor)
    assert processor.calls == 1
    assert again.skipped
    assert again.images == 3


def test_crash_leaves_no_marker(tmp_path):
    spec = _spec(str(tmp_path))
    with pytest.raises(OSError, match="simulated crash"):
        run_shard(spec, Processor(fail_after=1))
    assert not os.path.exists(spec.part_url)
    assert not os.path.exists(spec.done_url)
    assert done_shards(paths.sweep_state(str(tmp_path), "sweep"), spec.storage) == set()

    redo = Processor()
    run_shard(spec, redo)
    assert redo.calls == 1
    assert os.path.exists(spec.done_url)


def test_part_without_marker_is_redone(tmp_path, monkeypatch):
    spec = _spec(str(tmp_path))
    real_write = storage.write_bytes

    def fail_on_marker(fs, path, data, options):
        if path.endswith(".done"):
            raise ConnectionError("storage went away before the marker")
        real_write(fs, path, data, options)

    monkeypatch.setattr(storage, "write_bytes", fail_on_marker)
    with pytest.raises(ConnectionError):
        run_shard(spec, Processor())
    monkeypatch.setattr(storage, "write_bytes", real_write)

    assert os.path.exists(spec.part_url)
    assert done_shards(paths.sweep_state(str(tmp_path), "sweep"), spec.storage) == set()
    redo = Processor()
    run_shard(spec, redo)
    assert redo.calls == 1


def test_rerun_redoes_only_unfinished(tmp_path):
    root = str(tmp_path)
    specs = [_spec(root, shard) for shard in range(3)]
    run_shard(specs[0], Processor())
    with pytest.raises(OSError):
        run_shard(specs[1], Processor(fail_after=0))
    run_shard(specs[2], Processor())
    assert done_shards(paths.sweep_state(root, "sweep"), specs[0].storage) == {0, 2}

    processors = [Processor() for _ in specs]
    results = [run_shard(spec, processor) for spec, processor in zip(specs, processors, strict=True)]
    assert [processor.calls for processor in processors] == [0, 1, 0]
    assert [result.skipped for result in results] == [True, False, True]


def test_audit_row_count_enforced(tmp_path):
    spec = _spec(str(tmp_path))

    def short(spec):
        table = pa.Table.from_pylist([{"image_id": "only-one"}], schema=SCHEMA)
        return table, ShardStats(shard=spec.shard, images=3, rows=1)

    with pytest.raises(RuntimeError, match="produced 1 rows for 3 images"):
        run_shard(spec, short)
    assert not os.path.exists(spec.part_url)


def test_lifecycle_on_memory_filesystem():
    root = "memory://lifecycle-test/dest"
    spec = _spec(root)
    try:
        run_shard(spec, Processor())
        assert done_shards(paths.sweep_state(root, "sweep"), spec.storage) == {0}
        assert run_shard(spec, Processor()).skipped
    finally:
        fs, path = storage.open_url(root, spec.storage)
        fs.rm(path, recursive=True)
