import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from hcr_model.data import build
from hcr_model.data.build import BuildError, build_photos, download_package, main, normalize_photo

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "photos"
GCOMPRIS_MEMBER = "gcompris/src/activities/x/resource/chelsea.webp"


def _jpeg(size, color=(200, 30, 30), exif=None) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    if exif is not None:
        image.save(buffer, format="JPEG", exif=exif)
    else:
        image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_normalize_applies_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = _jpeg((40, 20), exif=exif)

    image = normalize_photo(data, "rotated")

    assert image.size == (20, 40)
    assert image.mode == "RGB"


def test_normalize_shrinks_short_side_to_512():
    image = normalize_photo(_jpeg((1200, 800)), "large")

    assert image.size == (768, 512)


def test_normalize_keeps_small_photo_size():
    image = normalize_photo((FIXTURES / "coffee.png").read_bytes(), "coffee")

    assert image.size == (192, 128)


def test_normalize_flattens_alpha_on_white():
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buffer, format="PNG")

    image = normalize_photo(buffer.getvalue(), "transparent")

    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_normalize_rejects_non_image():
    with pytest.raises(BuildError, match="broken: cannot decode"):
        normalize_photo(b"not an image", "broken")


def _fake_debs(tmp_path: Path, qres_writer) -> tuple[Path, list[dict[str, str]]]:
    """Lay out two unpacked packages: one loose JPEG and one .rcc member."""
    debs = tmp_path / "data" / "debs"
    loose = (FIXTURES / "rocket.jpg").read_bytes()
    member = (FIXTURES / "chelsea.jpg").read_bytes()
    (debs / "scratch" / "usr/share").mkdir(parents=True)
    (debs / "scratch" / "usr/share/rocket.jpg").write_bytes(loose)
    (debs / "gcompris-qt-data" / "rcc").mkdir(parents=True)
    (debs / "gcompris-qt-data" / "rcc/x.rcc").write_bytes(qres_writer({GCOMPRIS_MEMBER: (member, True)}))

    def row(photo_id, package, path, member_path, data):
        return {
            "photo_id": photo_id,
            "package": package,
            "path": path,
            "member": member_path,
            "sha256": hashlib.sha256(data).hexdigest(),
            "license": "CC0-1.0",
            "category": "test",
            "split": "train",
        }

    rows = [
        row("rocket", "scratch", "usr/share/rocket.jpg", "", loose),
        row("chelsea", "gcompris-qt-data", "rcc/x.rcc", GCOMPRIS_MEMBER, member),
    ]
    return debs, rows


def test_build_photos_writes_and_skips(tmp_path, qres_writer):
    debs, rows = _fake_debs(tmp_path, qres_writer)
    photos = tmp_path / "data" / "photos"

    first = build_photos(rows, debs, photos)
    second = build_photos(rows, debs, photos)

    assert first["written"] == 2
    assert second["skipped"] == 2
    with Image.open(photos / "chelsea.jpg") as image:
        assert image.format == "JPEG"
        assert image.size == (451, 300)
    index = json.loads((photos / "index.json").read_text())
    assert index == {row["photo_id"]: row["sha256"] for row in rows}


def test_build_photos_redoes_changed_pin(tmp_path, qres_writer):
    debs, rows = _fake_debs(tmp_path, qres_writer)
    photos = tmp_path / "data" / "photos"
    build_photos(rows, debs, photos)
    index = json.loads((photos / "index.json").read_text())
    index["rocket"] = "0" * 64
    (photos / "index.json").write_text(json.dumps(index))

    counts = build_photos(rows, debs, photos)

    assert counts["written"] == 1
    assert counts["skipped"] == 1


def test_build_photos_sha_mismatch_names_file(tmp_path, qres_writer):
    debs, rows = _fake_debs(tmp_path, qres_writer)
    rows[1]["sha256"] = "f" * 64

    with pytest.raises(BuildError, match=r"rcc/x\.rcc .*chelsea\.webp has SHA-256"):
        build_photos(rows, debs, tmp_path / "photos")


def test_build_photos_missing_file_names_it(tmp_path, qres_writer):
    debs, rows = _fake_debs(tmp_path, qres_writer)
    (debs / "scratch" / "usr/share/rocket.jpg").unlink()

    with pytest.raises(BuildError, match=r"scratch: usr/share/rocket\.jpg not found"):
        build_photos(rows, debs, tmp_path / "photos")


def test_build_photos_missing_member_names_it(tmp_path, qres_writer):
    debs, rows = _fake_debs(tmp_path, qres_writer)
    rows[1]["member"] = "gcompris/other.webp"

    with pytest.raises(BuildError, match="gcompris/other.webp"):
        build_photos(rows, debs, tmp_path / "photos")


def test_download_reuses_cached_deb(tmp_path, monkeypatch):
    deb = tmp_path / "scratch_1.4.0.6~dfsg1-6.1_all.deb"
    deb.write_bytes(b"!<arch>\n")

    def no_subprocess(*args, **kwargs):
        raise AssertionError("apt-get must not run when the .deb is cached")

    monkeypatch.setattr(build, "_run", no_subprocess)

    assert download_package("scratch", tmp_path) == deb


def test_main_builds_from_cached_packages(tmp_path, qres_writer, capsys):
    # Every package is already "downloaded" and "unpacked", so no apt-get or
    # dpkg runs; the custom manifest points at the fake package files.
    cache = tmp_path
    debs, rows = _fake_debs(cache, qres_writer)
    (cache / "data" / "apt").mkdir(parents=True)
    for package in build.PACKAGES:
        deb_name = build._deb_name(package, build.PACKAGE_VERSIONS[package])
        (cache / "data" / "apt" / f"{deb_name}all.deb").write_bytes(b"!<arch>\n")
        (debs / package).mkdir(parents=True, exist_ok=True)
        (debs / package / build.UNPACKED_MARKER).write_text("fake\n")
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    status = main(["--cache", str(cache), "--manifest", str(manifest)])

    assert status == 0
    assert "2 photos" in capsys.readouterr().out
    assert (cache / "data" / "photos" / "rocket.jpg").is_file()


def test_main_reports_missing_manifest(tmp_path, capsys):
    cache = tmp_path
    (cache / "data" / "apt").mkdir(parents=True)
    for package in build.PACKAGES:
        deb_name = build._deb_name(package, build.PACKAGE_VERSIONS[package])
        (cache / "data" / "apt" / f"{deb_name}all.deb").write_bytes(b"!<arch>\n")
        (cache / "data" / "debs" / package).mkdir(parents=True)
        (cache / "data" / "debs" / package / build.UNPACKED_MARKER).write_text("fake\n")

    status = main(["--cache", str(cache), "--manifest", str(tmp_path / "absent.csv")])

    assert status == 1
    assert "absent.csv not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("update_status", "expected"),
    [
        (0, r"nosuchpkg: apt-get download nosuchpkg=1:2.0 failed(.|\n)*copy nosuchpkg_1%3a2\.0_\*\.deb into"),
        (100, r"nosuchpkg: apt-get update failed(.|\n)*rerun `hcr data build`"),
    ],
)
def test_download_failure_names_package_and_fix(tmp_path, monkeypatch, update_status, expected):
    calls = []

    def fake_apt(command, cwd):
        calls.append(command)
        status = update_status if command == ["apt-get", "update"] else 100
        return build.subprocess.CompletedProcess(command, status, "", "E: Unable to locate package nosuchpkg")

    monkeypatch.setattr(build, "_run", fake_apt)
    monkeypatch.setattr(build.shutil, "which", lambda name: f"/usr/bin/{name}")

    with pytest.raises(BuildError, match=expected):
        download_package("nosuchpkg", tmp_path, version="1:2.0")

    assert calls[:2] == [["apt-get", "download", "nosuchpkg=1:2.0"], ["apt-get", "update"]]
