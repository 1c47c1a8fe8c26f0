"""Actors: resource requests, capacity check, and workers that load the real models once."""

import datetime
import shutil
import time
from pathlib import Path

import pytest

from actors.pool import _check_capacity, actor_resources
from flows import paths
from flows.listing import list_archive
from flows.shard import ShardSpec
from schemas.config import ModelOptions, RayOptions, StorageOptions


def _weights_present() -> bool:
    try:
        from hcr_model.bundle import weights_dir

        folder = weights_dir("v1")
    except (ImportError, FileNotFoundError):
        return False
    return all((folder / name).is_file() for name in ("tokenizer.pt", "localizer.pt", "recovery.pt", "calibration.json"))


needs_weights = pytest.mark.skipif(not _weights_present(), reason="hcr_model/weights/v1 is not complete yet")


@pytest.mark.parametrize(
    "options, cluster, expected",
    [
        (RayOptions(num_actors=2), {"CPU": 8.0}, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (RayOptions(num_actors=2), {"CPU": 8.0, "GPU": 4.0}, {"num_cpus": 1.0, "num_gpus": 1.0}),
        (RayOptions(num_actors=4), {"CPU": 8.0, "GPU": 2.0}, {"num_cpus": 1.0, "num_gpus": 0.5}),
        (RayOptions(num_actors=1, gpus_per_actor=0.0), {"CPU": 8.0, "GPU": 1.0}, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (RayOptions(num_actors=1, cpus_per_actor=2.0), {"CPU": 8.0}, {"num_cpus": 2.0, "num_gpus": 0.0}),
    ],
)
def test_actor_resources(options, cluster, expected):
    assert actor_resources(options, cluster) == expected


def test_capacity_check_names_the_fix():
    options = RayOptions(num_actors=3)
    with pytest.raises(RuntimeError, match="need 3 CPUs but the Ray cluster has 2.*--num-actors"):
        _check_capacity(options, actor_resources(options, {"CPU": 2.0}), {"CPU": 2.0})


def _specs(kind: str, source: str, dest: str, shard_size: int = 1) -> list[ShardSpec]:
    entries = list_archive(source, StorageOptions())
    state = paths.protect_state(dest, "photos") if kind == "protect" else paths.sweep_state(dest, "s1")
    specs = []
    for shard, start in enumerate(range(0, len(entries), shard_size)):
        part = (
            paths.registry_part(dest, "photos", shard)
            if kind == "protect"
            else paths.verdict_part(dest, datetime.date(2025, 1, 1), "photos", "s1", shard)
        )
        specs.append(
            ShardSpec(
                kind=kind, run_id="photos" if kind == "protect" else "s1", archive="photos",
                sweep_date=datetime.date(2025, 1, 1), shard=shard, entries=entries[start : start + shard_size],
                source=source, dest=dest, part_url=part, done_url=paths.done_marker(state, shard), batch_size=2,
            )
        )
    return specs


@needs_weights
def test_workers_protect_then_audit(tmp_path, photos_dir):
    from actors.audit_actor import AuditWorker
    from actors.protect_actor import ProtectWorker

    source = tmp_path / "photos"
    source.mkdir()
    for name in ("chelsea.jpg", "coffee.png"):
        shutil.copy(photos_dir / name, source / name)
    dest = str(tmp_path / "prot")

    protector = ProtectWorker(ModelOptions())
    stats = [protector.run_shard(spec) for spec in _specs("protect", str(source), dest)]
    assert [s.counts for s in stats] == [{"protected": 1}, {"protected": 1}]
    assert protector.describe()["shards_run"] == 2

    auditor = AuditWorker(ModelOptions(), registry=dest, registry_storage=StorageOptions())
    protected = str(tmp_path / "prot" / "protected" / "photos")
    stats = [auditor.run_shard(spec) for spec in _specs("audit", protected, str(tmp_path / "audit"), shard_size=2)]
    assert stats[0].counts == {"authentic": 2}


@needs_weights
def test_actor_loads_models_once(ray_local, tmp_path, photos_dir):
    from actors.pool import start_protect_pool

    source = tmp_path / "photos"
    source.mkdir()
    for name in ("chelsea.jpg", "rocket.jpg", "flower.jpg"):
        shutil.copy(photos_dir / name, source / name)
    pool = start_protect_pool(RayOptions(num_actors=1), ModelOptions(), local=True)
    try:
        before = ray_local.get(pool.actors[0].describe.remote())
        results = [pool.run_shard(spec) for spec in _specs("protect", str(source), str(tmp_path / "prot"))]
        after = ray_local.get(pool.actors[0].describe.remote())
    finally:
        pool.shutdown()
    assert [r.images for r in results] == [1, 1, 1]
    assert after["loaded_at"] == before["loaded_at"]
    assert after["pid"] == before["pid"]
    assert after["shards_run"] == 3


class _Image:
    def __init__(self, image_id: str):
        self.image_id = image_id


def _square_batch(images: list) -> list:
    """Return each image's id length squared; raise on ids starting with 'bad'."""
    for image in images:
        if image.image_id.startswith("bad"):
            raise ValueError(f"cannot process {image.image_id}")
    return [len(image.image_id) ** 2 for image in images]


def test_run_batch_plain():
    from actors.runtime import run_batch

    assert run_batch(_square_batch, [_Image("ab"), _Image("abc")], "test") == [4, 9]


def test_run_batch_isolates_bad_image():
    from actors.runtime import run_batch

    results = run_batch(_square_batch, [_Image("ab"), _Image("bad1"), _Image("abcd")], "test")
    assert results[0] == 4
    assert isinstance(results[1], ValueError)
    assert "bad1" in str(results[1])
    assert results[2] == 16


def test_run_batch_raises_when_all_fail():
    from actors.runtime import run_batch

    with pytest.raises(ValueError, match="bad1"):
        run_batch(_square_batch, [_Image("bad1"), _Image("bad2")], "test")


@needs_weights
def test_prestarted_actors_are_adopted(ray_local):
    from actors import pool as pool_module

    pool_module.prestart_protect_pool(RayOptions(num_actors=1), ModelOptions(), local=True)
    prestarted = pool_module._PRESTARTED["protect"].actors
    pool = pool_module.start_protect_pool(RayOptions(num_actors=1), ModelOptions(), local=True)
    try:
        assert pool.actors is prestarted
        assert "protect" not in pool_module._PRESTARTED
    finally:
        pool.shutdown()


@needs_weights
def test_unadopted_actors_are_killed(ray_local):
    from actors import pool as pool_module

    pool_module.prestart_protect_pool(RayOptions(num_actors=1), ModelOptions(), local=True)
    actor = pool_module._PRESTARTED["protect"].actors[0]
    pool_module.discard_prestarted()
    assert pool_module._PRESTARTED == {}
    with pytest.raises(ray_local.exceptions.RayActorError):
        ray_local.get(actor.describe.remote(), timeout=120)


@needs_weights
def test_ahead_shard_collected_once(ray_local, tmp_path, photos_dir):
    """A shard sent before the pool exists keeps its actor busy, and its result is handed over once."""
    from actors import pool as pool_module

    source = tmp_path / "photos"
    source.mkdir()
    for name in ("chelsea.jpg", "coffee.png"):
        shutil.copy(photos_dir / name, source / name)
    specs = _specs("protect", str(source), str(tmp_path / "prot"))
    marker = Path(specs[0].done_url)

    options = RayOptions(num_actors=1)
    pool_module.prestart_protect_pool(options, ModelOptions(), local=True)
    assert pool_module.run_ahead("protect", specs) == [0]
    assert pool_module.ahead_shards("protect") == {0}
    deadline = time.monotonic() + 180
    while not marker.is_file():  # the shard runs before any pool exists
        assert time.monotonic() < deadline, f"{marker} not written within 180 s"
        time.sleep(0.05)
    written = marker.stat().st_mtime_ns

    pool = pool_module.start_protect_pool(options, ModelOptions(), local=True)
    try:
        assert pool.ahead_since is not None
        assert pool._idle.qsize() == 0  # the only actor still belongs to shard 0
        first = pool.run_shard(specs[0])
        assert first.shard == 0
        assert first.images == 1
        assert marker.stat().st_mtime_ns == written  # collected, not run a second time
        assert pool._idle.qsize() == 1

        second = pool.run_shard(specs[1])
        assert second.shard == 1
        assert second.images == 1
    finally:
        pool.shutdown()
    assert pool_module.ahead_shards("protect") == set()


def _wait_for_file(folder, timeout: float) -> None:
    """Return once `folder` contains a file, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and any(path.is_file() for path in folder.rglob("*")):
            return
        time.sleep(0.05)
    pytest.fail(f"no file appeared in {folder} within {timeout:.0f} s")


@needs_weights
def test_killed_actor_retries_shard(ray_local, tmp_path, photos_dir):
    """SIGKILL the actor after its first protected image: Ray restarts it and the shard is redone whole."""
    import os
    import signal
    import threading

    import pyarrow.parquet as pq

    from actors.pool import start_protect_pool

    source = tmp_path / "photos"
    source.mkdir()
    photos = sorted(photos_dir.glob("*.jpg"))
    for copy in range(2):
        for photo in photos:
            shutil.copy(photo, source / f"{copy}-{photo.name}")
    dest = str(tmp_path / "prot")
    (spec,) = _specs("protect", str(source), dest, shard_size=2 * len(photos))

    pool = start_protect_pool(RayOptions(num_actors=1), ModelOptions(), local=True)
    try:
        first_pid = ray_local.get(pool.actors[0].describe.remote())["pid"]
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(stats=pool.run_shard(spec)))
        runner.start()
        _wait_for_file(tmp_path / "prot" / "protected" / "photos", timeout=300)
        os.kill(first_pid, signal.SIGKILL)
        runner.join(timeout=600)
        assert not runner.is_alive(), "the retried shard did not finish"
        second = ray_local.get(pool.actors[0].describe.remote())
    finally:
        pool.shutdown()

    assert second["pid"] != first_pid
    assert result["stats"].counts == {"protected": 2 * len(photos)}
    ids = pq.read_table(spec.part_url).column("image_id").to_pylist()
    assert sorted(ids) == sorted(path.name for path in source.iterdir())
    assert Path(spec.done_url).is_file()
