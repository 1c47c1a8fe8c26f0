"""fsspec storage helpers: opening a URL with the run's options, retries, atomic writes.

Object stores write an object in one PUT, so a reader never sees half of it.
Local files get the same property from a temporary name and a rename.
Credentials never pass through here: s3fs takes them from the environment or
the AWS config, and nothing in this module logs options.
"""

import errno
import io
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem

from schemas.config import StorageOptions

logger = logging.getLogger(__name__)

T = TypeVar("T")

# OSError numbers that a retry can cure. s3fs reports unrecognised S3 errors
# (5xx responses among them) as EIO.
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.EPIPE, errno.EBUSY}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        types += [BotoConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        types.append(ClientError)
    except ImportError:
        pass
    return tuple(types)


_TRANSIENT_TYPES = _transient_types()


def is_transient(error: BaseException) -> bool:
    """Tell whether retrying the storage call that raised `error` can succeed."""
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def with_retries(call: Callable[[], T], options: StorageOptions, what: str) -> T:
    """Run `call`, retrying transient storage errors with exponential backoff.

    `what` names the operation and path for the log; it must not contain credentials.
    """
    delay = options.retry_backoff_s
    for attempt in range(1, options.retries + 1):
        try:
            return call()
        except Exception as error:
            if attempt == options.retries or not is_transient(error):
                raise
            logger.warning("%s failed (attempt %d of %d): %s; retrying in %.1f s", what, attempt, options.retries, error, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable: the last attempt returns or raises")


def open_url(url: str, options: StorageOptions) -> tuple[AbstractFileSystem, str]:
    """Return (filesystem, path) for a URL, with the S3 endpoint applied to s3:// URLs."""
    protocol = fsspec.utils.get_protocol(url)
    kwargs = {}
    if protocol in ("s3", "s3a") and options.s3_endpoint_url:
        kwargs["endpoint_url"] = options.s3_endpoint_url
    return fsspec.core.url_to_fs(url, **kwargs)


def join(root: str, *parts: str) -> str:
    """Join path segments with `/`, whatever the filesystem."""
    pieces = [root.rstrip("/")] + [part.strip("/") for part in parts if part]
    return "/".join(pieces)


def to_url(fs: AbstractFileSystem, path: str) -> str:
    """Return the full URL of a path on `fs` (file:///..., s3://..., memory:///...)."""
    return fs.unstrip_protocol(path)


def is_local(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def read_bytes(fs: AbstractFileSystem, path: str, options: StorageOptions) -> bytes:
    return with_retries(lambda: fs.cat_file(path), options, f"read {path}")


def exists(fs: AbstractFileSystem, path: str, options: StorageOptions) -> bool:
    """Check a path on the store itself, not in the listing cache (other processes write markers)."""
    fs.invalidate_cache(path)
    return with_retries(lambda: fs.exists(path), options, f"check {path}")


def list_names(fs: AbstractFileSystem, path: str, options: StorageOptions) -> list[str]:
    """List a folder's entries, bypassing the listing cache."""
    fs.invalidate_cache(path)
    return with_retries(lambda: fs.ls(path, detail=False), options, f"list {path}")


def write_bytes(fs: AbstractFileSystem, path: str, data: bytes, options: StorageOptions) -> None:
    """Write `data` to `path` so that no reader sees a partial file, retrying transient errors."""
    if is_local(fs):
        # Network mounts (NFS, SMB) raise EIO or EAGAIN too.
        with_retries(lambda: _write_local(path, data), options, f"write {path}")
    else:
        with_retries(lambda: fs.pipe_file(path, data), options, f"write {path}")


def _write_local(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # A dot prefix keeps the temporary file out of pyarrow dataset reads.
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_parquet(table: pa.Table, fs: AbstractFileSystem, path: str, options: StorageOptions) -> None:
    """Write a table as one Parquet file, atomically (see write_bytes)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(fs, path, buffer.getvalue(), options)


def read_parquet(fs: AbstractFileSystem, path: str, options: StorageOptions) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(fs, path, options)))


def remove(fs: AbstractFileSystem, path: str, options: StorageOptions) -> None:
    """Remove a file if it exists."""
    if exists(fs, path, options):
        with_retries(lambda: fs.rm_file(path), options, f"remove {path}")
