"""The audit of a cropped protected image, with the shipped weights."""

import math

import numpy as np
import pytest
from PIL import Image

from hcr_model.bundle import load_bundle
from hcr_model.engine import Auditor, ImageInput, Protector
from hcr_model.keys import SecretKey

KEY = SecretKey(bytes(range(32)))


@pytest.fixture(scope="module")
def engines():
    bundle = load_bundle(device="cpu")
    return Protector(bundle, KEY), Auditor(bundle, KEY, None)


def centre_crop(rgb: np.ndarray, area: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    side = math.sqrt(area)
    crop_h, crop_w = round(height * side), round(width * side)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return np.ascontiguousarray(rgb[top : top + crop_h, left : left + crop_w])


@pytest.mark.parametrize("name", ["astronaut.jpg", "rocket.jpg"])
def test_audit_cropped_protected_is_authentic(engines, photos_dir, name):
    protector, auditor = engines
    rgb = np.asarray(Image.open(photos_dir / name).convert("RGB"))
    protected = protector.protect_batch([ImageInput(name, rgb)])[0]
    cropped = centre_crop(protected.protected_rgb, 0.75)

    whole, after_crop = auditor.audit_batch([ImageInput(name, protected.protected_rgb), ImageInput(f"crop-{name}", cropped)])

    assert whole.verdict == "authentic"
    assert not any(note.startswith("cropped") for note in whole.notes)
    assert after_crop.verdict == "authentic"
    assert after_crop.payload_valid
    assert after_crop.mask is None
    notes = [note for note in after_crop.notes if note.startswith("cropped")]
    # A centred crop to 75 % of the area keeps 87 % of each side: 7-93 %.
    assert notes == ["cropped: read after crop synchronisation; the image shows x 7-93 %, y 7-93 % of the protected image"]


def test_audit_unprotected_crop_is_unmarked(engines, photos_dir):
    _, auditor = engines
    rgb = np.asarray(Image.open(photos_dir / "coffee.jpg").convert("RGB"))
    (result,) = auditor.audit_batch([ImageInput("coffee", centre_crop(rgb, 0.75))])
    assert result.verdict == "unmarked"
    assert not any(note.startswith("cropped") for note in result.notes)


def test_audit_without_crop_search_unmarked(engines, photos_dir):
    protector, _ = engines
    rgb = np.asarray(Image.open(photos_dir / "rocket.jpg").convert("RGB"))
    protected = protector.protect_batch([ImageInput("rocket", rgb)])[0].protected_rgb
    auditor = Auditor(protector.bundle, KEY, None, crop_search=False)
    (result,) = auditor.audit_batch([ImageInput("crop", centre_crop(protected, 0.75))])
    assert result.verdict == "unmarked"
