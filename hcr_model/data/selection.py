"""Selection rules that turn the unpacked Debian packages into manifest rows.

Only ``hcr data build --refresh-manifest`` runs this module; the committed
``manifest.csv`` it writes is the pinned truth that every other build checks
against. The lists below were made by looking at every candidate image:
graphics, drawings, paintings, cartoons, sprites and icons are left out.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from hcr_model.data.qres import QresBundle

log = logging.getLogger(__name__)

GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"

# Wallpapers: photos only, each with the category of what it shows.
MATE_PHOTOS = {
    "Aqua": "water",
    "Blinds": "plants",
    "Dune": "landscape",
    "Garden": "plants",
    "GreenMeadow": "plants",
    "LadyBird": "animals",
    "RainDrops": "plants",
    "Storm": "landscape",
    "TwoWings": "plants",
    "Wood": "objects",
    "YellowFlower": "plants",
}
LXQT_PHOTOS = {
    "Valendas.png": "landscape",
    "after-the-rain.jpg": "landscape",
    "appleflower.png": "plants",
    "beam.png": "landscape",
    "butterfly.png": "animals",
    "Butterfly-Kenneth-Wimer.jpg": "animals",
    "cloud.png": "landscape",
    "drop.png": "plants",
    "flowers.png": "plants",
    "fog.jpg": "landscape",
    "this-is-not-windows.jpg": "landscape",
}
LOMIRI_PHOTOS = {
    "Bridge_by_Sander_Klootwijk": "landscape",
    "Dragonfly_by_Bolly": "animals",
    "Picture_0B_by_freespace": "objects",
    "Picture_1A_by_freespace": "objects",
    "Wine_by_Jakkub_Mede": "objects",
    "aitzgorri_by_Aitzol_Berasategi": "landscape",
    "free_by_Peter_Nerlich": "objects",
    "friends_by_Aitzol_Berasategi": "animals",
    "greentock_by_Peter_Nerlich": "objects",
    "life_by_Aitzol_Berasategi": "landscape",
    "picosdeeuropa_by_Aitzol_Berasategi": "landscape",
    "seeding_by_Clements_Engelhardt": "plants",
    "sunset_by_Aitzol_Berasategi": "landscape",
}
PLASMA_PHOTOS = {
    "BytheWater": "landscape",
    "ColdRipple": "landscape",
    "ColorfulCups": "objects",
    "DarkestHour": "landscape",
    "EveningGlow": "landscape",
    "FallenLeaf": "plants",
    "Grey": "objects",
    "Kite": "landscape",
    "OneStandsOut": "plants",
    "Path": "landscape",
    "summer_1am": "landscape",
}

# gcompris: (bundle, member glob, category). Folders left out on purpose:
# lang, paintings, babyshapes, chronos, leftright, louis-braille and the
# clickgame fish sprites are drawings or cut-outs. solar_system contains
# rendered planet discs on black. details contains paintings and 74 px crops
# of its backgrounds, so only its photographed backgrounds are kept.
GCOMPRIS_RULES = [
    ("categorization.rcc", "*/categorization/resource/images/fishes/*.webp", "fishes"),
    ("categorization.rcc", "*/categorization/resource/images/monuments/*.webp", "monuments"),
    ("categorization.rcc", "*/categorization/resource/images/others/*.webp", "others"),
    ("categorization.rcc", "*/categorization/resource/images/renewable/*.webp", "renewable"),
    ("categorization.rcc", "*/categorization/resource/images/tools/*.webp", "tools"),
    ("clickgame.rcc", "*/clickgame/resource/sea*.webp", "underwater"),
    ("erase.rcc", "*/erase/resource/*.webp", "animals"),
    ("explore_farm_animals.rcc", "*/explore_farm_animals/resource/animals/*.webp", "animals"),
    ("explore_world_animals.rcc", "*/explore_world_animals/resource/animals/*.webp", "animals"),
    ("explore_monuments.rcc", "*/explore_monuments/resource/*/*.webp", "monuments"),
    ("explore_world_music.rcc", "*/explore_world_music/resource/music/*.webp", "music"),
]
GCOMPRIS_DETAILS_PHOTOS = [
    "Chenonceau",
    "EgeskovSlotSpejling",
    "EilanDonanCastle",
    "FanoeWindmill",
    "GizahPyramids",
    "Louvre_2007_02_24_c",
    "NDP",
    "Nagoya",
    "Neuschwanstein",
    "OperaSidney",
    "TajMahal",
    "TourEiffel",
    "TowerBridgeLondon",
]

# Scratch backgrounds that are cartoons, not photos.
SCRATCH_DRAWINGS = {
    "party-room",
    "room1",
    "room2",
    "room3",
    "spotlight-stage",
    "woods-and-bench",
    "brick-wall1",
    "school2",
}
# Kalzium pictures narrower than this (px) are thin glassware cut-outs that
# would have to be upsampled several times to fill a tile.
KALZIUM_MIN_SIDE = 96

# Two photos whose 64-bit difference hashes differ in at most this many bits
# are treated as near-duplicates (the same shot at another size or crop).
NEAR_DUPLICATE_BITS = 6
# ... and whose 16x16 RGB thumbnails differ by less than this mean absolute
# error (0-255 scale). Same shots measured 0.3; unrelated dark scenes 69.
NEAR_DUPLICATE_MEAN_ERROR = 8.0

SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}

MANIFEST_FIELDS = ["photo_id", "package", "path", "member", "sha256", "license", "category", "split"]


@dataclass
class Candidate:
    package: str
    path: str  # inside the unpacked package
    member: str  # inside the .rcc bundle, or ""
    category: str
    license: str = ""
    sha256: str = ""
    photo_id: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


# ---- candidates per package -------------------------------------------------


def _files(root: Path, pattern: str) -> list[Path]:
    # Symlinked duplicates (plasma's size variants) are not separate photos.
    return sorted(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())


def _wallpapers(debs: Path) -> Iterator[Candidate]:
    mate = debs / "mate-backgrounds"
    for stem, category in MATE_PHOTOS.items():
        path = f"usr/share/backgrounds/mate/nature/{stem}.jpg"
        yield Candidate("mate-backgrounds", path, "", category, photo_id=f"mate-{stem}")
        if not (mate / path).is_file():
            raise FileNotFoundError(f"mate-backgrounds: {path} is missing")

    for name, category in LXQT_PHOTOS.items():
        path = f"usr/share/lxqt/wallpapers/{name}"
        yield Candidate("lxqt-themes", path, "", category, photo_id=f"lxqt-{PurePosixPath(name).stem}")

    for stem, category in LOMIRI_PHOTOS.items():
        path = f"usr/share/backgrounds/{stem}.jpg"
        yield Candidate("lomiri-wallpapers-16.04", path, "", category, photo_id=f"lomiri-{stem}")

    plasma = debs / "plasma-workspace-wallpapers"
    for name, category in PLASMA_PHOTOS.items():
        # The largest real file is the original; the other sizes are symlinks.
        images = _files(plasma / "usr/share/wallpapers" / name / "contents/images", "*")
        if not images:
            raise FileNotFoundError(f"plasma-workspace-wallpapers: no images for wallpaper {name}")
        best = max(images, key=lambda p: p.stat().st_size)
        yield Candidate(
            "plasma-workspace-wallpapers", best.relative_to(plasma).as_posix(), "", category, photo_id=f"plasma-{name}"
        )


def _gcompris(debs: Path) -> Iterator[Candidate]:
    root = debs / "gcompris-qt-data"
    bundles: dict[str, QresBundle] = {}

    def bundle(name: str) -> QresBundle:
        if name not in bundles:
            bundles[name] = QresBundle.open(root / GCOMPRIS_RCC / name)
        return bundles[name]

    for rcc, pattern, category in GCOMPRIS_RULES:
        for member in bundle(rcc).paths():
            if fnmatch.fnmatchcase(member, pattern):
                parts = PurePosixPath(member).with_suffix("").parts
                yield Candidate(
                    "gcompris-qt-data",
                    f"{GCOMPRIS_RCC}/{rcc}",
                    member,
                    category,
                    photo_id=_slug(f"gcompris-{parts[-2]}-{parts[-1]}"),
                )

    details = bundle("details.rcc")
    for name in GCOMPRIS_DETAILS_PHOTOS:
        member = f"gcompris/src/activities/details/resource/image/{name}_background.webp"
        if member not in details:
            raise FileNotFoundError(f"gcompris-qt-data: details.rcc has no member {member}")
        yield Candidate(
            "gcompris-qt-data",
            f"{GCOMPRIS_RCC}/details.rcc",
            member,
            "monuments",
            photo_id=_slug(f"gcompris-details-{name}"),
        )


def _small_packages(debs: Path) -> Iterator[Candidate]:
    scratch = debs / "scratch"
    for folder in ("Nature", "Outdoors", "Indoors", "Sports"):
        for path in _files(scratch / "usr/share/scratch/Media/Backgrounds" / folder, "*.jpg"):
            if path.stem not in SCRATCH_DRAWINGS:
                rel = path.relative_to(scratch).as_posix()
                yield Candidate("scratch", rel, "", folder.lower(), photo_id=_slug(f"scratch-{folder}-{path.stem}"))

    tuxpaint = debs / "tuxpaint-data"
    for path in _files(tuxpaint / "usr/share/tuxpaint/templates", "*.jpg"):
        rel = path.relative_to(tuxpaint).as_posix()
        yield Candidate("tuxpaint-data", rel, "", "nature", photo_id=_slug(f"tuxpaint-{path.stem}"))

    tuxtype = debs / "tuxtype-data"
    for path in _files(tuxtype / "usr/share/tuxtype/images", "kcas*.jpg"):
        rel = path.relative_to(tuxtype).as_posix()
        yield Candidate("tuxtype-data", rel, "", "nature", photo_id=_slug(f"tuxtype-{path.stem}"))

    # The toolpics folder contains JPEG photos plus one PNG line drawing
    # (kolbenprober.png), which is left out.
    kalzium = debs / "kalzium-data"
    for path in _files(kalzium / "usr/share/kalzium/data/toolpics", "*.jpg"):
        with Image.open(path) as image:
            if min(image.size) < KALZIUM_MIN_SIDE:
                continue
        rel = path.relative_to(kalzium).as_posix()
        yield Candidate("kalzium-data", rel, "", "lab_equipment", photo_id=_slug(f"kalzium-{path.stem}"))


# ---- licences -----------------------------------------------------------------


def _dep5_stanzas(text: str) -> list[tuple[list[str], str]]:
    """Return ``(file patterns, licence short name)`` per stanza of a DEP-5 file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and "license" in fields:
            stanzas.append((fields["files"].split(), fields["license"].split("\n")[0].strip()))
    return stanzas


def _match_dep5(stanzas: list[tuple[list[str], str]], source_path: str) -> str | None:
    # DEP-5: the last matching stanza wins. Source files are often JPEG or PNG
    # that the package ships converted (WebP in gcompris), so the extension
    # is ignored when comparing.
    stem = str(PurePosixPath(source_path).with_suffix(""))
    found = None
    for patterns, license_name in stanzas:
        for pattern in patterns:
            if fnmatch.fnmatchcase(source_path, pattern) or fnmatch.fnmatchcase(
                stem, str(PurePosixPath(pattern).with_suffix(""))
            ):
                found = license_name
    return found


def _normalize_license(name: str) -> str:
    aliases = {"LGPLv3": "LGPL-3", "GPL-2.0-or-later": "GPL-2+", "LGPL-2.1-or-later": "LGPL-2.1+"}
    return aliases.get(name, name)


def assign_licenses(candidates: list[Candidate], debs: Path) -> None:
    """Fill ``license`` from each package's Debian copyright file.

    Per package, the installed path is mapped to the upstream source path
    that the copyright file names. Two packages record wallpaper licences
    elsewhere: plasma in each wallpaper's ``metadata.json`` and lxqt in
    ``wallpapers/License``.
    """
    copyright_cache: dict[str, list[tuple[list[str], str]]] = {}

    def text_of(package: str) -> str:
        return (debs / package / "usr/share/doc" / package / "copyright").read_text(errors="replace")

    for cand in candidates:
        if cand.package not in copyright_cache:
            copyright_cache[cand.package] = _dep5_stanzas(text_of(cand.package))
        stanzas = copyright_cache[cand.package]

        if cand.package == "plasma-workspace-wallpapers":
            meta = debs / cand.package / PurePosixPath(cand.path).parents[2] / "metadata.json"
            license_name = json.loads(meta.read_text())["KPlugin"]["License"]
        elif cand.package == "lxqt-themes":
            text = (debs / cand.package / "usr/share/lxqt/wallpapers/License").read_text()
            if "creativecommons.org/licenses/by-sa/3.0" not in text:
                raise ValueError("lxqt-themes: wallpapers/License no longer names CC-BY-SA-3.0; check it by hand")
            license_name = "CC-BY-SA-3.0"
        elif cand.package == "tuxtype-data":
            # Not a DEP-5 file: it states the whole package is GPL version 2
            # and lists public-domain images only among the .gif files.
            if "licensed under the GNU Public License version 2" not in text_of(cand.package):
                raise ValueError("tuxtype-data: copyright file no longer states GPL version 2; check it by hand")
            license_name = "GPL-2"
        elif cand.package == "gcompris-qt-data":
            # NOTE: gcompris 3.1's copyright file lists older file names for
            # several folders (erase, explore_*), so those photos fall back to
            # its "Files: *" stanza (GPL-3+); upstream credits may differ.
            license_name = _match_dep5(stanzas, cand.member.removeprefix("gcompris/"))
        elif cand.package == "mate-backgrounds":
            license_name = _match_dep5(stanzas, cand.path.removeprefix("usr/share/backgrounds/mate/"))
        elif cand.package == "lomiri-wallpapers-16.04":
            license_name = _match_dep5(stanzas, "16.04/" + cand.path.removeprefix("usr/share/backgrounds/"))
        elif cand.package == "scratch":
            license_name = _match_dep5(stanzas, cand.path.removeprefix("usr/share/scratch/"))
        else:
            license_name = _match_dep5(stanzas, PurePosixPath(cand.path).name)
        if not license_name:
            raise ValueError(f"{cand.package}: no licence found for {cand.path} {cand.member}".strip())
        cand.license = _normalize_license(license_name)


# ---- hashing, near-duplicates and splits ------------------------------------------


def read_original(debs: Path, package: str, path: str, member: str, bundles: dict[str, QresBundle]) -> bytes:
    """Return the original bytes of one photo (a file, or a member of an .rcc bundle)."""
    file = debs / package / path
    if not member:
        return file.read_bytes()
    if path not in bundles:
        bundles[path] = QresBundle.open(file)
    return bundles[path].read(member)


def _fingerprint(data: bytes) -> tuple[int, np.ndarray]:
    """Return a 64-bit difference hash and a 16x16 RGB thumbnail of a photo."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    gray = np.asarray(rgb.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = 0
    for bit in (gray[:, :-1] > gray[:, 1:]).flatten():
        bits = (bits << 1) | int(bit)
    thumb = np.asarray(rgb.resize((16, 16), Image.Resampling.LANCZOS), dtype=np.float32)
    return bits, thumb


def drop_near_duplicates(candidates: list[Candidate], data: dict[str, bytes]) -> list[Candidate]:
    """Keep the largest file of each group of near-identical photos; log what is dropped.

    Two photos are near-duplicates when their difference hashes are close
    and their 16x16 thumbnails match in colour too: the hash alone confuses
    smooth, dark gradients (a misty lake and a dusk dune both hash alike).
    """
    kept: list[tuple[Candidate, int, np.ndarray]] = []
    for cand in sorted(candidates, key=lambda c: -len(data[c.photo_id])):
        digest, thumb = _fingerprint(data[cand.photo_id])
        twin = None
        for other, other_digest, other_thumb in kept:
            close_hash = (digest ^ other_digest).bit_count() <= NEAR_DUPLICATE_BITS
            if close_hash and float(np.abs(thumb - other_thumb).mean()) < NEAR_DUPLICATE_MEAN_ERROR:
                twin = other
                break
        if twin is not None:
            log.info("dropping %s: near-duplicate of %s", cand.photo_id, twin.photo_id)
            continue
        kept.append((cand, digest, thumb))
    kept_ids = {cand.photo_id for cand, _, _ in kept}
    return [cand for cand in candidates if cand.photo_id in kept_ids]


def assign_splits(candidates: list[Candidate]) -> dict[str, str]:
    """Split whole photos ~80/10/10, stratified by category, deterministic.

    Within a category photos are ordered by the SHA-256 of their id, so
    adding a photo moves few others. Categories with at least 4 photos get at
    least one val and one test photo.
    """
    by_category: dict[str, list[str]] = defaultdict(list)
    for cand in candidates:
        by_category[cand.category].append(cand.photo_id)

    splits = {}
    for ids in by_category.values():
        ids.sort(key=lambda photo_id: hashlib.sha256(photo_id.encode()).hexdigest())
        counts = {}
        for split, fraction in SPLIT_FRACTIONS.items():
            counts[split] = max(1, round(fraction * len(ids))) if len(ids) >= 4 else 0
        for index, photo_id in enumerate(ids):
            if index < counts["test"]:
                splits[photo_id] = "test"
            elif index < counts["test"] + counts["val"]:
                splits[photo_id] = "val"
            else:
                splits[photo_id] = "train"
    return splits


def select_photos(debs: Path) -> list[dict[str, str]]:
    """Return the manifest rows for the unpacked packages under ``debs``."""
    candidates = [*_wallpapers(debs), *_gcompris(debs), *_small_packages(debs)]
    ids = [cand.photo_id for cand in candidates]
    duplicates = sorted({photo_id for photo_id in ids if ids.count(photo_id) > 1})
    if duplicates:
        raise ValueError(f"photo ids are not unique: {duplicates}")

    bundles: dict[str, QresBundle] = {}
    data = {}
    for cand in candidates:
        blob = read_original(debs, cand.package, cand.path, cand.member, bundles)
        data[cand.photo_id] = blob
        cand.sha256 = hashlib.sha256(blob).hexdigest()

    candidates = drop_near_duplicates(candidates, data)
    assign_licenses(candidates, debs)
    splits = assign_splits(candidates)

    rows = []
    for cand in candidates:
        rows.append(
            {
                "photo_id": cand.photo_id,
                "package": cand.package,
                "path": cand.path,
                "member": cand.member,
                "sha256": cand.sha256,
                "license": cand.license,
                "category": cand.category,
                "split": splits[cand.photo_id],
            }
        )
    return rows
