"""The audit of a copy attack: one protected photo's watermark added to another photo, with the shipped weights."""

import io

import numpy as np
import pytest
from PIL import Image

from hcr_model.bench.measure_forgery import copy_watermark, estimate_watermark
from hcr_model.bundle import load_bundle
from hcr_model.engine import Auditor, ImageInput, Protector
from hcr_model.keys import SecretKey

KEY = SecretKey(bytes(range(32)))


@pytest.fixture(scope="module")
def photos(photos_dir):
    """Original and protected astronaut, original chelsea and rocket."""
    bundle = load_bundle(device="cpu")
    originals = {name: np.asarray(Image.open(photos_dir / name).convert("RGB")) for name in ("astronaut.jpg", "chelsea.jpg", "rocket.jpg")}
    (protected,) = Protector(bundle, KEY).protect_batch([ImageInput("astronaut", originals["astronaut.jpg"])])
    return Auditor(bundle, KEY, None), originals, protected.protected_rgb


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_copied_watermark_is_forged(photos):
    auditor, originals, protected = photos
    oracle = copy_watermark(estimate_watermark(protected, "oracle", originals["astronaut.jpg"]), originals["chelsea.jpg"])
    denoised = copy_watermark(estimate_watermark(protected, "median3x2"), originals["rocket.jpg"])

    results = auditor.audit_batch([ImageInput("oracle-copy", oracle), ImageInput("median-copy", denoised), ImageInput("chelsea", originals["chelsea.jpg"])])

    for copy in results[:2]:
        assert copy.verdict == "forged"
        assert not copy.payload_valid
        assert copy.mask is None
        assert copy.restored_crop is None
        assert any(note.startswith("copied watermark: the keyed sync template is in place") for note in copy.notes)
    # The target photo itself carries nothing.
    assert results[2].verdict == "unmarked"
    assert not any(note.startswith("copied") for note in results[2].notes)


def test_processed_protected_photo_is_not_a_copy(photos):
    auditor, _, protected = photos
    results = auditor.audit_batch([ImageInput("jpeg50", jpeg(protected, 50)), ImageInput("jpeg30", jpeg(protected, 30))])
    for result in results:
        assert result.verdict != "forged"
        assert not any(note.startswith("copied") for note in result.notes)
