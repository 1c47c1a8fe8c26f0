"""Registry index: hidden code to original image id and label.

A lookup first tries an exact match of the hidden code (a dict on its packed
bytes), then falls back to the nearest neighbour of the code embedding in a
faiss index. Embeddings are L2-normalised, so inner product equals cosine
similarity, and the reported distance is 1 - cosine similarity (0 for an
identical direction, up to 2 for an opposite one). An exact code match
reports distance 0.0.

Index choice by registry size:
- up to `EXACT_SEARCH_MAX_ROWS` (100 000) rows, `IndexFlatIP`: exact search,
  O(rows) per query, no training;
- above it, `IndexIVFFlat` with sqrt(rows) inverted lists (k-means on a sample
  of the rows) searched with `nprobe` lists per query. This is approximate: a
  query whose true neighbour sits in an unprobed list gets the best match of
  the probed lists. `scripts/measure_recovery.py` measures its top-1 against
  exact search.

Codes are packed MSB first (`numpy.packbits` with bitorder "big"): bit i of
the hidden code is bit 7 - i % 8 of byte i // 8. A 140-bit code takes 18
bytes, and the last 4 bits are zero.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import torch

logger = logging.getLogger(__name__)

EXACT_SEARCH_MAX_ROWS = 100_000
IVF_SAMPLE_PER_LIST = 64  # k-means training vectors per inverted list
DEFAULT_NPROBE = 16


@dataclass(frozen=True)
class Match:
    """One registry hit for one query."""

    image_id: str
    label: str | None
    distance: float  # 0.0 for an exact hidden-code match, else 1 - cosine similarity
    exact: bool  # True when the hidden code matched a registry row exactly


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def pack_code(code_bits: np.ndarray | torch.Tensor) -> list[bytes]:
    """Pack unpacked hidden-code bits (B, n) of 0/1 into B byte strings, MSB first."""
    bits = _as_numpy(code_bits).astype(np.uint8)
    if bits.ndim != 2:
        raise ValueError(f"code bits must be (B, n), got shape {bits.shape}")
    if bits.size and bits.max() > 1:
        raise ValueError("unpacked code bits must be 0 or 1")
    return [row.tobytes() for row in np.packbits(bits, axis=1, bitorder="big")]


class RegistryIndex:
    """Exact hidden-code dict plus a faiss index over code embeddings, built once per process."""

    def __init__(
        self,
        image_ids: list[str],
        labels: list[str | None],
        codes: list[bytes | None],
        embeddings: np.ndarray,
        nprobe: int = DEFAULT_NPROBE,
    ) -> None:
        """image_ids, labels, codes: one entry per row (a code may be None); embeddings: (N, D) float."""
        n = len(image_ids)
        if not (len(labels) == len(codes) == n == embeddings.shape[0]):
            raise ValueError(
                f"registry columns differ in length: {n} ids, {len(labels)} labels, "
                f"{len(codes)} codes, {embeddings.shape[0]} embeddings"
            )
        self.image_ids = list(image_ids)
        self.labels = list(labels)
        self.code_bytes = next((len(c) for c in codes if c is not None), None)

        # First row wins when two images share a code (duplicates in the archive).
        self.by_code: dict[bytes, int] = {}
        duplicates = 0
        for row, code in enumerate(codes):
            if code is None:
                continue
            if code in self.by_code:
                duplicates += 1
            else:
                self.by_code[code] = row
        if duplicates:
            logger.info("registry contains %d rows with a duplicate hidden code; lookups return the first row", duplicates)

        self.dim = int(embeddings.shape[1]) if embeddings.ndim == 2 else 0
        self.index = self._build_index(_normalise(embeddings.reshape(n, -1)), nprobe) if n else None
        logger.info("registry index built: %d rows, %d distinct codes, %s", n, len(self.by_code), self.kind)

    @property
    def kind(self) -> str:
        if self.index is None:
            return "empty"
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    def __len__(self) -> int:
        return len(self.image_ids)

    def _build_index(self, vectors: np.ndarray, nprobe: int) -> faiss.Index:
        n, dim = vectors.shape
        if n <= EXACT_SEARCH_MAX_ROWS:
            index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            return index

        n_lists = int(math.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        sample_size = min(n, n_lists * IVF_SAMPLE_PER_LIST)
        sample = vectors[np.random.default_rng(0).choice(n, sample_size, replace=False)]
        index.train(sample)
        index.add(vectors)
        index.nprobe = min(nprobe, n_lists)
        return index

    @classmethod
    def from_table(cls, table: pa.Table, nprobe: int = DEFAULT_NPROBE) -> RegistryIndex:
        """Build from registry rows with `image_id`, `hidden_code`, `code_embedding` and optional `label`."""
        missing = {"image_id", "hidden_code", "code_embedding"} - set(table.column_names)
        if missing:
            raise ValueError(f"registry table is missing columns {sorted(missing)}; has {table.column_names}")
        image_ids = table.column("image_id").to_pylist()
        labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(image_ids)
        codes = table.column("hidden_code").to_pylist()

        column = table.column("code_embedding").combine_chunks()
        if column.null_count:
            raise ValueError(f"registry has {column.null_count} rows without a code_embedding")
        if len(column) == 0:
            embeddings = np.zeros((0, 0), dtype=np.float32)
        else:
            embeddings = np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])
        return cls(image_ids, labels, codes, embeddings, nprobe=nprobe)

    def _code_key(self, row: np.ndarray) -> bytes:
        """Return the packed bytes of one query code, given packed (n_bytes,) or unpacked (n_bits,) uint8."""
        if self.code_bytes is not None and row.shape[0] == self.code_bytes:
            return row.astype(np.uint8).tobytes()
        return pack_code(row[None])[0]

    def lookup(
        self,
        code_bits: np.ndarray | torch.Tensor | None,
        embeddings: np.ndarray | torch.Tensor,
        code_valid: np.ndarray | list[bool] | None = None,
    ) -> list[Match | None]:
        """Find the registry row of each query.

        code_bits: (B, n) uint8, the hidden code either unpacked (one 0/1 bit
          per entry, as the tokenizer's `hidden_code` returns) or packed (the
          registry's byte width); None skips the exact match.
        embeddings: (B, D) code embeddings for the nearest-neighbour fallback.
        code_valid: (B,) bool, False for rows whose code is unknown (payload
          not decoded); None means every code is valid.
        Returns one Match per query; None when the registry is empty or, with
        the IVF index, when the probed lists hold no vector.
        """
        queries = _normalise(_as_numpy(embeddings).reshape(len(embeddings), -1))
        batch = queries.shape[0]
        if self.index is None:
            return [None] * batch
        if queries.shape[1] != self.dim:
            raise ValueError(f"query embeddings have {queries.shape[1]} dims, the registry has {self.dim}")

        matches: list[Match | None] = [None] * batch
        if code_bits is not None:
            codes = _as_numpy(code_bits)
            if codes.shape[0] != batch:
                raise ValueError(f"{codes.shape[0]} codes for {batch} embeddings")
            valid = np.ones(batch, dtype=bool) if code_valid is None else np.asarray(code_valid, dtype=bool)
            for i in np.flatnonzero(valid):
                row = self.by_code.get(self._code_key(codes[i]))
                if row is not None:
                    matches[i] = Match(self.image_ids[row], self.labels[row], 0.0, True)

        pending = [i for i, match in enumerate(matches) if match is None]
        if pending:
            similarity, rows = self.index.search(queries[pending], 1)
            for i, sim, row in zip(pending, similarity[:, 0], rows[:, 0]):
                if row < 0:
                    continue  # an IVF search found no vector in its probed lists
                matches[i] = Match(self.image_ids[row], self.labels[row], float(1.0 - sim), False)
        return matches
