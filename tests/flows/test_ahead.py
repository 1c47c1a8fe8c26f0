"""Shards started ahead of the flow: the flow's split between finished and to-run shards."""

import datetime

from actors import pool as pool_module
from flows import ahead
from flows.shard import ShardSpec


def _spec(shard: int) -> ShardSpec:
    return ShardSpec(
        kind="protect", run_id="photos", archive="photos", sweep_date=datetime.date(2026, 1, 1), shard=shard,
        entries=[], source="/src", dest="/dest", part_url=f"/dest/part-{shard}", done_url=f"/dest/{shard}.done",
    )


def test_split_done_with_ahead_shard(monkeypatch):
    # Shard 0 ran ahead and already wrote its marker, and shard 1 was done by an earlier run.
    monkeypatch.setitem(pool_module._PRESTARTED, "protect", pool_module._Prestarted([], [], {0: None}))
    specs = [_spec(shard) for shard in range(3)]
    finished, todo = ahead.split_done("protect", specs, done={0, 1})
    assert [spec.shard for spec in finished] == [1]
    assert [spec.shard for spec in todo] == [0, 2]


def test_split_done_without_ahead():
    specs = [_spec(shard) for shard in range(3)]
    finished, todo = ahead.split_done("audit", specs, done={2})
    assert [spec.shard for spec in finished] == [2]
    assert [spec.shard for spec in todo] == [0, 1]


def test_try_ahead_on_error(caplog):
    def start() -> None:
        ahead.keep_manifest("protect", "photos", object())
        raise FileNotFoundError("/missing/photos")

    with caplog.at_level("INFO", logger="flows.ahead"):
        ahead.try_ahead(start)
    assert ahead.take_manifest("protect", "photos") is None
    assert "no shards started ahead of the flow: FileNotFoundError" in caplog.text
