"""Crop synchronisation: the keyed stripe template, the crop search and the audit of a cropped image."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from hcr_model.bench.measure_forgery import copy_watermark, estimate_watermark
from hcr_model.imaging import add_residual, resize_to, rgb_to_luma, tensor_to_uint8, to_canonical, uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.watermark.dct import WATERMARK_THRESHOLD, DctCarrier
from hcr_model.watermark.reading import SYNC_ZSCORE_MIN, read_received
from hcr_model.watermark.sync import AMPLITUDE, HIGH_HARMONICS, Alignment, SyncTemplate, crop_region, to_protected_frame, to_received_frame

KEY = SecretKey(bytes(range(32)))
OTHER_KEY = SecretKey(bytes(range(1, 33)))
CODEC = PayloadCodec(KEY)
CODE = np.random.default_rng(7).integers(0, 2, CODEC.code_bits).astype(np.uint8)
BITS = CODEC.encode(1, CODE)  # (256,) carrier bits of a real payload


@pytest.fixture(scope="module")
def carrier() -> DctCarrier:
    return DctCarrier(KEY)


def load(photos_dir, name: str) -> np.ndarray:
    return np.asarray(Image.open(photos_dir / name).convert("RGB"))


def protect(carrier: DctCarrier, rgb: np.ndarray) -> np.ndarray:
    original = uint8_to_tensor(rgb)
    canonical = to_canonical(original)
    marked = carrier.embed(canonical, torch.from_numpy(BITS)[None])
    return tensor_to_uint8(add_residual(original, resize_to(marked - canonical, original.shape[-2:])))


def crop(rgb: np.ndarray, area: float, top_share: float = 0.5, left_share: float = 0.5):
    """Keep `area` of the pixels; the window's free room is split by the shares. Returns the crop and its (top, left)."""
    height, width = rgb.shape[:2]
    side = math.sqrt(area)
    crop_h, crop_w = round(height * side), round(width * side)
    top, left = round((height - crop_h) * top_share), round((width - crop_w) * left_share)
    return np.ascontiguousarray(rgb[top : top + crop_h, left : left + crop_w]), (top, left)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_sync_template_keyed_amplitude():
    pattern = SyncTemplate(KEY).pattern()
    assert pattern.shape == (1, 1, 256, 256)
    assert float(pattern.pow(2).mean().sqrt()) == pytest.approx(AMPLITUDE, rel=0.1)
    torch.testing.assert_close(pattern, SyncTemplate(KEY).pattern())
    other = SyncTemplate(OTHER_KEY).pattern()
    correlation = float((pattern * other).mean() / (pattern.std() * other.std()))
    assert abs(correlation) < 0.2


def test_carrier_without_template_omits_it(photos_dir):
    rgb = load(photos_dir, "chelsea.jpg")
    canonical = to_canonical(uint8_to_tensor(rgb))
    plain = DctCarrier(KEY, sync_template=False)
    assert plain.sync is None
    assert plain.read_synchronised(canonical) is None
    with_template = DctCarrier(KEY).embed(canonical, torch.from_numpy(BITS)[None])
    without = plain.embed(canonical, torch.from_numpy(BITS)[None])
    assert float((with_template - without).abs().max()) > 1 / 255


@pytest.mark.parametrize(
    ("name", "area", "top_share", "left_share", "post"),
    [
        ("chelsea.jpg", 0.75, 0.5, 0.5, None),
        ("coffee.jpg", 0.7, 0.1, 0.9, None),
        ("astronaut.jpg", 0.9, 1.0, 0.0, 75),
    ],
)
def test_crop_search_reads_cropped_image(carrier, photos_dir, name, area, top_share, left_share, post):
    rgb = load(photos_dir, name)
    height, width = rgb.shape[:2]
    received, (top, left) = crop(protect(carrier, rgb), area, top_share, left_share)
    if post is not None:
        received = jpeg(received, post)

    # The canonical grid of the crop carries nothing readable.
    plain = carrier.extract(to_canonical(uint8_to_tensor(received)))
    assert float(plain.watermark_score[0]) < WATERMARK_THRESHOLD

    extraction, alignment = carrier.read_synchronised(uint8_to_tensor(received))
    accuracy = float(((extraction.soft_bits[0] > 0).numpy().astype(np.uint8) == BITS).mean())
    assert accuracy >= 0.97
    assert alignment.score >= SYNC_ZSCORE_MIN
    assert alignment.scale_x == pytest.approx(256 / width, rel=0.003)
    assert alignment.scale_y == pytest.approx(256 / height, rel=0.003)
    assert alignment.offset_x == pytest.approx(left * 256 / width, abs=0.5)
    assert alignment.offset_y == pytest.approx(top * 256 / height, abs=0.5)
    decoded = CODEC.decode(extraction.soft_bits[0].numpy())
    assert decoded.payload_valid
    np.testing.assert_array_equal(decoded.code_bits, CODE)


def test_read_received_searches_only_unmarked_reads(carrier, photos_dir):
    rgb = load(photos_dir, "rocket.jpg")
    protected = protect(carrier, rgb)
    images = [protected, crop(protected, 0.75)[0], crop(rgb, 0.75)[0]]  # whole, cropped, unmarked crop
    canonical = torch.cat([to_canonical(uint8_to_tensor(image)) for image in images])
    reading = read_received(carrier, canonical, images)

    assert reading.alignments[0] is None  # read on the canonical grid, no search
    assert reading.alignments[1] is not None
    assert reading.alignments[2] is None
    assert reading.synchronised == [1]
    scores = reading.extraction.watermark_score
    assert float(scores[0]) > WATERMARK_THRESHOLD
    assert float(scores[1]) > WATERMARK_THRESHOLD
    assert float(scores[2]) < WATERMARK_THRESHOLD
    accuracy = float(((reading.extraction.soft_bits[1] > 0).numpy().astype(np.uint8) == BITS).mean())
    assert accuracy >= 0.97


def test_crop_search_other_key_finds_nothing(photos_dir):
    received, _ = crop(protect(DctCarrier(KEY), load(photos_dir, "chelsea.jpg")), 0.75)
    _, alignment = DctCarrier(OTHER_KEY).read_synchronised(uint8_to_tensor(received))
    assert alignment.score < SYNC_ZSCORE_MIN


def test_frame_maps_invert_inside_crop():
    alignment = Alignment(scale_x=0.5, scale_y=0.4, offset_x=20.0, offset_y=12.0)
    size = (500, 400)  # (H, W) received pixels: covers x 20-220, y 12-212 of the protected grid
    region = crop_region(alignment, size, 256)
    assert bool(region[0, 0, 100, 100])
    assert not bool(region[0, 0, 5, 100])
    assert not bool(region[0, 0, 100, 230])

    ramp = torch.arange(256, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 1, 256, 256).contiguous()
    received = to_received_frame(ramp, alignment, size, 256)
    # Received canonical pixel 0 sits at received x = 400 / 256 * 0.5, protected x = 20 + 0.5 * that.
    assert float(received[0, 0, 0, 0]) == pytest.approx(20 + 0.5 * 0.5 * 400 / 256 - 0.5, abs=0.05)
    back = to_protected_frame(received, alignment, size, 256)
    inner = region.clone()
    inner[..., :, :24] = inner[..., :, 216:] = False  # leave the border pixels out
    torch.testing.assert_close(back[inner], ramp[inner], atol=0.1, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (8, 300), (31, 45), (300, 8)])
def test_read_received_tiny_and_thin_images(carrier, height, width):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    reading = read_received(carrier, to_canonical(uint8_to_tensor(image)), [image])
    assert reading.alignments == [None]
    assert float(reading.extraction.watermark_score[0]) < WATERMARK_THRESHOLD


def canonical_luma(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 1, R, R) canonical luma in grey levels."""
    return rgb_to_luma(to_canonical(uint8_to_tensor(rgb))) * 255.0


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"])
def test_template_presence_separates_protected_from_unmarked(carrier, photos_dir, name):
    rgb = load(photos_dir, name)
    protected = protect(carrier, rgb)
    zscores = carrier.sync.presence_zscore(torch.cat([canonical_luma(protected), canonical_luma(jpeg(protected, 75)), canonical_luma(rgb)]))
    assert zscores.shape == (3,)
    # Protected photos score 5-100 on the val split, unmarked ones about N(0, 1).
    assert zscores[0] > 8
    assert zscores[1] > 6
    assert abs(float(zscores[2])) < 4


def test_template_presence_key_and_grid(carrier, photos_dir):
    protected = protect(carrier, load(photos_dir, "astronaut.jpg"))
    assert abs(float(SyncTemplate(OTHER_KEY).presence_zscore(canonical_luma(protected))[0])) < 4
    # A crop moves the template off the canonical grid's alignment.
    cropped, _ = crop(protected, 0.75)
    assert abs(float(carrier.sync.presence_zscore(canonical_luma(cropped))[0])) < 4
    with pytest.raises(ValueError, match="canonical luma of 256 x 256"):
        carrier.sync.presence_zscore(torch.zeros(1, 1, 128, 128))


def test_high_harmonics_copy_versus_blur(carrier, photos_dir):
    protected = protect(carrier, load(photos_dir, "chelsea.jpg"))
    copy = copy_watermark(estimate_watermark(protected, "median3"), load(photos_dir, "coffee.jpg"))
    blurred = np.asarray(Image.fromarray(protected).filter(ImageFilter.GaussianBlur(3)))
    high = carrier.sync.presence_zscore(torch.cat([canonical_luma(copy), canonical_luma(blurred)]), HIGH_HARMONICS)
    assert high[0] > 6  # the copy carries the high harmonics
    assert high[1] < 4  # blur removed them from the genuine image
    with pytest.raises(ValueError, match="invalid harmonics"):
        carrier.sync.presence_zscore(canonical_luma(copy), (5, 7))
    with pytest.raises(ValueError, match="invalid harmonics"):
        carrier.sync.presence_zscore(canonical_luma(copy), ())
