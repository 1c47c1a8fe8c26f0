import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hcr_model.imaging import add_residual, resize_to, tensor_to_uint8, to_canonical, uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.watermark.base import Extraction, WatermarkBackend
from hcr_model.watermark.dct import WATERMARK_THRESHOLD, DctCarrier, blocks_dct, blocks_idct, dct_matrix

KEY = SecretKey(bytes(range(32)))
OTHER_KEY = SecretKey(bytes(range(1, 33)))


@pytest.fixture(scope="module")
def carrier() -> DctCarrier:
    return DctCarrier(KEY)


@pytest.fixture(scope="module")
def codec() -> PayloadCodec:
    return PayloadCodec(KEY)


def load(photos_dir, name: str) -> np.ndarray:
    return np.asarray(Image.open(photos_dir / name).convert("RGB"))


def protect(carrier: DctCarrier, rgb: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The engine's path: canonical -> embed -> residual resized to full size -> added -> uint8."""
    original = uint8_to_tensor(rgb)
    canonical = to_canonical(original)
    marked = carrier.embed(canonical, torch.from_numpy(bits)[None])
    return tensor_to_uint8(add_residual(original, resize_to(marked - canonical, original.shape[-2:])))


def read(carrier: DctCarrier, codec: PayloadCodec, rgb: np.ndarray):
    extraction = carrier.extract(to_canonical(uint8_to_tensor(rgb)))
    return extraction, codec.decode(extraction.soft_bits[0].numpy())


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_dct_is_orthonormal_and_invertible():
    matrix = dct_matrix()
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(8), atol=1e-6, rtol=0)
    luma = torch.rand(2, 1, 32, 48)
    coefficients = blocks_dct(luma, matrix)
    assert coefficients.shape == (2, 4 * 6, 64)
    torch.testing.assert_close(blocks_idct(coefficients, matrix, 32, 48), luma, atol=1e-5, rtol=0)


def test_carrier_implements_interface(carrier):
    assert isinstance(carrier, WatermarkBackend)
    assert (carrier.n_bits, carrier.resolution, carrier.grid) == (256, 256, 32)
    assert KEY.to_hex() not in repr(carrier)


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"])
def test_engine_path_round_trip(carrier, codec, photos_dir, name):
    rgb = load(photos_dir, name)
    code = np.random.default_rng(0).integers(0, 2, 140).astype(np.uint8)
    bits = codec.encode(1, code)
    protected = protect(carrier, rgb, bits)
    assert protected.shape == rgb.shape
    assert psnr(rgb, protected) > 40.0

    for received in (protected, jpeg(protected, 95), jpeg(protected, 75)):
        extraction, decoded = read(carrier, codec, received)
        assert isinstance(extraction, Extraction)
        assert decoded.payload_valid
        np.testing.assert_array_equal(decoded.code_bits, code)
        assert extraction.watermark_score[0] > WATERMARK_THRESHOLD
        assert extraction.bit_confidence[0] > 0.3


def test_extraction_shapes_and_ranges(carrier, codec, photos_dir):
    rgb = load(photos_dir, "coffee.jpg")
    bits = codec.encode(1, np.zeros(140, np.uint8))
    canonical = to_canonical(uint8_to_tensor(rgb)).repeat(3, 1, 1, 1)
    extraction = carrier.extract(carrier.embed(canonical, torch.from_numpy(np.stack([bits] * 3))))
    assert extraction.soft_bits.shape == (3, 256)
    assert extraction.soft_bits.abs().max() <= 1.0
    assert extraction.bit_confidence.shape == (3,)
    assert extraction.watermark_score.shape == (3,)
    assert ((extraction.watermark_score >= 0) & (extraction.watermark_score <= 1)).all()
    evidence = carrier.evidence(extraction, torch.from_numpy(np.stack([bits] * 3)))
    assert evidence.shape == (3, 1, 32, 32)
    assert evidence.max() < 0.2  # intact blocks agree with their bits


def test_unmarked_photos_score_low(carrier, codec, photos_dir):
    for path in sorted(photos_dir.glob("*.jpg")):
        extraction, decoded = read(carrier, codec, load(photos_dir, path.name))
        assert extraction.watermark_score[0] < 0.1, path.name
        assert not decoded.payload_valid, path.name


def test_wrong_key_reads_nothing(carrier, codec, photos_dir):
    rgb = load(photos_dir, "china.jpg")
    protected = protect(carrier, rgb, codec.encode(1, np.ones(140, np.uint8)))
    other_carrier, other_codec = DctCarrier(OTHER_KEY), PayloadCodec(OTHER_KEY)
    extraction, decoded = read(other_carrier, other_codec, protected)
    assert extraction.watermark_score[0] < WATERMARK_THRESHOLD
    assert not decoded.payload_valid


def test_pasted_region_decodes_and_localizes(carrier, codec, photos_dir):
    rgb = load(photos_dir, "flower.jpg")  # 512 x 342
    donor = load(photos_dir, "china.jpg")
    code = np.random.default_rng(1).integers(0, 2, 140).astype(np.uint8)
    bits = codec.encode(1, code)
    protected = protect(carrier, rgb, bits)

    # Paste a region of 25 % of the area (half of each side) from another photo.
    height, width = rgb.shape[:2]
    top, left, h, w = 40, 200, height // 2, width // 2
    edited = protected.copy()
    edited[top : top + h, left : left + w] = donor[top : top + h, left : left + w]

    extraction, decoded = read(carrier, codec, edited)
    assert decoded.payload_valid
    np.testing.assert_array_equal(decoded.code_bits, code)

    evidence = carrier.evidence(extraction, torch.from_numpy(codec.reencode(decoded))[None])[0, 0].numpy()
    mask = np.zeros((height, width), np.float32)
    mask[top : top + h, left : left + w] = 1
    inside = np.asarray(Image.fromarray(mask).resize((32, 32), Image.BOX))
    assert evidence[inside > 0.99].mean() > 0.35
    assert evidence[inside < 0.01].mean() < 0.1
    flagged = evidence > 0.25
    assert (flagged & (inside > 0.5)).sum() / flagged.sum() > 0.8  # precision
    assert (flagged & (inside > 0.5)).sum() / (inside > 0.5).sum() > 0.7  # recall


def test_grayscale_and_batch_of_sizes(carrier, codec, photos_dir):
    color = load(photos_dir, "astronaut.jpg")
    gray = np.asarray(Image.fromarray(color).convert("L"))
    images = [np.repeat(gray[:, :, None], 3, 2), color[:300, :451], color[::2, ::2]]
    rng = np.random.default_rng(2)
    codes = [rng.integers(0, 2, 140).astype(np.uint8) for _ in images]
    bits = np.stack([codec.encode(1, code) for code in codes])

    originals = [uint8_to_tensor(image) for image in images]
    canonical = torch.cat([to_canonical(x) for x in originals])
    residual = carrier.embed(canonical, torch.from_numpy(bits)) - canonical
    protected = [tensor_to_uint8(x + resize_to(residual[i : i + 1], x.shape[-2:])) for i, x in enumerate(originals)]

    extraction = carrier.extract(torch.cat([to_canonical(uint8_to_tensor(p)) for p in protected]))
    for i, code in enumerate(codes):
        decoded = codec.decode(extraction.soft_bits[i].numpy())
        assert decoded.payload_valid, i
        np.testing.assert_array_equal(decoded.code_bits, code)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (64, 64), (37, 90)])
def test_tiny_images_do_not_crash(carrier, codec, size):
    rgb = np.random.default_rng(3).integers(0, 256, (*size, 3), dtype=np.uint8)
    protected = protect(carrier, rgb, codec.encode(1, np.zeros(140, np.uint8)))
    assert protected.shape == rgb.shape
    extraction, decoded = read(carrier, codec, protected)
    assert extraction.soft_bits.shape == (1, 256)
    assert torch.isfinite(extraction.soft_bits).all()
    assert isinstance(decoded.payload_valid, bool)


def test_min_reliable_side_carries_payload(carrier, codec, photos_dir):
    # At the documented smallest side the payload survives storage as JPEG 90.
    rgb = load(photos_dir, "astronaut.jpg")
    side = carrier.min_reliable_side
    small = np.asarray(Image.fromarray(rgb).resize((side, side), Image.LANCZOS))
    code = np.random.default_rng(4).integers(0, 2, 140).astype(np.uint8)
    _, decoded = read(carrier, codec, jpeg(protect(carrier, small, codec.encode(1, code)), 90))
    assert decoded.payload_valid
    np.testing.assert_array_equal(decoded.code_bits, code)


def test_embedding_is_keyed(carrier, codec, photos_dir):
    canonical = to_canonical(uint8_to_tensor(load(photos_dir, "rocket.jpg")))
    bits = torch.from_numpy(codec.encode(1, np.zeros(140, np.uint8)))[None]
    mine = carrier.embed(canonical, bits) - canonical
    theirs = DctCarrier(OTHER_KEY).embed(canonical, bits) - canonical
    again = DctCarrier(KEY).embed(canonical, bits) - canonical
    torch.testing.assert_close(mine, again)
    assert (mine - theirs).abs().mean() > 0.5 * mine.abs().mean()


def test_bad_shapes_rejected(carrier):
    with pytest.raises(ValueError, match="256"):
        carrier.embed(torch.rand(1, 3, 128, 128), torch.zeros(1, 256, dtype=torch.uint8))
    with pytest.raises(ValueError, match="bits"):
        carrier.embed(torch.rand(2, 3, 256, 256), torch.zeros(1, 256, dtype=torch.uint8))
    with pytest.raises(ValueError):
        carrier.extract(torch.rand(1, 1, 256, 256))
    with pytest.raises(ValueError, match="multiple of 8"):
        DctCarrier(KEY, resolution=250)


def test_empty_batch(carrier):
    empty = torch.zeros(0, 3, 256, 256)
    assert carrier.embed(empty, torch.zeros(0, 256, dtype=torch.uint8)).shape == (0, 3, 256, 256)
