"""List an archive (folder or prefix with images, tar and zip files) into image entries.

`image_id` is the path relative to the archive root, extension kept. A member
of a tar or zip gets the container's relative path, `/` and the normalized
member name (`shards/00001.tar/img/a.jpg`). `source_uri` is the file's full
URL, and for a member fsspec's chained form
(`tar://img/a.jpg::s3://bucket/shards/00001.tar`).

Members whose names are absolute or contain `..`, links, devices and
encrypted members are never read or written anywhere: each becomes an entry
with `error` set, which the run turns into an `error` row. So do files and
members in image formats hcr cannot decode (SVG, HEIC, ...), which would
otherwise be skipped like any other non-image file.
"""

import logging
import os
import posixpath
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from fsspec.spec import AbstractFileSystem

from flows import storage
from hcr_model.image_io import IMAGE_EXTENSIONS
from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Image formats the decoder does not open, by extension (lower case, with the dot).
UNSUPPORTED_IMAGE_EXTENSIONS = {
    ".svg": "SVG", ".svgz": "SVG", ".eps": "EPS", ".heic": "HEIC", ".heif": "HEIF", ".psd": "PSD", ".jxl": "JPEG XL",
}


@dataclass(frozen=True)
class ArchiveEntry:
    """One image of an archive, or one rejected member."""

    image_id: str
    source_uri: str
    path: str  # path on the source filesystem of the file, or of the container for a member
    member: str | None = None  # member name exactly as stored in the container
    container: str | None = None  # "tar", "zip" or None for a loose file
    size: int | None = None  # bytes of the file or member, when the listing reports it
    error: str | None = None  # why the entry is rejected without being read


def container_kind(name: str) -> str | None:
    lowered = name.lower()
    if lowered.endswith(TAR_SUFFIXES):
        return "tar"
    if lowered.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def is_image_name(name: str) -> bool:
    return posixpath.splitext(name.lower())[1] in IMAGE_EXTENSIONS


def unsupported_format_reason(name: str) -> str | None:
    """Return why an image in a format hcr cannot decode is rejected, or None for other names."""
    extension = posixpath.splitext(name.lower())[1]
    image_format = UNSUPPORTED_IMAGE_EXTENSIONS.get(extension)
    if image_format is None:
        return None
    return f"unsupported image format {image_format} ({extension}); convert it to PNG or JPEG to audit it"


def unsafe_name_reason(name: str) -> str | None:
    """Return why a member name is unsafe to use as a path, or None when it is safe."""
    unified = name.replace("\\", "/")
    if _CONTROL.search(name):
        return "member name contains control characters"
    if unified.startswith("/") or _DRIVE.match(unified):
        return "member name is an absolute path"
    if ".." in unified.split("/"):
        return "member name contains '..' (path traversal)"
    return None


def normalize_member(name: str) -> str:
    """Drop `./` prefixes and repeated slashes from a safe member name."""
    return posixpath.normpath(name).lstrip("/")


def _member_uri(kind: str, member: str, container_url: str) -> str:
    return f"{kind}://{member}::{container_url}"


def _tar_entries(fs: AbstractFileSystem, path: str, relative: str, container_url: str) -> Iterator[ArchiveEntry]:
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
        # Iterating reads headers one at a time, so a large tar is never indexed in memory at once.
        for member in archive:
            if member.isdir():
                continue
            reason = unsafe_name_reason(member.name)
            if reason is None and (member.issym() or member.islnk()):
                reason = f"member is a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}; links are not followed"
            elif reason is None and not member.isfile():
                reason = "member is not a regular file (device, FIFO or other special file)"
            unsupported = None
            if reason is None and not is_image_name(member.name):
                unsupported = unsupported_format_reason(member.name)
                if unsupported is None:
                    continue
            image_id = f"{relative}/{normalize_member(member.name) if reason is None else member.name}"
            reason = reason or unsupported
            yield ArchiveEntry(
                image_id=image_id,
                source_uri=_member_uri("tar", member.name, container_url),
                path=path,
                member=member.name,
                container="tar",
                size=member.size,
                error=f"archive member rejected: {reason}" if reason else None,
            )


def _zip_entries(fs: AbstractFileSystem, path: str, relative: str, container_url: str) -> Iterator[ArchiveEntry]:
    with fs.open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            reason = unsafe_name_reason(info.filename)
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if reason is None and file_type == stat.S_IFLNK:
                reason = "member is a symbolic link; links are not followed"
            elif reason is None and file_type not in (0, stat.S_IFREG):
                reason = "member is not a regular file"
            elif reason is None and info.flag_bits & 0x1:
                reason = "member is encrypted"
            unsupported = None
            if reason is None and not is_image_name(info.filename):
                unsupported = unsupported_format_reason(info.filename)
                if unsupported is None:
                    continue
            image_id = f"{relative}/{normalize_member(info.filename) if reason is None else info.filename}"
            reason = reason or unsupported
            yield ArchiveEntry(
                image_id=image_id,
                source_uri=_member_uri("zip", info.filename, container_url),
                path=path,
                member=info.filename,
                container="zip",
                size=info.file_size,
                error=f"archive member rejected: {reason}" if reason else None,
            )


def _container_entries(fs: AbstractFileSystem, path: str, relative: str, kind: str, options: StorageOptions) -> list[ArchiveEntry]:
    container_url = storage.to_url(fs, path)
    lister = _tar_entries if kind == "tar" else _zip_entries
    try:
        return storage.with_retries(lambda: list(lister(fs, path, relative, container_url)), options, f"list {kind} {container_url}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if storage.is_transient(error):
            # Retries ran out, so the plan fails and a rerun lists the container
            # again. An error entry would stay in this sweep's manifest for good.
            raise
        # The container itself is unreadable: one error row stands for it.
        logger.warning("cannot list %s %s: %s", kind, container_url, error)
        return [
            ArchiveEntry(
                image_id=relative,
                source_uri=container_url,
                path=path,
                container=kind,
                error=f"cannot read {kind} container {relative}: {error}",
            )
        ]


def _relative(root: str, path: str) -> str:
    return path[len(root) :].lstrip("/") if path.startswith(root) else path


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _link_outside_reason(detail: dict, path: str, root: str) -> str | None:
    """Reject a local symbolic link whose target lies outside the archive folder."""
    if not detail.get("islink"):
        return None
    target = os.path.realpath(path)
    base = os.path.realpath(root)
    if target == base or target.startswith(base + os.sep):
        return None
    return "symbolic link points outside the archive folder; copy the file into the archive to audit it"


def list_archive(url: str, options: StorageOptions) -> list[ArchiveEntry]:
    """List every image of an archive, sorted by image_id; rejected members included.

    Hidden files and folders (names starting with `.`) and files that are
    neither images nor tar/zip containers are skipped and counted in the log.
    Images in a format listed in UNSUPPORTED_IMAGE_EXTENSIONS are listed as
    rejected entries. Tar and zip files nested inside a container are not
    opened. Raises when a storage call still fails with a transient error
    after its retries.
    """
    fs, root = storage.open_url(url, options)
    root = root.rstrip("/")
    if not storage.with_retries(lambda: fs.isdir(root), options, f"check {url}"):
        raise NotADirectoryError(f"archive {url} is not a folder or prefix, or does not exist; pass the folder that contains the images")

    fs.invalidate_cache(root)
    details = storage.with_retries(lambda: fs.find(root, withdirs=False, detail=True), options, f"list {url}")
    entries: list[ArchiveEntry] = []
    skipped = 0
    for path in sorted(details):
        relative = _relative(root, path)
        if not relative or _is_hidden(relative):
            skipped += 1
            continue
        kind = container_kind(relative)
        unsupported = unsupported_format_reason(relative)
        outside = _link_outside_reason(details[path], path, root)
        if outside and (kind is not None or is_image_name(relative) or unsupported):
            entries.append(ArchiveEntry(image_id=relative, source_uri=storage.to_url(fs, path), path=path, error=outside))
        elif kind is not None:
            entries.extend(_container_entries(fs, path, relative, kind, options))
        elif is_image_name(relative) or unsupported:
            size = details[path].get("size")
            entries.append(ArchiveEntry(image_id=relative, source_uri=storage.to_url(fs, path), path=path, size=size, error=unsupported))
        else:
            skipped += 1

    unique = _drop_duplicates(entries)
    rejected = sum(entry.error is not None for entry in unique)
    logger.info("listed %s: %d images, %d rejected entries, %d other files skipped", url, len(unique) - rejected, rejected, skipped)
    return sorted(unique, key=lambda entry: entry.image_id)


def _drop_duplicates(entries: list[ArchiveEntry]) -> list[ArchiveEntry]:
    """Keep the first entry of each image_id (a tar can hold one name twice)."""
    seen: set[str] = set()
    unique = []
    for entry in entries:
        if entry.image_id in seen:
            logger.warning("duplicate image id %s (%s): only the first copy is used", entry.image_id, entry.source_uri)
            continue
        seen.add(entry.image_id)
        unique.append(entry)
    return unique
