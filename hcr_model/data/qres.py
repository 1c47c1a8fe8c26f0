"""Reader for Qt binary resource bundles (`.rcc` files, magic ``qres``).

Layout (big-endian throughout), as written by Qt's ``rcc --binary``:

- header: ``b"qres"``, then four u32: format version (1 to 3), tree offset,
  data offset and names offset, each offset from the start of the file.
  Version 3 adds a u32 of bundle-wide flags.
- tree: fixed-size entries, 14 bytes each in version 1 and 22 bytes from
  version 2 on (an extra u64 modification time in ms). An entry is a name
  offset (u32), flags (u16), then for a directory the child count (u32) and
  the index of its first child entry (u32); for a file the territory (u16),
  language (u16) and data offset (u32). Entry 0 is the root directory.
- names: u16 length in UTF-16 code units, u32 name hash, UTF-16-BE text.
- data: u32 size, then that many bytes. A zlib-compressed entry (flag 0x1)
  contains ``qCompress`` output: a u32 uncompressed size, then a zlib stream.
  Flag 0x4 marks a zstd-compressed entry, which this reader rejects.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"qres"

FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04


class QresError(ValueError):
    """Raised for a file that is not a valid or supported ``qres`` bundle."""


@dataclass(frozen=True)
class QresEntry:
    """One file inside a bundle, addressed by its slash-separated path."""

    path: str
    flags: int
    data_offset: int  # absolute offset of the u32 size field in the bundle


class QresBundle:
    """A parsed ``.rcc`` bundle held in memory.

    Usage: ``bundle = QresBundle.open(path)``, then ``bundle.paths()`` and
    ``bundle.read(member)``.
    """

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = data
        self._name = name
        if len(data) < 20 or data[:4] != MAGIC:
            raise QresError(f"{name}: not a Qt resource bundle (missing 'qres' magic)")

        version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
        if version not in (1, 2, 3):
            raise QresError(f"{name}: unsupported qres format version {version} (expected 1 to 3)")
        self.version = version
        self._tree = tree
        self._payload = payload
        self._names = names
        self._entry_size = 14 if version == 1 else 22
        self._entries: dict[str, QresEntry] = {}
        self._walk(0, "", depth=0)

    @classmethod
    def open(cls, path: str | Path) -> QresBundle:
        path = Path(path)
        return cls(path.read_bytes(), name=str(path))

    def paths(self) -> list[str]:
        """Return the file paths in the bundle, sorted."""
        return sorted(self._entries)

    def __contains__(self, member: str) -> bool:
        return member in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def read(self, member: str) -> bytes:
        """Return the uncompressed bytes of ``member``; KeyError if absent."""
        try:
            entry = self._entries[member]
        except KeyError:
            raise KeyError(f"{self._name}: no member {member!r} in the bundle") from None

        (size,) = self._unpack(">I", entry.data_offset)
        start = entry.data_offset + 4
        blob = self._data[start : start + size]
        if len(blob) != size:
            raise QresError(f"{self._name}: member {member!r} is truncated")

        if entry.flags & FLAG_COMPRESSED_ZSTD:
            raise QresError(f"{self._name}: member {member!r} is zstd-compressed, which this reader does not support")
        if entry.flags & FLAG_COMPRESSED:
            # qCompress output: expected size (u32, BE) before the zlib stream.
            (expected,) = struct.unpack_from(">I", blob, 0)
            try:
                blob = zlib.decompress(blob[4:])
            except zlib.error as exc:
                raise QresError(f"{self._name}: member {member!r} has a corrupt zlib stream: {exc}") from exc
            if len(blob) != expected:
                raise QresError(
                    f"{self._name}: member {member!r} decompressed to {len(blob)} bytes, expected {expected}"
                )
        return blob

    def _unpack(self, fmt: str, offset: int) -> tuple:
        try:
            return struct.unpack_from(fmt, self._data, offset)
        except struct.error as exc:
            raise QresError(f"{self._name}: offset {offset} is past the end of the file") from exc

    def _name_at(self, offset: int) -> str:
        start = self._names + offset
        (length,) = self._unpack(">H", start)
        raw = self._data[start + 6 : start + 6 + 2 * length]  # skip u16 length and u32 hash
        return raw.decode("utf-16-be")

    def _walk(self, index: int, prefix: str, depth: int) -> None:
        # Qt's own tools nest far less; the bound stops a cyclic tree.
        if depth > 64:
            raise QresError(f"{self._name}: directory tree deeper than 64 levels (corrupt bundle?)")
        offset = self._tree + index * self._entry_size
        name_offset, flags = self._unpack(">IH", offset)
        name = "" if index == 0 else self._name_at(name_offset)
        path = f"{prefix}/{name}" if prefix else name

        if flags & FLAG_DIRECTORY:
            count, first = self._unpack(">II", offset + 6)
            for child in range(first, first + count):
                self._walk(child, path, depth + 1)
        else:
            (data_offset,) = self._unpack(">I", offset + 10)
            self._entries[path] = QresEntry(path=path, flags=flags, data_offset=self._payload + data_offset)
