"""Helpers shared by the dataset tests: a writer of Qt ``qres`` bundles."""

import struct
import zlib

import pytest


def write_qres(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """Return a ``qres`` bundle holding ``files`` (path -> (bytes, zlib-compress?)).

    Entries are laid out breadth-first with each directory's children
    contiguous, as Qt's rcc does. Name hashes are left at 0 because readers
    that look members up by path do not need them.
    """
    tree: dict = {}
    for path, content in files.items():
        node = tree
        *dirs, name = path.split("/")
        for part in dirs:
            node = node.setdefault(part, {})
        node[name] = content

    names = bytearray()
    name_offsets: dict[str, int] = {}
    payload = bytearray()
    entries: list[tuple[str, object]] = [("", tree)]
    records: list[tuple] = []

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return name_offsets[name]

    index = 0
    while index < len(entries):
        name, node = entries[index]
        offset = name_offset(name) if index else 0
        if isinstance(node, dict):
            first = len(entries)
            entries.extend(sorted(node.items()))
            records.append(struct.pack(">IHII", offset, 0x02, len(node), first))
        else:
            data, compress = node
            blob = struct.pack(">I", len(data)) + zlib.compress(data) if compress else data
            records.append(struct.pack(">IHHHI", offset, 0x01 if compress else 0x00, 0, 0, len(payload)))
            payload.extend(struct.pack(">I", len(blob)) + blob)
        if version >= 2:
            records[-1] += struct.pack(">Q", 0)  # modification time, ms since the epoch
        index += 1

    header_size = 24 if version >= 3 else 20
    data_offset = header_size
    names_offset = data_offset + len(payload)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)  # bundle-wide flags
    return header + bytes(payload) + bytes(names) + b"".join(records)


@pytest.fixture
def qres_writer():
    return write_qres
