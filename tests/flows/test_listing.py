"""Archive listing and reading: loose files, tar and zip members, hostile members."""

import shutil

import fsspec
import pytest

from flows.listing import list_archive, unsafe_name_reason
from flows.reader import FailedImage, LoadedImage, iter_images
from flows.shard import ShardSpec
from schemas.config import LimitOptions, StorageOptions

OPTIONS = StorageOptions()


@pytest.fixture
def archive(hostile_archive):
    return hostile_archive


def _spec(source: str, entries, limits: LimitOptions | None = None) -> ShardSpec:
    import datetime

    return ShardSpec(
        kind="audit", run_id="t", archive="archive", sweep_date=datetime.date(2025, 1, 1), shard=0, entries=entries,
        source=source, dest="memory://unused", part_url="memory://unused/p", done_url="memory://unused/d",
        limits=limits or LimitOptions(),
    )


def test_listing_image_ids(archive, expected_ids):
    entries = list_archive(str(archive), OPTIONS)
    ids = [entry.image_id for entry in entries]
    assert ids == sorted(expected_ids)
    for entry in entries:
        assert (entry.error is not None) == expected_ids[entry.image_id], entry


def test_listing_source_uris(archive):
    entries = {entry.image_id: entry for entry in list_archive(str(archive), OPTIONS)}
    root = f"file://{archive}"
    assert entries["2024/a.jpg"].source_uri == f"{root}/2024/a.jpg"
    assert entries["shards/00001.tar/img/a.jpg"].source_uri == f"tar://img/a.jpg::{root}/shards/00001.tar"
    # The member name is kept exactly as stored, `./` included.
    assert entries["shards/00001.tar/img/b.png"].source_uri == f"tar://./img/b.png::{root}/shards/00001.tar"
    assert entries["pack.zip/nested/d.png"].source_uri == f"zip://nested/d.png::{root}/pack.zip"


def test_listing_chained_uri_opens_member(archive):
    entries = {entry.image_id: entry for entry in list_archive(str(archive), OPTIONS)}
    with fsspec.open(entries["pack.zip/c.jpg"].source_uri, "rb") as handle:
        assert handle.read() == (archive / "2024" / "a.jpg").read_bytes()


def test_listing_rejection_reasons(archive):
    entries = {entry.image_id: entry for entry in list_archive(str(archive), OPTIONS)}
    assert "path traversal" in entries["shards/00001.tar/../evil.jpg"].error
    assert "absolute path" in entries["shards/00001.tar//abs.jpg"].error
    assert "symbolic link" in entries["shards/00001.tar/link.jpg"].error
    assert "hard link" in entries["shards/00001.tar/hard.jpg"].error
    assert "symbolic link" in entries["pack.zip/zlink.jpg"].error
    assert "cannot read tar container" in entries["shards/bad.tar"].error


@pytest.mark.parametrize(
    "name, unsafe",
    [("a/b.jpg", False), ("./a.jpg", False), ("../a.jpg", True), ("a/../../b.jpg", True), ("/etc/x.jpg", True),
     ("C:/x.jpg", True), ("..\\x.jpg", True), ("a\x00.jpg", True), ("a..b.jpg", False)],
)
def test_unsafe_member_names(name, unsafe):
    assert (unsafe_name_reason(name) is not None) == unsafe


def test_reader_one_item_per_entry(archive, tmp_path, expected_ids):
    entries = list_archive(str(archive), OPTIONS)
    items = list(iter_images(_spec(str(archive), entries)))
    assert sorted(item.entry.image_id for item in items) == sorted(expected_ids)

    loaded = {item.entry.image_id for item in items if isinstance(item, LoadedImage)}
    assert loaded == {"2024/a.jpg", "2024/a.png", "pack.zip/c.jpg", "pack.zip/nested/d.png",
                      "shards/00001.tar/img/a.jpg", "shards/00001.tar/img/b.png"}
    failed = {item.entry.image_id: item.error for item in items if isinstance(item, FailedImage)}
    assert "broken.jpg" in failed["broken.jpg"]
    assert "truncated" in failed["broken.jpg"]
    # Rejected members are never extracted anywhere.
    assert not (tmp_path / "evil.jpg").exists()
    assert not (archive / "shards" / "evil.jpg").exists()


def test_reader_hashes_bytes_read(archive):
    import hashlib

    entries = [entry for entry in list_archive(str(archive), OPTIONS) if entry.image_id == "shards/00001.tar/img/a.jpg"]
    (item,) = list(iter_images(_spec(str(archive), entries)))
    assert item.sha256 == hashlib.sha256((archive / "2024" / "a.jpg").read_bytes()).hexdigest()
    assert item.image.rgb.shape == (300, 451, 3)


def test_reader_size_limit(tmp_path):
    import zipfile

    archive = tmp_path / "big"
    archive.mkdir()
    (archive / "big.jpg").write_bytes(b"\xff" * (3 * 2**19))  # 1.5 MiB
    with zipfile.ZipFile(archive / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.png", b"\x00" * (3 * 2**19))  # compresses to a few KiB
    entries = list_archive(str(archive), OPTIONS)
    items = list(iter_images(_spec(str(archive), entries, LimitOptions(max_file_mb=1))))

    assert [item.entry.image_id for item in items] == ["big.jpg", "bomb.zip/zeros.png"]
    for item in items:
        assert isinstance(item, FailedImage)
        assert "above the limit of 1048576 bytes" in item.error


def test_listing_memory_filesystem(archive, expected_ids):
    fs = fsspec.filesystem("memory")
    for path in archive.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"/listing-test/archive/{path.relative_to(archive)}", path.read_bytes())
    try:
        entries = list_archive("memory://listing-test/archive", OPTIONS)
        assert [entry.image_id for entry in entries] == sorted(expected_ids)
        tar_entry = next(entry for entry in entries if entry.image_id == "shards/00001.tar/img/a.jpg")
        assert tar_entry.source_uri == "tar://img/a.jpg::memory:///listing-test/archive/shards/00001.tar"
        items = list(iter_images(_spec("memory://listing-test/archive", entries)))
        assert sum(isinstance(item, LoadedImage) for item in items) == 6
    finally:
        fs.rm("/listing-test", recursive=True)


def test_listing_rejects_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        list_archive(str(tmp_path / "absent"), OPTIONS)


def test_listing_duplicate_member_kept_once(tmp_path, photos_dir, tar_writer):
    import tarfile

    archive = tmp_path / "dups"
    archive.mkdir()
    photo = (photos_dir / "chelsea.jpg").read_bytes()
    with tarfile.open(archive / "x.tar", "w") as handle:
        tar_writer(handle, "a.jpg", photo)
        tar_writer(handle, "a.jpg", b"second copy")
    shutil.copy(photos_dir / "rocket.jpg", archive / "r.jpg")
    ids = [entry.image_id for entry in list_archive(str(archive), OPTIONS)]
    assert ids == ["r.jpg", "x.tar/a.jpg"]


def test_unsupported_formats_listed_as_errors(tmp_path, tar_writer):
    import tarfile
    import zipfile

    archive = tmp_path / "formats"
    archive.mkdir()
    (archive / "logo.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    (archive / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (archive / "notes.txt").write_text("not an image: skipped")
    with tarfile.open(archive / "x.tar", "w") as handle:
        tar_writer(handle, "./art/drawing.svg", b"<svg/>")
        tar_writer(handle, "readme.txt", b"not an image: skipped")
    with zipfile.ZipFile(archive / "y.zip", "w") as handle:
        handle.writestr("layers.psd", b"8BPS")

    entries = {entry.image_id: entry for entry in list_archive(str(archive), OPTIONS)}
    assert sorted(entries) == ["logo.svg", "phone.HEIC", "x.tar/art/drawing.svg", "y.zip/layers.psd"]
    assert "unsupported image format SVG (.svg)" in entries["logo.svg"].error
    assert "unsupported image format HEIC (.heic)" in entries["phone.HEIC"].error
    assert "unsupported image format SVG (.svg)" in entries["x.tar/art/drawing.svg"].error
    assert "unsupported image format PSD (.psd)" in entries["y.zip/layers.psd"].error

    items = list(iter_images(_spec(str(archive), list(entries.values()))))
    assert all(isinstance(item, FailedImage) for item in items)
    assert all(item.entry.image_id in item.error for item in items)


def test_symlink_outside_folder_is_rejected(tmp_path, photos_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(photos_dir / "chelsea.jpg", outside / "secret.jpg")
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(photos_dir / "coffee.jpg", archive / "coffee.jpg")
    (archive / "inside.jpg").symlink_to(archive / "coffee.jpg")
    (archive / "escape.jpg").symlink_to(outside / "secret.jpg")

    entries = {entry.image_id: entry for entry in list_archive(str(archive), OPTIONS)}
    assert set(entries) == {"coffee.jpg", "inside.jpg", "escape.jpg"}
    assert entries["inside.jpg"].error is None
    assert "outside the archive" in entries["escape.jpg"].error

    items = list(iter_images(_spec(str(archive), [entries["escape.jpg"]])))
    assert isinstance(items[0], FailedImage)
    assert "outside the archive" in items[0].error
