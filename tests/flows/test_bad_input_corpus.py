"""The bad-input corpus through the real protect and audit flows (Prefect over Ray actors), on local folders.

The corpus (tests/fixtures/bad_inputs, described in its README.md) is copied
into a temporary folder, with two folders named like images added at run
time. The flows run once per module. Each test then checks one property of
the results, or reruns a sweep after damaging a copy of its outputs.
"""

import datetime
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from flows import api, paths
from flows.cli import main as hcr_main
from flows.results import read_verdicts
from schemas.config import StorageOptions

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"
NOT_INPUTS = ("README.md", "make_corpus.py")
SWEEP = "corpus-sweep"
OPTIONS = StorageOptions()
RUN = {"num_actors": 1, "batch_size": 8, "shard_size": 16, "progress": False}

# image_id -> text the `error` message must contain, besides the image id.
ERRORS = {
    "empty.jpg": "the file is empty (0 bytes)",
    "random-bytes.jpg": "not a supported image format",
    "truncated.jpg": "corrupt or truncated",
    "truncated.png": "corrupt or truncated",
    "header-only.jpg": "not a supported image format",
    "bomb-10-gigapixel.png": "decompression bomb",
    "bomb-81-megapixel.png": "9000 x 9000 = 81000000 pixels exceeds the limit",
    "zero-width.png": "not a supported image format",
    "text-as.png": "not a supported image format",
    "postscript-as.jpg": "not a supported image format",
    "drawing.svg": "unsupported image format SVG",
    "garbage.zip": "cannot read zip container",
    "traversal.tar/../hcr-corpus-escape.jpg": "path traversal",
    "traversal.tar/img/../../hcr-corpus-escape-nested.jpg": "path traversal",
    "traversal.tar/..\\hcr-corpus-backslash.jpg": "path traversal",
    "traversal.tar//tmp/hcr-corpus-absolute.jpg": "absolute path",
    "traversal.tar/link-outside.jpg": "symbolic link",
    "traversal.zip/../hcr-corpus-zip-escape.jpg": "path traversal",
    "traversal.zip//tmp/hcr-corpus-zip-absolute.jpg": "absolute path",
    "traversal.zip/link-outside.jpg": "symbolic link",
}
# image_id -> (note the row must contain or None, (width, height) or None).
AUDITED = {
    "animated.gif": ("first frame of 2 used", (64, 48)),
    "multipage.tif": ("first frame of 3 used", (64, 48)),
    "cmyk.jpg": ("CMYK without an ICC profile", None),
    "grey-16-bit.png": ("I;16 input reduced to 8 bits", None),
    "grey-float.tif": ("32-bit float input reduced to 8 bits", None),
    "exif-rotated.jpg": ("EXIF orientation 6 applied", (48, 64)),
    "grey.jpg": (None, None),
    "palette.png": (None, None),
    "rgba.png": (None, None),
    "la.png": (None, None),
    "one-pixel.png": (None, (1, 1)),
    "wide-2000x8.png": (None, (2000, 8)),
    "tall-8x2000.png": (None, (8, 2000)),
    "photo.webp": (None, None),
    "photo.bmp": (None, None),
    "photo.tif": (None, None),
    "jpeg-named.png": (None, None),
    "with space.jpg": (None, None),
    "ünïcödé 写真.png": (None, None),
    "traversal.tar/img/inside.jpg": (None, (64, 48)),
    "traversal.zip/inside.png": (None, (64, 48)),
    "folder-named.jpg/inside.png": (None, (64, 48)),
}
# Files a traversal member would create if a reader extracted it.
ESCAPE_NAMES = (
    "hcr-corpus-escape.jpg", "hcr-corpus-escape-nested.jpg", "hcr-corpus-backslash.jpg", "hcr-corpus-absolute.jpg",
    "hcr-corpus-zip-escape.jpg", "hcr-corpus-zip-absolute.jpg",
)

pytestmark = pytest.mark.timeout(600)


def _snapshot(root: Path) -> dict[str, str]:
    """Map every file and folder under root (relative path) to its SHA-256, or "dir"."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return found


def _escape_locations(root: Path) -> list[Path]:
    """Places where a traversal or absolute member would land if it were extracted."""
    folders = [root, root.parent, Path("/tmp"), Path.cwd(), Path.cwd().parent]
    return [folder / name for folder in folders for name in ESCAPE_NAMES]


def _copy_corpus(source: Path) -> None:
    source.mkdir(parents=True)
    for path in CORPUS.iterdir():
        if path.name not in NOT_INPUTS:
            shutil.copy(path, source / path.name)
    # Git keeps no empty folders, so the folders named like images are made here.
    (source / "empty-folder.png").mkdir()
    (source / "folder-named.jpg").mkdir()
    shutil.copy(CORPUS / "palette.png", source / "folder-named.jpg" / "inside.png")


@pytest.fixture(scope="module")
def corpus_run(ray_local, prefect_harness, tmp_path_factory):
    """Protect and audit the corpus once; return the summaries, the rows and the tree before and after."""
    root = tmp_path_factory.mktemp("corpus-run")
    source = root / "src" / "corpus"
    _copy_corpus(source)
    escapes_before = [path for path in _escape_locations(root) if path.exists()]
    before = _snapshot(root)

    protect = api.protect(str(source), str(root / "prot"), **RUN)
    audit = api.audit(str(source), str(root / "audit"), registry=str(root / "prot"), sweep_id=SWEEP, **RUN)

    rows = read_verdicts(str(root / "audit"), OPTIONS, SWEEP).to_pylist()
    return {
        "root": root, "source": source, "protect": protect, "audit": audit, "rows": rows,
        "by_id": {row["image_id"]: row for row in rows},
        "before": before, "after": _snapshot(root), "escapes_before": escapes_before,
    }


def test_corpus_has_enough_cases():
    inputs = [path for path in CORPUS.iterdir() if path.name not in NOT_INPUTS]
    assert len(inputs) >= 25
    assert sum(path.stat().st_size for path in inputs) < 300_000


def test_one_row_per_input(corpus_run):
    ids = [row["image_id"] for row in corpus_run["rows"]]
    assert len(ids) == len(set(ids)), "an image has several rows"
    assert sorted(ids) == sorted(ERRORS | AUDITED)
    assert corpus_run["audit"].images == len(ERRORS) + len(AUDITED)
    assert corpus_run["audit"].ok, corpus_run["audit"].format()


def test_folders_are_not_inputs(corpus_run):
    assert "empty-folder.png" not in corpus_run["by_id"]
    assert "folder-named.jpg" not in corpus_run["by_id"]


@pytest.mark.parametrize("image_id, reason", sorted(ERRORS.items()))
def test_bad_input_error_row(corpus_run, image_id, reason):
    row = corpus_run["by_id"][image_id]
    assert row["verdict"] == "error"
    assert image_id in row["error"]
    assert reason in row["error"]
    assert row["width"] is None
    assert row["payload_valid"] is False


@pytest.mark.parametrize("image_id, expected", sorted(AUDITED.items()))
def test_odd_image_audited(corpus_run, image_id, expected):
    note, size = expected
    row = corpus_run["by_id"][image_id]
    assert row["verdict"] in ("authentic", "tampered", "forged", "unmarked"), row
    assert row["error"] is None
    if note:
        assert note in (row["notes"] or "")
    if size:
        assert (row["width"], row["height"]) == size


def test_audit_counts(corpus_run):
    counts = corpus_run["audit"].counts
    assert counts.get("error") == len(ERRORS)
    assert sum(counts.values()) == len(ERRORS) + len(AUDITED)


def test_protect_records_every_bad_input(corpus_run):
    summary = corpus_run["protect"]
    assert summary.counts == {"protected": len(AUDITED), "error": len(ERRORS)}
    report = api.verify(str(corpus_run["root"] / "prot"), archive="corpus")
    assert report.ok, report.format()


def test_protected_copies_mirror_inputs(corpus_run):
    protected = corpus_run["root"] / "prot" / "protected" / "corpus"
    written = {str(path.relative_to(protected)) for path in protected.rglob("*") if path.is_file()}
    assert written == set(AUDITED)


def test_nothing_written_outside_outputs(corpus_run):
    before, after = corpus_run["before"], corpus_run["after"]
    outputs = ("prot", "audit")
    changed = sorted(path for path in after if before.get(path) != after[path] and path.split(os.sep)[0] not in outputs)
    assert changed == [], "files written outside the output folders"
    assert all(path in after for path in before), "files removed"


def test_no_traversal_member_extracted(corpus_run):
    assert corpus_run["escapes_before"] == [], "leftovers from another run; remove them first"
    assert [path for path in _escape_locations(corpus_run["root"]) if path.exists()] == []
    for name in ESCAPE_NAMES:
        assert list(corpus_run["root"].rglob(name)) == []


def _copy_audit(corpus_run, tmp_path) -> Path:
    dest = tmp_path / "audit"
    shutil.copytree(corpus_run["root"] / "audit", dest)
    return dest


def _shard_part(dest: Path, corpus_run, shard: int) -> Path:
    date = corpus_run["rows"][0]["sweep_date"]
    return Path(paths.verdict_part(str(dest), date, "corpus", SWEEP, shard))


def test_partial_part_redone_on_rerun(corpus_run, tmp_path, capsys):
    dest = _copy_audit(corpus_run, tmp_path)
    part = _shard_part(dest, corpus_run, 1)
    marker = Path(paths.done_marker(paths.sweep_state(str(dest), SWEEP), 1))
    # A crash on a store without atomic writes: half a part, no marker, and a temporary file left over.
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    marker.unlink()
    (part.parent / f".{part.name}.0123.tmp").write_bytes(b"PAR1 half written")

    report = api.verify(str(dest), sweep_id=SWEEP)
    assert report.unfinished_shards == [1]
    assert len(report.unreadable_parts) == 1
    assert str(part) in report.unreadable_parts[0]

    rerun = api.audit(str(corpus_run["source"]), str(dest), registry=str(corpus_run["root"] / "prot"), sweep_id=SWEEP, **RUN)
    assert rerun.shards_run == 1
    assert rerun.shards_skipped == rerun.shards_total - 1
    ids = read_verdicts(str(dest), OPTIONS, SWEEP).column("image_id").to_pylist()
    assert sorted(ids) == sorted(ERRORS | AUDITED)
    assert hcr_main(["verify", str(dest), "--sweep-id", SWEEP]) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_finds_lost_and_copied_parts(corpus_run, tmp_path, capsys):
    import pyarrow.parquet as pq

    dest = _copy_audit(corpus_run, tmp_path)
    lost = _shard_part(dest, corpus_run, 0)
    lost_ids = sorted(pq.read_table(lost).column("image_id").to_pylist())
    lost.unlink()
    copied = _shard_part(dest, corpus_run, 1)
    copied_ids = sorted(pq.read_table(copied).column("image_id").to_pylist())
    shutil.copy(copied, _shard_part(dest, corpus_run, 99))

    report = api.verify(str(dest), sweep_id=SWEEP)
    assert report.missing == lost_ids
    assert report.duplicates == copied_ids
    assert report.unfinished_shards == []
    assert hcr_main(["verify", str(dest), "--sweep-id", SWEEP]) == 1
    out = capsys.readouterr().out
    assert f"missing ({len(lost_ids)})" in out
    assert f"duplicates ({len(copied_ids)})" in out


def test_permanent_write_error_fails_shard(ray_local, prefect_harness, tmp_path):
    source = tmp_path / "small"
    source.mkdir()
    for name in ("photo.webp", "grey.jpg"):
        shutil.copy(CORPUS / name, source / name)
    dest = tmp_path / "audit"
    today = datetime.datetime.now(datetime.UTC).date()
    # A folder where shard 0's part must go: the rename onto it fails every time.
    blocked = Path(paths.verdict_part(str(dest), today, "small", "blocked", 0))
    blocked.mkdir(parents=True)
    run = {**RUN, "shard_size": 1}

    summary = api.audit(str(source), str(dest), sweep_id="blocked", **run)
    assert not summary.ok
    assert list(summary.failed_shards) == [0]
    assert str(blocked) in summary.failed_shards[0]
    assert sum(summary.counts.values()) == 1
    assert "FAILED shard 0" in summary.format()
    report = api.verify(str(dest), sweep_id="blocked")
    assert report.unfinished_shards == [0]
    assert len(report.missing) == 1
