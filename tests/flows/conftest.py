"""Fixtures of the pipeline tests: test archives with loose photos, tars and zips with hostile members."""

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest


def add_tar_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_tar_link(archive: tarfile.TarFile, name: str, target: str, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def build_tar(path: Path, photo: bytes, png: bytes) -> None:
    """A tar with two good images, traversal, absolute, link and non-image members."""
    with tarfile.open(path, "w") as archive:
        folder = tarfile.TarInfo("img")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        add_tar_file(archive, "img/a.jpg", photo)
        add_tar_file(archive, "./img/b.png", png)
        add_tar_file(archive, "../evil.jpg", photo)
        add_tar_file(archive, "/abs.jpg", photo)
        add_tar_link(archive, "link.jpg", "/etc/passwd")
        add_tar_link(archive, "hard.jpg", "img/a.jpg", hard=True)
        add_tar_file(archive, "readme.txt", b"not an image")


def build_zip(path: Path, photo: bytes, png: bytes) -> None:
    """A zip with two good images, a traversal member and a symlink member."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("c.jpg", photo)
        archive.writestr("nested/d.png", png)
        archive.writestr("../zip-evil.jpg", photo)
        link = zipfile.ZipInfo("zlink.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("notes.md", "not an image")


def build_archive(root: Path, photos_dir: Path) -> Path:
    """Create `root/archive` with loose files, a tar, a zip and an unreadable tar; return it."""
    photo = (photos_dir / "chelsea.jpg").read_bytes()
    png = (photos_dir / "coffee.png").read_bytes()
    archive = root / "archive"
    (archive / "2024").mkdir(parents=True)
    (archive / "shards").mkdir()
    (archive / ".hidden").mkdir()
    (archive / "2024" / "a.jpg").write_bytes(photo)
    (archive / "2024" / "a.png").write_bytes(png)
    (archive / "2024" / "notes.txt").write_text("skipped")
    (archive / ".hidden" / "x.jpg").write_bytes(photo)
    (archive / "broken.jpg").write_bytes(photo[:2000])
    build_tar(archive / "shards" / "00001.tar", photo, png)
    build_zip(archive / "pack.zip", photo, png)
    (archive / "shards" / "bad.tar").write_bytes(b"this is not a tar file" * 40)
    return archive


# image_id -> True when build_archive's entry is rejected
EXPECTED_IDS = {
    "2024/a.jpg": False,
    "2024/a.png": False,
    "broken.jpg": False,
    "pack.zip/c.jpg": False,
    "pack.zip/nested/d.png": False,
    "pack.zip/../zip-evil.jpg": True,
    "pack.zip/zlink.jpg": True,
    "shards/00001.tar/img/a.jpg": False,
    "shards/00001.tar/img/b.png": False,
    "shards/00001.tar/../evil.jpg": True,
    "shards/00001.tar//abs.jpg": True,
    "shards/00001.tar/link.jpg": True,
    "shards/00001.tar/hard.jpg": True,
    "shards/bad.tar": True,
}


@pytest.fixture
def hostile_archive(tmp_path, photos_dir) -> Path:
    """The archive of build_archive; its image ids and rejections are EXPECTED_IDS."""
    return build_archive(tmp_path, photos_dir)


@pytest.fixture
def expected_ids() -> dict[str, bool]:
    """image_id -> True when the entry is rejected, for `hostile_archive`."""
    return dict(EXPECTED_IDS)


@pytest.fixture
def tar_writer():
    """`add_tar_file(archive, name, data)`, for tests that build their own tars."""
    return add_tar_file
