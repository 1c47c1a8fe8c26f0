"""Sweep manifest: stable image-to-shard mapping, reuse on rerun, extension for protect."""

import datetime
import random

import pytest

from flows import manifest as manifest_module
from flows.listing import ArchiveEntry, list_archive
from flows.manifest import Manifest, ManifestInfo, assign_shards, load_or_plan
from schemas.config import StorageOptions

OPTIONS = StorageOptions()


def _info(**changes) -> ManifestInfo:
    values = dict(
        kind="audit", run_id="photos-20250101", archive="photos", source="file:///data/photos",
        sweep_date=datetime.date(2025, 1, 1), shard_size=3, created_at=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    )
    values.update(changes)
    return ManifestInfo(**values)


def _entries(names: list[str]) -> list[ArchiveEntry]:
    return [ArchiveEntry(image_id=name, source_uri=f"file:///data/photos/{name}", path=f"/data/photos/{name}") for name in names]


def test_shards_follow_sorted_ids():
    entries = _entries(["e.jpg", "a.jpg", "c.jpg", "b.jpg", "d.jpg", "f.jpg", "g.jpg"])
    mapping = dict(zip((entry.image_id for entry in entries), assign_shards(entries, 3), strict=True))
    assert mapping == {"a.jpg": 0, "b.jpg": 0, "c.jpg": 0, "d.jpg": 1, "e.jpg": 1, "f.jpg": 1, "g.jpg": 2}


def test_mapping_ignores_listing_order():
    names = [f"{index:03d}.jpg" for index in range(50)]
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    first = manifest_module.plan(_info(), _entries(names))
    second = manifest_module.plan(_info(), _entries(shuffled))
    assert [entry.image_id for entry in first.entries] == [entry.image_id for entry in second.entries]
    assert first.shard_of == second.shard_of


def test_table_round_trip(hostile_archive):
    planned = manifest_module.plan(_info(), list_archive(str(hostile_archive), OPTIONS))
    loaded = Manifest.from_table(planned.to_table())
    assert loaded.info == planned.info
    assert loaded.entries == planned.entries
    assert loaded.shard_of == planned.shard_of


def test_rerun_reuses_manifest(tmp_path):
    path = str(tmp_path / "_sweeps" / "s" / "manifest.parquet")
    calls = []

    def lister():
        calls.append(1)
        return _entries(["a.jpg", "b.jpg", "c.jpg", "d.jpg"])

    first, reused_first = load_or_plan(path, _info(), lister, OPTIONS)
    later = _info(sweep_date=datetime.date(2025, 3, 9), shard_size=100)
    second, reused_second = load_or_plan(path, later, lambda: _entries(["z.jpg"]), OPTIONS)

    assert (reused_first, reused_second) == (False, True)
    assert len(calls) == 1
    assert second.info.sweep_date == datetime.date(2025, 1, 1)
    assert second.info.shard_size == 3
    assert second.shard_of == first.shard_of == [0, 0, 0, 1]


def test_rerun_rejects_other_source(tmp_path):
    path = str(tmp_path / "manifest.parquet")
    load_or_plan(path, _info(), lambda: _entries(["a.jpg"]), OPTIONS)
    with pytest.raises(ValueError, match="planned with source"):
        load_or_plan(path, _info(source="file:///other"), lambda: _entries(["a.jpg"]), OPTIONS)


def test_extend_appends_new_shards(tmp_path):
    path = str(tmp_path / "manifest.parquet")
    load_or_plan(path, _info(kind="protect"), lambda: _entries(["b.jpg", "d.jpg", "f.jpg", "h.jpg"]), OPTIONS)
    grown = _entries(["a.jpg", "b.jpg", "d.jpg", "f.jpg", "h.jpg", "i.jpg"])
    extended, _ = load_or_plan(path, _info(kind="protect"), lambda: grown, OPTIONS, extend_existing=True)

    mapping = dict(zip((entry.image_id for entry in extended.entries), extended.shard_of, strict=True))
    assert mapping == {"b.jpg": 0, "d.jpg": 0, "f.jpg": 0, "h.jpg": 1, "a.jpg": 2, "i.jpg": 2}
    assert manifest_module.load(path, OPTIONS).shard_of == extended.shard_of
