"""Decode image bytes to RGB uint8 and encode protected images back to their format.

Decoding accepts every Pillow mode the allowed formats produce (1, L, P, LA,
PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F, ...), applies the EXIF orientation and
keeps the alpha channel aside. Only raster formats in `DECODE_FORMATS` are
opened: Pillow's EPS reader, for one, runs Ghostscript on the input.
"""

import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# 64 megapixels (8000 x 8000). The check runs on the header before any pixel
# is decoded, because the models then hold several float32 copies of each
# image (about 0.8 GB at this size). NOTE: Pillow itself rejects images above 2 x
# Image.MAX_IMAGE_PIXELS (about 179 MP in Pillow 13), whatever this limit is.
DEFAULT_MAX_PIXELS = 64_000_000

# JPEG's opener also returns MPO (multi-picture) files.
DECODE_FORMATS = (
    "JPEG", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF", "JPEG2000", "AVIF", "PPM", "TGA", "QOI", "ICO",
)

# Formats a protected copy keeps. ICO is left out because Pillow writes icons
# at 256 px at most; other inputs fall back to PNG.
ENCODE_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF", "JPEG2000", "AVIF", "PPM", "TGA", "QOI")

# Extensions (lower case, with the dot) that the archive listing treats as images.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".webp", ".tif", ".tiff", ".bmp", ".dib", ".gif",
        ".jp2", ".j2k", ".jpx", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".ico",
    }
)

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_EXIF_ORIENTATION = 0x0112
_EXIF_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}  # formats whose EXIF a protected copy keeps


class ImageDecodeError(ValueError):
    """An image could not be read; `name` is the image id, `reason` what failed."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"cannot decode image {name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class DecodedImage:
    """One decoded image at its full size, after EXIF orientation."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, None when the image has no transparency
    format: str  # Pillow format name of the input, e.g. "JPEG"
    mode: str  # Pillow mode of the input frame, e.g. "CMYK" or "I;16"
    notes: list[str] = field(default_factory=list)
    icc_profile: bytes | None = None  # kept only when the pixels are still in that profile
    exif: bytes | None = None  # EXIF of the input with the orientation reset to 1


def _sixteen_bit_to_uint8(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 from a 16-bit or 32-bit integer grey image, by its top 8 of 16 bits."""
    values = np.asarray(image, dtype=np.int64)
    if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
        # Mode I can hold any int32: scale its actual range instead.
        low, high = int(values.min()), int(values.max())
        scaled = (values - low) * 255 // max(high - low, 1)
        return scaled.astype(np.uint8)
    return (values >> 8).astype(np.uint8)


def _float_to_uint8(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 from a float grey image; [0, 1] data is scaled, larger data is taken as 0..255."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if values.max(initial=0.0) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Convert CMYK through its embedded ICC profile when it has one, else with Pillow's formula."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as error:
            notes.append(f"CMYK ICC profile unusable ({error}); converted without it")
    else:
        notes.append("CMYK without an ICC profile: colours converted approximately")
    return image.convert("RGB")


def _split_rgb_alpha(image: Image.Image, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Return (rgb (H, W, 3) uint8, alpha (H, W) uint8 or None, profile_kept)."""
    mode = image.mode
    has_transparency = "transparency" in image.info

    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = _sixteen_bit_to_uint8(image)
        notes.append(f"{mode} input reduced to 8 bits per channel")
        return np.repeat(grey[:, :, None], 3, axis=2), None, False
    if mode == "F":
        grey = _float_to_uint8(image)
        notes.append("32-bit float input reduced to 8 bits per channel")
        return np.repeat(grey[:, :, None], 3, axis=2), None, False
    if mode == "CMYK":
        return np.array(_cmyk_to_rgb(image, notes), dtype=np.uint8), None, False

    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and has_transparency):
        rgba = np.array(image.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3]), mode == "RGBA"
    # np.array copies: arrays that view Pillow's buffer are read-only, and torch warns on those.
    return np.array(image.convert("RGB"), dtype=np.uint8), None, mode == "RGB"


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode one image; raise ImageDecodeError naming `name` on any failure.

    An animated or multi-page file yields its first frame and a note. An image
    with more than `max_pixels` pixels is rejected from its header, before its
    pixels are decoded.
    """
    if not data:
        raise ImageDecodeError(name, "the file is empty (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # This module enforces its own limit below; Pillow's warning between
            # its default and ours adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()
            formats = [known for known in DECODE_FORMATS if known in Image.OPEN]
            image = Image.open(io.BytesIO(data), formats=formats)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    name, f"{width} x {height} = {width * height} pixels exceeds the limit of {max_pixels} (--max-pixels)"
                )

            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                image.seek(0)
                notes.append(f"first frame of {frames} used; the other frames were ignored")
            image.load()
            source_format, source_mode = image.format or "unknown", image.mode
            orientation = _orientation(image)
            # exif_transpose also drops the orientation tag from the copy's EXIF.
            oriented = ImageOps.exif_transpose(image)
            exif = oriented.getexif() if source_format in _EXIF_FORMATS else None
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, f"not a supported image format (accepted: {', '.join(DECODE_FORMATS)})") from None
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(name, f"rejected as a decompression bomb: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageDecodeError(name, f"corrupt or truncated image data: {error}") from None

    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied")
    try:
        rgb, alpha, profile_kept = _split_rgb_alpha(oriented, notes)
    except (OSError, ValueError) as error:
        raise ImageDecodeError(name, f"cannot convert mode {source_mode} to RGB: {error}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ImageDecodeError(name, f"decoded to an unusable array of shape {rgb.shape}")

    return DecodedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=alpha,
        format=source_format,
        mode=source_mode,
        notes=notes,
        icc_profile=oriented.info.get("icc_profile") if profile_kept else None,
        exif=exif.tobytes() if exif else None,
    )


@dataclass
class EncodedImage:
    """A protected image ready to write."""

    data: bytes
    format: str  # Pillow format actually written
    extension: str | None  # extension to append to the name when the format changed, else None
    notes: list[str]


def encode_image(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    source_format: str,
    jpeg_quality: int = 95,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> EncodedImage:
    """Encode (H, W, 3) uint8 pixels (plus optional (H, W) alpha) in the input's format.

    JPEG is written at `jpeg_quality`, WebP and AVIF at the same quality, PNG
    and TIFF losslessly. Other formats (see ENCODE_FORMATS) fall back to PNG
    and report the extension to append, so the file name never lies about its
    content.
    """
    Image.init()
    notes: list[str] = []
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    if alpha is not None:
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha, dtype=np.uint8), mode="L"))

    target, extension = source_format.upper(), None
    if target == "MPO":
        target = "JPEG"  # the first frame only, as decoded
    if target not in ENCODE_FORMATS or target not in Image.SAVE:
        notes.append(f"protected copy of the {source_format} input saved as PNG")
        target, extension = "PNG", ".png"

    options: dict = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif and target in ("JPEG", "PNG", "WEBP"):
        options["exif"] = exif
    if target == "JPEG":
        if image.mode == "RGBA":
            image = image.convert("RGB")
            notes.append("JPEG cannot store alpha: transparency dropped")
        options["quality"] = jpeg_quality
    elif target in ("WEBP", "AVIF"):
        options["quality"] = jpeg_quality
    elif target == "GIF":
        # NOTE: GIF's 256-colour palette quantizes the pixels, which weakens the watermark.
        notes.append("GIF palette quantization may weaken the watermark")

    buffer = io.BytesIO()
    image.save(buffer, format=target, **options)
    return EncodedImage(data=buffer.getvalue(), format=target, extension=extension, notes=notes)


def encode_png(array: np.ndarray) -> bytes:
    """Encode an (H, W) bool/uint8 mask or an (H, W, 3) uint8 image as PNG; True becomes white."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
