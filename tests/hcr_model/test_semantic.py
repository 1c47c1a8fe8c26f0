"""MobileNetV2 loads torchvision's ImageNet weights and labels real photos sensibly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hcr_model import semantic

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"

# ImageNet-1k class ids: 281-285 are domestic cats, 967 espresso, 968 cup and 504 coffee mug.
CAT_CLASSES = {281, 282, 283, 284, 285}
COFFEE_CLASSES = {967, 968, 504}


def _photo(name: str) -> torch.Tensor:
    with Image.open(PHOTOS / name) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0


@pytest.fixture(scope="module")
def model() -> semantic.MobileNetV2:
    return semantic.load_mobilenet_v2()


def test_weights_file_ships_in_wheel():
    path = semantic.weights_path()
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert path.is_file()


def test_state_dict_keys_match_torchvision(model):
    shipped = torch.load(semantic.weights_path(), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(shipped)


def test_model_is_frozen_in_eval_mode(model):
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(("name", "expected"), [("chelsea.jpg", CAT_CLASSES), ("coffee.jpg", COFFEE_CLASSES)])
def test_classify_labels_fixture_photo(model, name, expected):
    with torch.inference_mode():
        logits = model.classify(_photo(name))
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in expected


def test_embed_shape_and_batch_consistency(model):
    x = torch.cat([_photo("chelsea.jpg")] * 2)
    with torch.inference_mode():
        features = model.embed(x)
    assert features.shape == (2, semantic.EMBED_DIM)
    assert torch.allclose(features[0], features[1], atol=1e-5)
    assert bool((features >= 0).all())  # ReLU6 output, pooled


def test_module_level_helpers_match_model(model):
    x = _photo("chelsea.jpg")
    with torch.inference_mode():
        assert torch.allclose(semantic.embed(x), model.embed(x), atol=1e-5)
        assert int(semantic.classify(x).argmax()) == int(model.classify(x).argmax())


def test_embed_rejects_grey_images(model):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed(torch.rand(1, 1, 64, 64))
