"""A protect run killed mid-archive with SIGKILL, then rerun: only unfinished shards are redone, one row per image."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows import api

KEY = "00112233445566778899aabbccddeeff"
SHARD_SIZE = 2


def _wait_for_done_marker(shards: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shards.is_dir() and any(shards.glob("*.done")):
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before any shard finished")
        time.sleep(0.05)
    pytest.fail(f"no shard finished within {timeout:.0f} s")


def test_killed_protect_run_resumes(ray_local, prefect_harness, tmp_path, photos_dir, monkeypatch):
    source = tmp_path / "photos"
    source.mkdir()
    for copy in range(2):
        for photo in sorted(photos_dir.glob("*.jpg")):
            shutil.copy(photo, source / f"{copy}-{photo.name}")
    images = sorted(path.name for path in source.iterdir())
    dest = tmp_path / "out"

    # A fresh process with its own Prefect server and Ray, killed with its
    # whole process group once its first shard is done.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / "prefect"), HCR_KEY=KEY)
    command = [
        sys.executable, "-m", "flows.cli", "protect", str(source), "--out", str(dest), "--archive", "photos",
        "--shard-size", str(SHARD_SIZE), "--batch-size", "1", "--no-progress",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_done_marker(dest / "_protect" / "photos" / "shards", process, timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finished_before = len(list((dest / "_protect" / "photos" / "shards").glob("*.done")))
    shards = len(images) // SHARD_SIZE
    assert 1 <= finished_before < shards, "the kill must land between the first and the last shard"

    monkeypatch.setenv("HCR_KEY", KEY)
    rerun = api.protect(str(source), str(dest), archive="photos", shard_size=SHARD_SIZE, progress=False)

    assert rerun.ok
    assert rerun.shards_skipped == finished_before
    assert rerun.shards_run == shards - finished_before
    registry = pq.read_table(dest / "registry" / "archive=photos")
    assert sorted(registry.column("image_id").to_pylist()) == images
    assert api.verify(str(dest), archive="photos").ok
