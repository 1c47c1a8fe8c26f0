"""The learned localized watermark: interface shapes, weight files and its trainer."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hcr_model.bench.attacks import jpeg_pillow
from hcr_model.bundle import weights_dir
from hcr_model.imaging import to_canonical, uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.training.watermark import batch_loss, main, strength_at
from hcr_model.watermark.base import WatermarkBackend
from hcr_model.watermark.learned import LearnedConfig, LearnedWatermark, load_learned, load_optional_learned, save_learned

CONFIG = LearnedConfig(n_bits=16, channels=16, resolution=64)


def photos(photos_dir, size: int) -> torch.Tensor:
    names = ("astronaut.jpg", "chelsea.jpg")
    return torch.cat([to_canonical(uint8_to_tensor(np.asarray(Image.open(photos_dir / name).convert("RGB"))), size) for name in names])


def test_learned_backend_interface_shapes(photos_dir):
    torch.manual_seed(0)
    model = LearnedWatermark(CONFIG).eval()
    assert isinstance(model, WatermarkBackend)
    images = photos(photos_dir, 64)
    bits = torch.randint(0, 2, (2, 16))

    with torch.no_grad():
        marked = model.embed(images, bits)
        extraction = model.extract(marked)
        evidence = model.evidence(extraction, bits)

    assert marked.shape == images.shape
    assert float(marked.min()) >= 0.0
    assert float(marked.max()) <= 1.0
    assert extraction.soft_bits.shape == (2, 16)
    assert float(extraction.soft_bits.abs().max()) <= 1.0
    assert extraction.watermark_score.shape == (2,)
    assert evidence.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="expected bits"):
        model.embed(images, torch.zeros(2, 8))


def test_learned_weight_file_round_trip(tmp_path, photos_dir):
    torch.manual_seed(1)
    model = LearnedWatermark(CONFIG).eval()
    save_learned(model, tmp_path / "learned_watermark.pt", metrics={"bit_acc_clean": 0.5})
    loaded = load_optional_learned(tmp_path)
    assert loaded.config == CONFIG
    images = photos(photos_dir, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract(images).soft_bits, model.extract(images).soft_bits)
    assert load_optional_learned(tmp_path / "empty") is None
    assert torch.load(tmp_path / "learned_watermark.pt", weights_only=True)["metrics"] == {"bit_acc_clean": 0.5}


def test_learned_strength_schedule():
    assert strength_at(0.0, 0.08, 0.02, 0.5) == pytest.approx(0.08)
    assert strength_at(0.25, 0.08, 0.02, 0.5) == pytest.approx(0.04)
    assert strength_at(0.9, 0.08, 0.02, 0.5) == pytest.approx(0.02)


def test_learned_training_lowers_loss(photos_dir):
    torch.manual_seed(0)
    model = LearnedWatermark(CONFIG)
    images = photos(photos_dir, 64)
    args = SimpleNamespace(
        unmarked_share=0.0, tamper_prob=0.5, clean_warmup=0.0, anneal_end=0.5, target_psnr=40.0, image_weight=0.05, detection_weight=1.0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        # The same draws every step: the model only has to fit this one batch.
        loss, _ = batch_loss(model, images, 0.08, 0.0, args, np.random.default_rng(3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_learned_trainer_resumes_and_exports(tmp_path):
    out, export = tmp_path / "run", tmp_path / "learned_watermark.pt"
    common = ["--data", "fixtures", "--out", str(out), "--bits", "16", "--channels", "8", "--crop", "64", "--batch-size", "2"]
    assert main([*common, "--max-steps", "2", "--minutes", "5", "--eval-every", "100"]) == 0
    assert main([*common, "--max-steps", "3", "--minutes", "5", "--export", str(export)]) == 0
    state = torch.load(export, weights_only=True)
    assert state["metrics"]["steps"] == 3
    assert load_learned(export).n_bits == 16


def test_learned_patterns_follow_key():
    model = LearnedWatermark(CONFIG)
    assert model.embedder.code_seed == model.extractor.code_seed == CONFIG.code_seed
    model.use_key(SecretKey(bytes(range(32))))
    keyed = model.embedder.code_seed
    assert keyed == model.extractor.code_seed != CONFIG.code_seed
    model.use_key(SecretKey(bytes(range(1, 33))))
    assert model.embedder.code_seed != keyed


def test_shipped_learned_weights_survive_jpeg(photos_dir):
    model = load_optional_learned(weights_dir("v1"))
    assert model is not None, "v1 ships learned_watermark.pt"
    model.use_key(SecretKey(bytes(range(32))))
    images = photos(photos_dir, 256)
    bits = torch.from_numpy(np.random.default_rng(5).integers(0, 2, (2, model.n_bits)))
    with torch.no_grad():
        marked = (model.embed(images, bits) * 255).round() / 255
        psnr = 10 * torch.log10(1 / (marked - images).pow(2).mean(dim=(1, 2, 3)))
        clean = model.extract(marked)
        after_jpeg = model.extract(jpeg_pillow(marked, 75))
        unmarked = model.extract(images)
    # The model card: 40.5 dB and every bit right after JPEG 75 on the validation squashes.
    assert float(psnr.min()) > 38.0
    assert float(((clean.soft_bits > 0).long() == bits).float().mean()) == 1.0
    assert float(((after_jpeg.soft_bits > 0).long() == bits).float().mean()) >= 0.98
    assert float(clean.watermark_score.min()) > 0.5 > float(unmarked.watermark_score.max())
