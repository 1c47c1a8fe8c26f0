"""Build the benchmark photo cache from Debian packages (``hcr data build``).

Steps, each skipped when its output already exists:

1. ``apt-get download`` each package into ``<cache>/data/apt/`` (after an
   ``apt-get update`` when the package lists are missing or stale);
2. ``dpkg -x`` each ``.deb`` into ``<cache>/data/debs/<package>/`` (nothing
   is installed system-wide);
3. for every row of the pinned ``manifest.csv``, read the original bytes (a
   file, or a member of a gcompris ``.rcc`` bundle) and check their SHA-256.
   Then write a normalized copy to ``<cache>/data/photos/<photo_id>.jpg``:
   RGB, EXIF orientation applied, shorter side at most 512 px, JPEG
   quality 95.

``--refresh-manifest`` regenerates ``manifest.csv`` from the unpacked
packages instead (maintainers only; the committed file is the pinned truth).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

from hcr_model.data.qres import QresBundle, QresError

log = logging.getLogger(__name__)

# Debian package -> pinned version. The manifest pins the SHA-256 of files
# from exactly these versions (Debian 12 "bookworm"), so the build requests them.
PACKAGE_VERSIONS = {
    "mate-backgrounds": "1.26.0-1",
    "lxqt-themes": "1.2.0-1",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "gcompris-qt-data": "3.1-2",
    "scratch": "1.4.0.6~dfsg1-6.1",
    "tuxpaint-data": "1:0.9.28-sdl2-1",
    "tuxtype-data": "1.8.3-5.1",
    "kalzium-data": "4:22.12.3-1",
}
PACKAGES = list(PACKAGE_VERSIONS)

MANIFEST_PATH = Path(__file__).with_name("manifest.csv")
MAX_SHORT_SIDE = 512  # px; the shorter side of each cached copy
JPEG_QUALITY = 95
UNPACKED_MARKER = ".hcr-unpacked"  # written last, so a half-unpacked folder is redone
INDEX_NAME = "index.json"  # photo_id -> sha256 of the original each cached copy came from


class BuildError(RuntimeError):
    """Raised when a build step fails; the message names the package or file and the fix."""


def default_cache() -> Path:
    """Return ``$HCR_CACHE``, or ``~/.cache/hcr`` when it is unset."""
    return Path(os.environ.get("HCR_CACHE") or Path.home() / ".cache" / "hcr")


def read_manifest(path: Path = MANIFEST_PATH) -> list[dict[str, str]]:
    """Return the manifest rows as dicts keyed by the CSV header."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---- packages -------------------------------------------------------------------


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    log.debug("running %s in %s", command, cwd)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _deb_name(package: str, version: str) -> str:
    # apt-get download names files <package>_<version>_<arch>.deb with the
    # epoch colon URL-encoded.
    return f"{package}_{version.replace(':', '%3a')}_"


def _find_deb(apt_dir: Path, package: str, version: str) -> Path | None:
    debs = sorted(apt_dir.glob(f"{_deb_name(package, version)}*.deb"))
    return debs[-1] if debs else None


def download_package(package: str, apt_dir: Path, version: str | None = None) -> Path:
    """Return the cached ``.deb`` of ``package`` at ``version`` (default: the pinned one), downloading it when absent."""
    version = version or PACKAGE_VERSIONS[package]
    apt_dir.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(apt_dir, package, version)
    if deb is not None:
        return deb
    if shutil.which("apt-get") is None:
        raise BuildError(
            f"{package}: apt-get not found. Build on a Debian or Ubuntu machine, "
            f"or copy {_deb_name(package, version)}*.deb into {apt_dir}"
        )

    request = f"{package}={version}"
    result = _run(["apt-get", "download", request], apt_dir)
    if result.returncode != 0:
        # A fresh machine has no package lists, and old lists name versions
        # the mirror no longer has: refresh them once and retry.
        log.info("apt-get download %s failed (%s); running apt-get update", request, result.stderr.strip()[-200:])
        update = _run(["apt-get", "update"], apt_dir)
        if update.returncode != 0:
            raise BuildError(
                f"{package}: apt-get update failed: {update.stderr.strip()[-500:]}\n"
                "Run `apt-get update` as root, then rerun `hcr data build`."
            )
        result = _run(["apt-get", "download", request], apt_dir)
    deb = _find_deb(apt_dir, package, version)
    if result.returncode != 0 or deb is None:
        raise BuildError(
            f"{package}: apt-get download {request} failed: {result.stderr.strip()[-500:]}\n"
            f"The manifest needs exactly version {version} (Debian 12 bookworm). Add a bookworm "
            f"apt source, or copy {_deb_name(package, version)}*.deb into {apt_dir}."
        )
    return deb


def unpack_package(package: str, deb: Path, debs_dir: Path) -> Path:
    """Unpack ``deb`` into ``debs_dir/package`` with ``dpkg -x`` unless already done."""
    target = debs_dir / package
    if (target / UNPACKED_MARKER).is_file():
        return target
    if shutil.which("dpkg") is None:
        raise BuildError(f"{package}: dpkg not found; it is needed to unpack {deb.name}")

    debs_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=debs_dir))
    try:
        result = _run(["dpkg", "-x", str(deb), str(staging)], debs_dir)
        if result.returncode != 0:
            raise BuildError(
                f"{package}: dpkg -x {deb} failed: {result.stderr.strip()[-500:]}\n"
                f"Delete {deb} (it may be truncated) and rerun `hcr data build`."
            )
        (staging / UNPACKED_MARKER).write_text(deb.name + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def fetch_packages(cache: Path, packages: list[str]) -> Path:
    """Download and unpack ``packages``; return the folder that contains them unpacked."""
    apt_dir = cache / "data" / "apt"
    debs_dir = cache / "data" / "debs"
    for package in tqdm(packages, desc="packages", unit="pkg"):
        deb = download_package(package, apt_dir)
        unpack_package(package, deb, debs_dir)
    return debs_dir


# ---- photos -----------------------------------------------------------------------


def normalize_photo(data: bytes, name: str) -> Image.Image:
    """Decode ``data`` to RGB with EXIF orientation applied, shorter side at most 512 px."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Flatten transparency onto white, as a viewer shows it.
                rgba = image.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BuildError(f"{name}: cannot decode image: {exc}") from exc

    width, height = rgb.size
    short = min(width, height)
    if short > MAX_SHORT_SIDE:
        scale = MAX_SHORT_SIDE / short
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


class _SourceReader:
    """Reads original photo bytes from unpacked packages, keeping .rcc bundles open."""

    def __init__(self, debs_dir: Path) -> None:
        self.debs_dir = debs_dir
        self._bundles: dict[Path, QresBundle] = {}

    def read(self, row: dict[str, str]) -> bytes:
        file = self.debs_dir / row["package"] / row["path"]
        where = f"{row['package']}: {row['path']}" + (f" member {row['member']}" if row["member"] else "")
        if not file.is_file():
            raise BuildError(
                f"{where} not found. The package version may differ from the pinned manifest; "
                f"delete {self.debs_dir / row['package']} and rerun `hcr data build`."
            )
        if not row["member"]:
            return file.read_bytes()
        try:
            if file not in self._bundles:
                self._bundles[file] = QresBundle.open(file)
            return self._bundles[file].read(row["member"])
        except (KeyError, QresError) as exc:
            raise BuildError(f"{where}: cannot read from the resource bundle: {exc}") from exc


def _load_index(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def build_photos(rows: list[dict[str, str]], debs_dir: Path, photos_dir: Path) -> Counter:
    """Write the normalized copy of every manifest row; return counts of written and skipped."""
    photos_dir.mkdir(parents=True, exist_ok=True)
    index_path = photos_dir / INDEX_NAME
    index = _load_index(index_path)
    reader = _SourceReader(debs_dir)
    counts: Counter = Counter()

    try:
        for row in tqdm(rows, desc="photos", unit="photo"):
            target = photos_dir / f"{row['photo_id']}.jpg"
            if target.is_file() and index.get(row["photo_id"]) == row["sha256"]:
                counts["skipped"] += 1
                continue

            data = reader.read(row)
            digest = hashlib.sha256(data).hexdigest()
            if digest != row["sha256"]:
                raise BuildError(
                    f"{row['package']}: {row['path']} {row['member']} has SHA-256 {digest}, "
                    f"the manifest pins {row['sha256']}. The Debian package changed; pin the old "
                    "version or refresh the manifest with `hcr data build --refresh-manifest`."
                )

            image = normalize_photo(data, row["photo_id"])
            # Write to a temporary name first so an interrupted build never
            # leaves a truncated JPEG under the final name.
            partial = target.with_suffix(".part")
            image.save(partial, format="JPEG", quality=JPEG_QUALITY)
            partial.replace(target)
            index[row["photo_id"]] = row["sha256"]
            counts["written"] += 1
    finally:
        index_path.write_text(json.dumps(index, indent=0, sort_keys=True))
    return counts


def write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    from hcr_model.data.selection import MANIFEST_FIELDS

    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ---- CLI ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcr data build",
        description="Fetch the Debian packages that contain the benchmark photos and write normalized "
        "copies to <cache>/data/photos/. Reruns skip what is already there.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache root; the build writes under <cache>/data/ (default: $HCR_CACHE, else ~/.cache/hcr)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=MANIFEST_PATH,
        help=f"manifest CSV to build from, or to write with --refresh-manifest (default: {MANIFEST_PATH})",
    )
    parser.add_argument(
        "--refresh-manifest",
        action="store_true",
        help="regenerate the manifest from the unpacked packages instead of building photos "
        "(for maintainers: review the diff before committing it)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    cache = (args.cache or default_cache()).expanduser()

    try:
        debs_dir = fetch_packages(cache, PACKAGES)
        if args.refresh_manifest:
            from hcr_model.data.selection import select_photos

            rows = select_photos(debs_dir)
            write_manifest(rows, args.manifest)
            print(f"wrote {len(rows)} rows to {args.manifest}")
            return 0

        if not args.manifest.is_file():
            raise BuildError(f"manifest {args.manifest} not found")
        rows = read_manifest(args.manifest)
        counts = build_photos(rows, debs_dir, cache / "data" / "photos")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    splits = Counter(row["split"] for row in rows)
    print(
        f"{len(rows)} photos in {cache / 'data' / 'photos'} "
        f"({counts['written']} written, {counts['skipped']} already there); "
        + ", ".join(f"{split} {splits[split]}" for split in ("train", "val", "test"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
