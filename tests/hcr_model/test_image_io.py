"""Image decoding of every Pillow mode, EXIF orientation, limits, and encoding in the input's format."""

import io

import numpy as np
import pytest
from PIL import Image

from hcr_model.image_io import ImageDecodeError, decode_image, encode_image, encode_png


@pytest.fixture(scope="module")
def photo(photos_dir) -> Image.Image:
    return Image.open(photos_dir / "chelsea.jpg").convert("RGB")  # 451 x 300


def _bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_jpeg_decodes_to_rgb(photos_dir):
    decoded = decode_image((photos_dir / "chelsea.jpg").read_bytes(), "chelsea.jpg")
    assert decoded.rgb.shape == (300, 451, 3)
    assert decoded.rgb.dtype == np.uint8
    assert decoded.alpha is None
    assert decoded.format == "JPEG"
    assert decoded.notes == []
    assert decoded.rgb.flags.writeable


@pytest.mark.parametrize("orientation, shape", [(1, (300, 451, 3)), (3, (300, 451, 3)), (6, (451, 300, 3)), (8, (451, 300, 3))])
def test_exif_orientation_applied(photo, orientation, shape):
    exif = photo.getexif()
    exif[0x0112] = orientation
    decoded = decode_image(_bytes(photo, "JPEG", exif=exif.tobytes()), "o.jpg")
    assert decoded.rgb.shape == shape
    assert (f"EXIF orientation {orientation} applied" in decoded.notes) == (orientation != 1)


def test_orientation_rotates_pixels(photo):
    exif = photo.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    upright = decode_image(_bytes(photo, "PNG"), "u.png").rgb
    rotated = decode_image(_bytes(photo, "PNG", exif=exif.tobytes()), "r.png").rgb
    assert np.array_equal(rotated, np.rot90(upright, k=-1))


def test_alpha_kept_aside(photo):
    rgba = photo.copy()
    alpha = np.zeros((300, 451), np.uint8)
    alpha[:, 200:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    decoded = decode_image(_bytes(rgba, "PNG"), "a.png")
    assert decoded.rgb.shape == (300, 451, 3)
    assert np.array_equal(decoded.alpha, alpha)
    assert np.array_equal(decoded.rgb, np.asarray(photo))


@pytest.mark.parametrize(
    "mode, fmt, has_alpha, note",
    [
        ("L", "PNG", False, None),
        ("1", "PNG", False, None),
        ("P", "PNG", False, None),
        ("LA", "PNG", True, None),
        ("CMYK", "JPEG", False, "CMYK without an ICC profile"),
        ("CMYK", "TIFF", False, "CMYK without an ICC profile"),
        ("YCbCr", "JPEG", False, None),
        ("RGB", "WEBP", False, None),
        ("RGB", "BMP", False, None),
        ("RGB", "TIFF", False, None),
    ],
)
def test_modes_decode(photo, mode, fmt, has_alpha, note):
    decoded = decode_image(_bytes(photo.convert(mode), fmt), f"x.{fmt.lower()}")
    assert decoded.rgb.shape == (300, 451, 3)
    assert decoded.rgb.dtype == np.uint8
    assert (decoded.alpha is not None) == has_alpha
    if note:
        assert any(note in text for text in decoded.notes)


def test_sixteen_bit_scaled(photo):
    grey = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    decoded = decode_image(_bytes(Image.fromarray(grey), "PNG"), "g16.png")
    assert np.array_equal(decoded.rgb[:, :, 0], np.asarray(photo.convert("L")))
    assert any("reduced to 8 bits" in note for note in decoded.notes)


def test_palette_transparency_becomes_alpha(photo):
    palette = photo.convert("P")
    decoded = decode_image(_bytes(palette, "PNG", transparency=0), "t.png")
    assert decoded.alpha is not None
    assert decoded.alpha.min() == 0


def test_animated_first_frame(photo):
    frames = [photo.convert("P"), photo.rotate(180).convert("P")]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data, "anim.gif")
    first = decode_image(_bytes(frames[0], "GIF"), "first.gif")
    assert np.array_equal(decoded.rgb, first.rgb)
    assert "first frame of 2 used" in decoded.notes[0]


def test_pixel_limit(photo):
    with pytest.raises(ImageDecodeError, match=r"big\.jpg.*451 x 300 = 135300 pixels exceeds the limit of 100000"):
        decode_image(_bytes(photo, "JPEG"), "big.jpg", max_pixels=100_000)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a supported image format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a supported image format"),
    ],
)
def test_unreadable_named(data, message):
    with pytest.raises(ImageDecodeError, match=message) as raised:
        decode_image(data, "dir/bad.jpg")
    assert raised.value.name == "dir/bad.jpg"
    assert "dir/bad.jpg" in str(raised.value)


def test_truncated_named(photo):
    data = _bytes(photo, "JPEG")[:3000]
    with pytest.raises(ImageDecodeError, match="cut.jpg: corrupt or truncated"):
        decode_image(data, "cut.jpg")


def test_encode_jpeg_quality(photo):
    rgb = np.asarray(photo)
    encoded = encode_image(rgb, None, "JPEG", jpeg_quality=95)
    assert encoded.format == "JPEG"
    assert encoded.extension is None
    back = Image.open(io.BytesIO(encoded.data))
    assert back.format == "JPEG"
    # Quality 95 keeps the pixels close: mean absolute error under 2 levels.
    assert np.abs(np.asarray(back).astype(int) - rgb).mean() < 2.0


def test_encode_png_with_alpha_lossless(photo):
    rgb = np.asarray(photo)
    alpha = np.full((300, 451), 128, np.uint8)
    encoded = encode_image(rgb, alpha, "PNG")
    back = np.asarray(Image.open(io.BytesIO(encoded.data)))
    assert back.shape == (300, 451, 4)
    assert np.array_equal(back[:, :, :3], rgb)
    assert np.array_equal(back[:, :, 3], alpha)


def test_encode_keeps_exif_without_orientation(photo):
    exif = photo.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    decoded = decode_image(_bytes(photo, "JPEG", exif=exif.tobytes()), "e.jpg")
    encoded = encode_image(decoded.rgb, None, decoded.format, exif=decoded.exif)
    kept = Image.open(io.BytesIO(encoded.data)).getexif()
    assert kept.get(0x010F) == "TestCam"
    assert kept.get(0x0112) in (None, 1)


def test_encode_unwritable_falls_back_to_png(photo):
    encoded = encode_image(np.asarray(photo), None, "ICO")
    assert encoded.format == "PNG"
    assert encoded.extension == ".png"
    assert Image.open(io.BytesIO(encoded.data)).format == "PNG"


def test_encode_png_mask_white_is_true():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    back = np.asarray(Image.open(io.BytesIO(encode_png(mask))))
    assert back.dtype == np.uint8
    assert np.array_equal(back == 255, mask)
