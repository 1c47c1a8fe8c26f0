"""Peer watermarks from invisible-watermark 0.2.0, run side by side with hcr.

`Peer(name)` wraps one of the package's methods behind RGB uint8 arrays and
32-bit payloads. The methods are "dwtDct" (DWT + block DCT on the U
channel), "dwtDctSvd" (DWT + DCT + SVD) and "rivaGan". RivaGAN's encoder and
decoder are ONNX models inside the package's wheel, so nothing downloads.
RivaGAN carries only 32 bits, so all three carry 32 bits for a like-for-like
comparison.

The package works on OpenCV's BGR order and needs at least 256 x 256 pixels
(H * W >= 65536). It is installed with `--no-deps` next to opencv,
PyWavelets and onnxruntime.
"""

from __future__ import annotations

import logging
import os
import threading

import imwatermark
import numpy as np
import onnxruntime
from imwatermark import WatermarkDecoder, WatermarkEncoder
from imwatermark.rivaGan import RivaWatermark

logger = logging.getLogger(__name__)

PEER_NAMES = ("dwtDct", "dwtDctSvd", "rivaGan")
PEER_BITS = 32
# invisible-watermark 0.2.0 raises RuntimeError below this many pixels.
MIN_PIXELS = 256 * 256

_riva_lock = threading.Lock()


def _load_rivagan(num_threads: int) -> None:
    """Load RivaGAN's ONNX sessions once per process, with a bounded thread count.

    The package's own `loadModel` builds sessions with onnxruntime's default
    thread count (one per core). Its encoder and decoder read the sessions
    from class attributes, which this sets.
    """
    with _riva_lock:
        if RivaWatermark.encoder is not None and RivaWatermark.decoder is not None:
            return
        model_dir = os.path.dirname(os.path.abspath(imwatermark.__file__))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        RivaWatermark.encoder = onnxruntime.InferenceSession(
            os.path.join(model_dir, "rivagan_encoder.onnx"), options, providers=providers
        )
        RivaWatermark.decoder = onnxruntime.InferenceSession(
            os.path.join(model_dir, "rivagan_decoder.onnx"), options, providers=providers
        )
        logger.info("loaded RivaGAN ONNX models from %s (%d threads)", model_dir, num_threads)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if image.shape[0] * image.shape[1] < MIN_PIXELS:
        raise ValueError(
            f"image of {image.shape[1]}x{image.shape[0]} px is too small for invisible-watermark; "
            "it needs at least 65536 pixels (256 x 256)"
        )


class Peer:
    """One invisible-watermark method with a 32-bit payload."""

    def __init__(self, name: str, num_threads: int = 1):
        if name not in PEER_NAMES:
            raise ValueError(f"unknown peer {name!r}; expected one of {PEER_NAMES}")
        self.name = name
        self.n_bits = PEER_BITS
        if name == "rivaGan":
            _load_rivagan(num_threads)

    def embed(self, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Embed `bits` ((32,) 0/1) into `image` ((H, W, 3) uint8 RGB); returns RGB uint8."""
        _check_image(image)
        bits = np.asarray(bits).astype(np.int64).reshape(-1)
        if bits.shape != (PEER_BITS,) or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"bits must be {PEER_BITS} values of 0 or 1, got shape {bits.shape}")

        encoder = WatermarkEncoder()
        encoder.set_watermark("bits", bits.tolist())
        bgr = np.ascontiguousarray(image[..., ::-1])
        marked = encoder.encode(bgr, self.name)
        return np.ascontiguousarray(marked[..., ::-1])

    def extract(self, image: np.ndarray) -> np.ndarray:
        """Read the 32-bit payload from `image` ((H, W, 3) uint8 RGB); returns (32,) uint8 0/1."""
        _check_image(image)
        decoder = WatermarkDecoder("bits", PEER_BITS)
        bgr = np.ascontiguousarray(image[..., ::-1])
        bits = decoder.decode(bgr, self.name)
        return np.asarray(bits).astype(np.uint8).reshape(-1)
