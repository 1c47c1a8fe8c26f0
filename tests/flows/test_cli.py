"""The hcr command: help text with defaults and units, delegation, verify, sweep ids, key handling."""

import datetime

import pyarrow.parquet as pq
import pytest

from flows import paths
from flows.audit_flow import sweep_identity
from flows.cli import main
from flows.fanout import key_mismatch_warning
from flows.listing import ArchiveEntry
from flows.shard import ShardSpec, ShardStats, run_shard
from flows.summary import summarize
from schemas.config import AuditConfig


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    for command in ("protect", "audit", "verify", "data", "train", "bench", "demo"):
        assert command in out


@pytest.mark.parametrize(
    "command, expected",
    [
        ("audit", ["--registry", "--sweep-id", "ARCHIVE-YYYYMMDD", "--ray-address", "127.0.0.1", "--prefect-api-url",
                   "--s3-endpoint-url", "(default: 256)", "(MiB)", "(pixels)", "(default: 8)", "--no-progress"]),
        ("protect", ["--labels", "--jpeg-quality", "(default: 95)", "0600", "--batch-size", "--key-file"]),
    ],
)
def test_help_states_defaults_and_units(capsys, command, expected):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in expected:
        assert text in out, text


def test_delegate_rejects_unknown_model(capsys):
    assert main(["train", "everything"]) == 2
    assert "tokenizer,localizer,recovery" in capsys.readouterr().err


def test_delegate_calls_module_main(monkeypatch):
    import importlib
    import types

    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv) or 0)
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: fake if name == "hcr_model.training.localizer" else real_import(name))
    assert main(["train", "localizer", "--minutes", "1"]) == 0
    assert calls == [["--minutes", "1"]]


def test_audit_without_key_stops(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HCR_KEY", raising=False)
    monkeypatch.delenv("HCR_KEY_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photos").mkdir()
    assert main(["audit", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert "no secret key configured" in capsys.readouterr().err
    assert not (tmp_path / ".config" / "hcr" / "key").exists()
    assert not (tmp_path / "out").exists()


def test_unknown_weights_version_stops(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photos").mkdir()
    assert main(["protect", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--model-version", "v999"]) == 2
    assert "weights version 'v999' not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_default_sweep_id_is_utc_date():
    config = AuditConfig(source="s3://bucket/archives/photos/", dest="out")
    moment = datetime.datetime(2025, 3, 9, 23, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert sweep_identity(config, moment) == ("photos", "photos-20250310")


def test_explicit_sweep_id_and_archive():
    config = AuditConfig(source="photos", dest="out", archive="press", sweep_id="nightly-7")
    assert sweep_identity(config) == ("press", "nightly-7")


@pytest.mark.parametrize("bad", ["a/b", "..", "x y", "-lead", "a=b"])
def test_invalid_sweep_id_rejected(bad):
    with pytest.raises(ValueError, match="invalid sweep id"):
        sweep_identity(AuditConfig(source="photos", dest="out", sweep_id=bad))


def test_key_mismatch_warning_threshold():
    stats = ShardStats(shard=4, images=10, rows=10, counts={"forged": 6, "error": 0}, mac_failed=6, key_id="abc")
    assert "shard 4: 6 of 10 images" in key_mismatch_warning(stats, 0.5)
    assert key_mismatch_warning(stats.model_copy(update={"mac_failed": 5}), 0.5) is None
    # Error rows do not count as readable images.
    with_errors = stats.model_copy(update={"mac_failed": 4, "counts": {"error": 4}})
    assert key_mismatch_warning(with_errors, 0.5) is not None


def test_summary_counts_and_text():
    stats = [
        ShardStats(shard=0, images=3, rows=3, counts={"authentic": 2, "tampered": 1}, key_id="k"),
        ShardStats(shard=1, images=2, rows=2, counts={"error": 1, "unmarked": 1}, key_id="k", skipped=True,
                   errors=[("b.jpg", "cannot decode image b.jpg: truncated")]),
    ]
    summary = summarize("audit", "s1", "photos", 5, 3, stats, {2: "RayActorError: died"}, 10.0, 2.0, {"verdicts": "s3://b/v"}, [])
    assert summary.counts == {"authentic": 2, "tampered": 1, "error": 1, "unmarked": 1}
    assert (summary.shards_run, summary.shards_skipped) == (1, 1)
    assert summary.images_per_second == 1.5
    assert not summary.ok
    text = summary.format()
    assert "authentic 2, error 1, tampered 1, unmarked 1" in text
    assert "1.50 images/s" in text
    assert "verdicts: s3://b/v" in text
    assert "FAILED shard 2" in text
    assert "cannot decode image b.jpg" in text


def _write_shard(dest: str, shard: int, image_ids: list[str]) -> None:
    from schemas.arrow import rows_to_table
    from schemas.rows import VERDICT_FILE_SCHEMA, VerdictRow

    date = datetime.date(2025, 1, 1)
    entries = [ArchiveEntry(image_id=i, source_uri=f"file:///p/{i}", path=f"/p/{i}") for i in image_ids]
    spec = ShardSpec(
        kind="audit", run_id="s1", archive="photos", sweep_date=date, shard=shard, entries=entries, source="/p", dest=dest,
        part_url=paths.verdict_part(dest, date, "photos", "s1", shard),
        done_url=paths.done_marker(paths.sweep_state(dest, "s1"), shard),
    )

    def process(spec):
        rows = [
            VerdictRow(sweep_id="s1", sweep_date=date, archive="photos", shard=shard, image_id=i, source_uri="file:///p",
                       sha256=None, width=None, height=None, verdict="error", watermark_score=None, payload_valid=False,
                       bit_confidence=None, tampered_fraction=None, error="x", model_version="v1",
                       processed_at=datetime.datetime.now(datetime.UTC), duration_ms=None)
            for i in image_ids
        ]
        return rows_to_table(rows, VERDICT_FILE_SCHEMA), ShardStats(shard=shard, images=len(rows), rows=len(rows))

    run_shard(spec, process)


def test_verify_reports_missing_and_duplicates(tmp_path, capsys):
    from flows.manifest import ManifestInfo, plan

    dest = str(tmp_path / "audit")
    info = ManifestInfo(kind="audit", run_id="s1", archive="photos", source="file:///p", sweep_date=datetime.date(2025, 1, 1),
                        shard_size=2, created_at=datetime.datetime.now(datetime.UTC))
    entries = [ArchiveEntry(image_id=i, source_uri="file:///p", path="/p") for i in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")]
    manifest = plan(info, entries)
    pq.write_table(manifest.to_table(), tmp_path / "m.parquet")
    (tmp_path / "audit" / "_sweeps" / "s1").mkdir(parents=True)
    (tmp_path / "m.parquet").rename(tmp_path / "audit" / "_sweeps" / "s1" / "manifest.parquet")

    _write_shard(dest, 0, ["a.jpg", "b.jpg"])
    _write_shard(dest, 1, ["c.jpg", "c.jpg"])  # d.jpg missing, c.jpg twice: a bug verify must catch
    assert main(["verify", dest, "--sweep-id", "s1"]) == 1
    out = capsys.readouterr().out
    assert "missing (2): d.jpg, e.jpg" in out
    assert "duplicates (1): c.jpg" in out
    assert "unfinished shards (1): 2" in out


def test_cli_protect_in_a_fresh_process(tmp_path, photos_dir):
    """The README path: a new process starts its own Prefect server, Ray and actors side by side."""
    import os
    import shutil
    import subprocess
    import sys

    source = tmp_path / "photos"
    source.mkdir()
    for name in ("chelsea.jpg", "rocket.jpg"):
        shutil.copy(photos_dir / name, source / name)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "RAY_ADDRESS", "HCR_KEY"))
    }
    env.update(HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / "prefect"), HCR_KEY="00112233445566778899aabbccddeeff")
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "protect", str(source), "--out", str(tmp_path / "out"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "started a temporary Prefect server on http://127.0.0.1:" in output
    assert "View at" not in output  # the temporary server has no UI to link to
    assert "adopting 1 ProtectWorker actors started ahead of the flow" in output
    assert "results: protected 2" in output
    # The actor's own INFO records reach the console through Ray, prefixed with the actor.
    assert "INFO flows.shard: protect shard 0 of photos: 2 images" in output
    registry = pq.read_table(tmp_path / "out" / "registry")
    assert sorted(registry.column("image_id").to_pylist()) == ["chelsea.jpg", "rocket.jpg"]
