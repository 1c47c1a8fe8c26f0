"""Read and decode a shard's images: loose files, tar members and zip members.

Each container is opened once per shard. A tar is read front to back, which
also works for compressed tars and on object storage. Every entry yields
exactly one item: a decoded image or a failure that names the image and what
failed.

Storage errors are sorted by `storage.is_transient`. A transient one (an
I/O error, a reset connection, a timeout) is retried with backoff, and when
the retries run out it is raised, so the shard stays unfinished and a rerun
reads it again. A permanent one (a missing or unreadable file, a corrupt
container) becomes the image's failure, and so an `error` row.
"""

import hashlib
import logging
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby

from fsspec.spec import AbstractFileSystem

from flows import storage
from flows.listing import ArchiveEntry
from flows.shard import ShardSpec
from hcr_model.image_io import DecodedImage, ImageDecodeError, decode_image

logger = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    entry: ArchiveEntry
    sha256: str  # hex, of the bytes read
    image: DecodedImage


@dataclass
class FailedImage:
    entry: ArchiveEntry
    sha256: str | None  # None when no bytes could be read
    error: str  # names the image and what failed


class _TooLarge(Exception):
    pass


def _check_size(entry: ArchiveEntry, size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise _TooLarge(f"{entry.image_id} is {size} bytes, above the limit of {max_bytes} bytes (--max-file-mb)")


def _decode(entry: ArchiveEntry, data: bytes, max_pixels: int) -> LoadedImage | FailedImage:
    digest = hashlib.sha256(data).hexdigest()
    try:
        return LoadedImage(entry, digest, decode_image(data, entry.image_id, max_pixels=max_pixels))
    except ImageDecodeError as error:
        return FailedImage(entry, digest, str(error))


def _read_loose(fs: AbstractFileSystem, entry: ArchiveEntry, spec: ShardSpec, max_bytes: int) -> bytes:
    _check_size(entry, entry.size, max_bytes)
    return storage.read_bytes(fs, entry.path, spec.storage)


def _tar_members(fs: AbstractFileSystem, path: str, wanted: dict[str, ArchiveEntry], max_bytes: int) -> Iterator[tuple[ArchiveEntry, bytes | Exception]]:
    """Yield (entry, bytes or the error) for each wanted member, in tar order."""
    remaining = dict(wanted)
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
        for member in archive:
            entry = remaining.pop(member.name, None)
            if entry is None:
                continue
            if not member.isfile():
                yield entry, ValueError(f"{entry.image_id} is no longer a regular file in {path}")
                continue
            try:
                _check_size(entry, member.size, max_bytes)
                extracted = archive.extractfile(member)
                yield entry, extracted.read() if extracted else b""
            except _TooLarge as error:
                yield entry, error
            if not remaining:
                return
    for entry in remaining.values():
        yield entry, FileNotFoundError(f"member {entry.member!r} of {entry.image_id} not found in the tar")


def _zip_members(fs: AbstractFileSystem, path: str, wanted: dict[str, ArchiveEntry], max_bytes: int) -> Iterator[tuple[ArchiveEntry, bytes | Exception]]:
    with fs.open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for name, entry in wanted.items():
            try:
                info = archive.getinfo(name)
                _check_size(entry, info.file_size, max_bytes)
                with archive.open(info) as member:
                    # Read one byte past the limit: a member can expand beyond its declared size.
                    data = member.read(max_bytes + 1)
                _check_size(entry, len(data), max_bytes)
                yield entry, data
            except (KeyError, _TooLarge, zipfile.BadZipFile, OSError, ValueError) as error:
                if storage.is_transient(error):
                    raise  # _container_items retries the members not read yet
                yield entry, error


def _container_items(fs, path: str, kind: str, entries: list[ArchiveEntry], spec: ShardSpec, max_bytes: int):
    """Yield one item per entry of one container, reopening it after a transient storage error."""
    reader = _tar_members if kind == "tar" else _zip_members
    pending = {entry.member: entry for entry in entries}
    delay = spec.storage.retry_backoff_s
    for attempt in range(1, spec.storage.retries + 1):
        try:
            for entry, result in reader(fs, path, dict(pending), max_bytes):
                del pending[entry.member]
                if isinstance(result, Exception):
                    yield FailedImage(entry, None, f"cannot read {entry.image_id}: {result}")
                else:
                    yield _decode(entry, result, spec.limits.max_pixels)
            return
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            if storage.is_transient(error):
                if attempt == spec.storage.retries:
                    raise
                logger.warning(
                    "read %s %s failed (attempt %d of %d): %s; retrying the %d members not read yet in %.1f s",
                    kind, path, attempt, spec.storage.retries, error, len(pending), delay,
                )
                time.sleep(delay)
                delay *= 2
                continue
            logger.warning("cannot read %s container %s: %s", kind, path, error)
            for entry in pending.values():
                yield FailedImage(entry, None, f"cannot read {entry.image_id}: {kind} container unreadable: {error}")
            return


def iter_images(spec: ShardSpec) -> Iterator[LoadedImage | FailedImage]:
    """Yield one LoadedImage or FailedImage per entry of the shard."""
    fs, _ = storage.open_url(spec.source, spec.storage)
    max_bytes = spec.limits.max_file_mb * 2**20

    for (kind, path), group in groupby(spec.entries, key=lambda entry: (entry.container, entry.path)):
        entries = list(group)
        rejected = [entry for entry in entries if entry.error]
        for entry in rejected:
            yield FailedImage(entry, None, f"{entry.image_id}: {entry.error}")
        readable = [entry for entry in entries if not entry.error]
        if not readable:
            continue

        if kind is None:
            for entry in readable:
                try:
                    data = _read_loose(fs, entry, spec, max_bytes)
                except (_TooLarge, OSError) as error:
                    if storage.is_transient(error):
                        raise  # read_bytes already retried it
                    yield FailedImage(entry, None, f"cannot read {entry.image_id}: {error}")
                    continue
                yield _decode(entry, data, spec.limits.max_pixels)
        else:
            yield from _container_items(fs, path, kind, readable, spec, max_bytes)


def iter_batches(spec: ShardSpec, batch_size: int) -> Iterator[list[LoadedImage | FailedImage]]:
    """Group the shard's items into lists holding at most `batch_size` decoded images each."""
    batch: list[LoadedImage | FailedImage] = []
    loaded = 0
    for item in iter_images(spec):
        batch.append(item)
        loaded += isinstance(item, LoadedImage)
        if loaded >= batch_size:
            yield batch
            batch, loaded = [], 0
    if batch:
        yield batch
