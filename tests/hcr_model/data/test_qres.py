import struct
from pathlib import Path

import pytest

from hcr_model.data.build import default_cache
from hcr_model.data.qres import QresBundle, QresError

FILES = {
    "gcompris/src/a/one.txt": (b"plain bytes", False),
    "gcompris/src/a/two.bin": (bytes(range(256)) * 40, True),
    "gcompris/src/b/deep/three.webp": (b"RIFF....WEBP" + b"x" * 500, True),
    "top.qml": (b"import QtQuick 2.0\n", False),
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_bundle_lists_all_paths(qres_writer, version):
    bundle = QresBundle(qres_writer(FILES, version=version))

    assert bundle.version == version
    assert bundle.paths() == sorted(FILES)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_bundle_reads_plain_and_zlib(qres_writer, version):
    bundle = QresBundle(qres_writer(FILES, version=version))

    for path, (data, _) in FILES.items():
        assert bundle.read(path) == data


def test_open_reads_file(qres_writer, tmp_path):
    file = tmp_path / "small.rcc"
    file.write_bytes(qres_writer(FILES))

    bundle = QresBundle.open(file)

    assert "top.qml" in bundle
    assert list(bundle) == sorted(FILES)


def test_missing_member_raises_keyerror(qres_writer):
    bundle = QresBundle(qres_writer(FILES))

    with pytest.raises(KeyError, match="no/such.webp"):
        bundle.read("no/such.webp")


def test_bad_magic_rejected():
    with pytest.raises(QresError, match="missing 'qres' magic"):
        QresBundle(b"RIFF" + bytes(40))


def test_unsupported_version_rejected(qres_writer):
    data = bytearray(qres_writer(FILES))
    data[4:8] = struct.pack(">I", 9)

    with pytest.raises(QresError, match="version 9"):
        QresBundle(bytes(data))


def test_corrupt_zlib_rejected(qres_writer):
    data = bytearray(qres_writer({"a.bin": (b"z" * 1000, True)}))
    # The only payload starts at the data offset (24): u32 size, u32
    # uncompressed size, then the zlib stream, whose header is bytes 32-33.
    data[32:36] = b"\xff\xff\xff\xff"

    with pytest.raises(QresError, match="corrupt zlib"):
        QresBundle(bytes(data)).read("a.bin")


def test_truncated_bundle_rejected(qres_writer):
    data = qres_writer(FILES)

    with pytest.raises(QresError):
        QresBundle(data[: len(data) - 30])


GCOMPRIS_BUNDLE = default_cache() / "data/debs/gcompris-qt-data/usr/share/gcompris-qt/rcc/categorization.rcc"


@pytest.mark.skipif(not GCOMPRIS_BUNDLE.is_file(), reason="needs `hcr data build` (gcompris-qt-data unpacked)")
def test_real_gcompris_bundle_has_webp():
    bundle = QresBundle.open(Path(GCOMPRIS_BUNDLE))
    member = "gcompris/src/activities/categorization/resource/images/fishes/fish1.webp"

    data = bundle.read(member)

    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
