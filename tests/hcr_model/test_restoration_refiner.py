"""Tests of the restoration refiner: shapes, the composite rule, saving and a few training steps."""

import pytest
import torch
import torch.nn.functional as F

from hcr_model.restoration_blend import blend_with_inpainting
from hcr_model.restoration_refiner import (
    RefinerConfig,
    RestorationRefiner,
    load_optional_refiner,
    load_refiner,
    refine,
    save_refiner,
)
from hcr_model.training.refiner import masked_log_mse, masked_psnr_each

SIZE = 64
SMALL = RefinerConfig(widths=(8, 16, 24), dilations=(2,), downsample=2)


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    """Two real photos with a hole, their received copy, a blurred 'decoded' fill and its blend."""
    import skimage.data

    from hcr_model.imaging import to_canonical, uint8_to_tensor

    original = torch.cat([to_canonical(uint8_to_tensor(getattr(skimage.data, name)()), SIZE) for name in ("astronaut", "chelsea")])
    mask = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.bool)
    mask[0, :, 12:44, 20:52] = True
    mask[1, :, 30:60, 4:30] = True
    received = torch.where(mask, original.flip(-1), original)  # the hole contains other content, as after a splice
    blurred = F.avg_pool2d(original, 9, stride=1, padding=4)
    decoded = torch.where(mask, blurred, received)
    blended = blend_with_inpainting(decoded, received, mask)
    return {"original": original, "received": received, "decoded": decoded, "blended": blended, "mask": mask}


def test_untrained_refiner_returns_blend(case):
    model = RestorationRefiner(SMALL).eval()

    with torch.no_grad():
        out = refine(model, case["received"], case["decoded"], case["blended"], case["mask"])

    assert out.shape == case["received"].shape
    assert torch.allclose(out, case["blended"], atol=1e-6)


def test_pixels_outside_mask_unchanged(case):
    model = RestorationRefiner(SMALL).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    outside = ~case["mask"].expand_as(case["received"])

    with torch.no_grad():
        out = refine(model, case["received"], case["decoded"], case["blended"], case["mask"])

    assert torch.equal(out[outside], case["received"][outside])
    assert not torch.allclose(out, case["blended"])


def test_save_load_round_trip(tmp_path, case):
    model = RestorationRefiner(SMALL).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    path = tmp_path / "refiner.pt"

    save_refiner(model, path, metadata={"command": "test"})
    loaded = load_refiner(path)

    assert loaded.config == SMALL
    with torch.no_grad():
        expected = refine(model, case["received"], case["decoded"], case["blended"], case["mask"])
        actual = refine(loaded, case["received"], case["decoded"], case["blended"], case["mask"])
    assert torch.equal(actual, expected)


def test_optional_refiner_missing_is_none(tmp_path):
    assert load_optional_refiner(tmp_path, torch.device("cpu")) is None


def test_training_steps_raise_psnr(case):
    torch.manual_seed(0)
    model = RestorationRefiner(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs = (case["received"], case["decoded"], case["blended"], case["mask"])
    with torch.no_grad():
        before = masked_psnr_each(refine(model, *inputs), case["original"], case["mask"]).mean()

    for _ in range(40):
        loss = masked_log_mse(refine(model, *inputs), case["original"], case["mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        after = masked_psnr_each(refine(model, *inputs), case["original"], case["mask"]).mean()
    assert after > before + 0.5


def test_optional_refiner_loads_from_folder(tmp_path):
    save_refiner(RestorationRefiner(SMALL), tmp_path / "refiner.pt")

    model = load_optional_refiner(tmp_path, torch.device("cpu"))

    assert isinstance(model, RestorationRefiner)
    assert model.config == SMALL
    assert not model.training
