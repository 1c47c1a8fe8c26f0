import numpy as np
import pyarrow as pa
import pytest

from hcr_model import retrieval
from hcr_model.retrieval import RegistryIndex, pack_code

N_BITS = 140
DIM = 32


def _registry(n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n, N_BITS), dtype=np.uint8)
    embeddings = rng.normal(size=(n, DIM)).astype(np.float32)
    table = pa.table(
        {
            "image_id": [f"img/{i:05d}.jpg" for i in range(n)],
            "hidden_code": pa.array(pack_code(bits), type=pa.binary()),
            "code_embedding": pa.array(embeddings.tolist(), type=pa.list_(pa.float32())),
            "label": [f"class{i % 7}" for i in range(n)],
        }
    )
    return table, bits, embeddings


def test_pack_code_msb_first():
    bits = np.zeros((1, 10), dtype=np.uint8)
    bits[0, 0] = 1
    bits[0, 9] = 1
    assert pack_code(bits) == [bytes([0b1000_0000, 0b0100_0000])]


def test_exact_match_unpacked_and_packed():
    table, bits, embeddings = _registry(200)
    index = RegistryIndex.from_table(table)
    # Embeddings of other rows: the exact code must win over the neighbour search.
    queries = embeddings[[5, 6, 7]]
    for codes in (bits[[10, 11, 12]], np.packbits(bits[[10, 11, 12]], axis=1)):
        matches = index.lookup(codes, queries)
        assert [m.image_id for m in matches] == ["img/00010.jpg", "img/00011.jpg", "img/00012.jpg"]
        assert all(m.exact for m in matches)
        assert all(m.distance == 0.0 for m in matches)
        assert matches[0].label == "class3"


def test_unknown_code_falls_back_to_neighbour():
    table, bits, embeddings = _registry(200)
    index = RegistryIndex.from_table(table)
    code = bits[[42]].copy()
    code[0, 0] ^= 1  # one flipped bit is no longer an exact match
    noisy = embeddings[[42]] + 0.05 * np.random.default_rng(1).normal(size=(1, DIM)).astype(np.float32)

    (match,) = index.lookup(code, noisy)
    assert match.image_id == "img/00042.jpg"
    assert not match.exact
    assert 0.0 < match.distance < 0.05


def test_invalid_code_skips_exact_match():
    table, bits, embeddings = _registry(50)
    index = RegistryIndex.from_table(table)
    matches = index.lookup(bits[[3, 4]], embeddings[[8, 9]], code_valid=[False, True])
    assert matches[0].image_id == "img/00008.jpg"
    assert not matches[0].exact
    assert matches[1].image_id == "img/00004.jpg"
    assert matches[1].exact


def test_distance_is_one_minus_cosine():
    table, _, embeddings = _registry(20)
    index = RegistryIndex.from_table(table)
    (match,) = index.lookup(None, -embeddings[[0]])
    assert not match.exact
    # The query is opposite to row 0, so its nearest row is another one with cosine < 1.
    assert match.image_id != "img/00000.jpg"
    query = embeddings[0] / np.linalg.norm(embeddings[0])
    best = embeddings[int(match.image_id[4:9])]
    expected = 1.0 + float(query @ (best / np.linalg.norm(best)))
    assert match.distance == pytest.approx(expected, abs=1e-5)


def test_duplicate_code_keeps_first_row():
    table, bits, embeddings = _registry(10)
    duplicated = pa.concat_tables([table, table.slice(3, 1).set_column(0, "image_id", pa.array(["copy.jpg"]))])
    index = RegistryIndex.from_table(duplicated)
    (match,) = index.lookup(bits[[3]], embeddings[[3]])
    assert match.image_id == "img/00003.jpg"


def test_empty_registry_returns_none():
    table, _, embeddings = _registry(0)
    index = RegistryIndex.from_table(table)
    assert len(index) == 0
    assert index.lookup(None, np.zeros((2, DIM), dtype=np.float32)) == [None, None]


def test_wrong_embedding_width_raises():
    table, bits, _ = _registry(10)
    index = RegistryIndex.from_table(table)
    with pytest.raises(ValueError, match="dims"):
        index.lookup(bits[:1], np.zeros((1, DIM + 1), dtype=np.float32))


def test_missing_column_raises():
    table, _, _ = _registry(5)
    with pytest.raises(ValueError, match="code_embedding"):
        RegistryIndex.from_table(table.drop_columns(["code_embedding"]))


def test_ivf_index_above_threshold(monkeypatch):
    # A low threshold exercises the large-registry path without a 100k-row table.
    monkeypatch.setattr(retrieval, "EXACT_SEARCH_MAX_ROWS", 1_000)
    table, bits, embeddings = _registry(4_000)
    index = RegistryIndex.from_table(table)
    assert index.kind == "ivf"

    rows = np.arange(0, 4_000, 97)
    noisy = embeddings[rows] + 0.05 * np.random.default_rng(2).normal(size=(len(rows), DIM)).astype(np.float32)
    matches = index.lookup(None, noisy)
    hits = sum(m is not None and m.image_id == f"img/{r:05d}.jpg" for m, r in zip(matches, rows))
    assert hits / len(rows) >= 0.9
    assert index.lookup(bits[[7]], embeddings[[0]])[0].image_id == "img/00007.jpg"
