"""Multi-scale VQ tokenizer: shapes, hidden-code bits, determinism, teacher forcing, training, shipped weights."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hcr_model.imaging import to_canonical
from hcr_model.tokenizer import (
    MultiScaleVQ,
    TokenizerConfig,
    load_tokenizer,
    save_tokenizer,
)
from hcr_model.training import tokenizer as trainer
from hcr_model.training.common import WallBudget

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"
FIXTURE_NAMES = ("astronaut.jpg", "chelsea.jpg", "china.jpg", "coffee.jpg", "flower.jpg", "rocket.jpg")
SHIPPED = Path(__file__).resolve().parents[2] / "hcr_model" / "weights" / "v1" / "tokenizer.pt"
CARD = SHIPPED.with_suffix(".md")

# A narrow model keeps these tests at a few seconds on one core.
SMALL = TokenizerConfig(channels=(8, 8, 16, 16), res_blocks=(0, 0, 1, 1), codebook_size=64, code_dim=8, embedding_dim=16)


def _photo(name: str, size: int = 256) -> torch.Tensor:
    with Image.open(PHOTOS / name) as image:
        array = np.asarray(image.convert("RGB"))
    x = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0
    return to_canonical(x, size)


@pytest.fixture(scope="module")
def small_model() -> MultiScaleVQ:
    torch.manual_seed(0)
    model = MultiScaleVQ(SMALL)
    x = torch.cat([_photo("chelsea.jpg"), _photo("coffee.jpg")])
    model.init_codebooks(model.encoder(x).detach())
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.cat([_photo("chelsea.jpg"), _photo("coffee.jpg")])


def test_default_budget_is_140_bits():
    cfg = TokenizerConfig()
    assert cfg.latent_size == 16
    assert cfg.token_bits == 10
    assert cfg.code_tokens == 14
    assert cfg.code_bits == 140


def test_encode_decode_shapes(small_model, images):
    tokens = small_model.encode(images)
    assert [tuple(t.shape) for t in tokens] == [(2, s, s) for s in SMALL.scales]
    assert all(t.dtype == torch.int64 for t in tokens)
    assert all(int(t.max()) < SMALL.codebook_size for t in tokens)

    for n in (1, SMALL.hidden_scales, None):
        out = small_model.decode(tokens, n_scales=n)
        assert out.shape == (2, 3, 256, 256)
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= 1.0


def test_decode_hidden_code_prefix_alone(small_model, images):
    tokens = small_model.encode(images)
    from_prefix = small_model.decode(tokens[: SMALL.hidden_scales])
    assert torch.equal(from_prefix, small_model.decode(tokens, n_scales=SMALL.hidden_scales))


def test_crop_scales_are_clipped_to_latent(small_model, images):
    tokens = small_model.encode(images[:, :, :128, :128])
    assert [t.shape[-1] for t in tokens] == [1, 2, 3, 4, 6, 8, 8, 8]


def test_encode_rejects_bad_sizes(small_model):
    with pytest.raises(ValueError, match="multiples of 16"):
        small_model.encode(torch.rand(1, 3, 250, 256))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_model.encode(torch.rand(1, 256, 256))


def test_hidden_code_round_trip():
    model = MultiScaleVQ()
    generator = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, 1024, (3, s, s), generator=generator) for s in (1, 2, 3)]
    bits = model.hidden_code(tokens)
    assert bits.shape == (3, 140)
    assert bits.dtype == np.uint8
    assert set(np.unique(bits)) <= {0, 1}
    back = model.tokens_from_code(bits)
    assert all(torch.equal(a, b) for a, b in zip(back, tokens, strict=True))


def test_hidden_code_bit_order():
    # Scale 1 token first, then scale 2 row-major, each token MSB first.
    model = MultiScaleVQ()
    tokens = [torch.tensor([[[1]]]), torch.tensor([[[512, 0], [0, 3]]]), torch.zeros(1, 3, 3, dtype=torch.long)]
    bits = model.hidden_code(tokens)[0]
    assert bits[:10].tolist() == [0] * 9 + [1]
    assert bits[10:20].tolist() == [1] + [0] * 9
    assert bits[40:50].tolist() == [0] * 8 + [1, 1]
    assert int(bits.sum()) == 1 + 1 + 2


def test_tokens_from_code_rejects_wrong_length():
    with pytest.raises(ValueError, match="expected 140 code bits"):
        MultiScaleVQ().tokens_from_code(np.zeros((1, 139), dtype=np.uint8))


def test_encode_is_deterministic(small_model, images):
    first = small_model.encode(images)
    second = small_model.encode(images)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_code_embedding_depends_on_prefix_only(small_model, images):
    tokens = small_model.encode(images)
    embedding = small_model.code_embedding(tokens)
    assert embedding.shape == (2, SMALL.embedding_dim)
    assert embedding.dtype == torch.float32
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)

    changed_fine = tokens[: SMALL.hidden_scales] + [torch.zeros_like(t) for t in tokens[SMALL.hidden_scales :]]
    assert torch.equal(small_model.code_embedding(changed_fine), embedding)
    from_bits = small_model.tokens_from_code(small_model.hidden_code(tokens))
    assert torch.equal(small_model.code_embedding(from_bits), embedding)


def test_prefix_teacher_forcing(small_model, images):
    own = small_model.encode(images)
    other = small_model.encode(images.flip(0))
    prefix = other[: SMALL.hidden_scales]

    forced = small_model.encode(images, prefix=prefix)
    for k in range(SMALL.hidden_scales):
        assert torch.equal(forced[k], prefix[k])

    # Forcing an image's own coarse tokens changes nothing.
    same = small_model.encode(images, prefix=own[: SMALL.hidden_scales])
    assert all(torch.equal(a, b) for a, b in zip(same, own, strict=True))


def test_prefix_shape_mismatch_raises(small_model, images):
    with pytest.raises(ValueError, match="prefix tokens at scale 1"):
        small_model.encode(images, prefix=[torch.zeros(2, 1, 1, dtype=torch.long), torch.zeros(2, 3, 3, dtype=torch.long)])


def test_training_steps_lower_reconstruction_error(images):
    torch.manual_seed(0)
    model = MultiScaleVQ(SMALL)
    x = images[:, :, :128, :128]
    model.init_codebooks(model.encoder(x).detach())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def l1_error() -> float:
        return float((model.decode(model.encode(x)) - x).abs().mean())

    before = l1_error()
    for _ in range(30):
        out = model(x, update_codebooks=True)
        loss = (out.reconstruction - x).abs().mean() + 0.25 * out.commitment + out.refine_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert l1_error() < 0.75 * before


def test_dead_code_restart_limits(images):
    torch.manual_seed(0)
    model = MultiScaleVQ(SMALL)
    latent = model.encoder(images).detach()
    model.init_codebooks(latent)
    model.ema_cluster_size.zero_()  # every entry counts as dead

    restarted = model.restart_dead_codes(latent)
    # One entry per batch vector at most: 2 images give s*s*2 vectors at scale s.
    assert restarted == [min(2 * s * s, SMALL.codebook_size) for s in SMALL.scales]
    assert bool((model.ema_cluster_size > 0).any())


def test_quantizer_dropout_changes_reconstruction(small_model, images):
    with torch.no_grad():
        full = small_model(images).reconstruction
        coarse = small_model(images, keep_scales=torch.tensor([1, 1])).reconstruction
    assert not torch.allclose(full, coarse)


def test_save_and_load_round_trip(small_model, images, tmp_path):
    path = save_tokenizer(small_model, tmp_path / "tok.pt", metadata={"note": "test"}, half=False)
    loaded = load_tokenizer(path)
    assert not loaded.training
    assert loaded.cfg == small_model.cfg
    tokens = small_model.encode(images)
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode(images), tokens, strict=True))
    assert torch.allclose(loaded.decode(tokens), small_model.decode(tokens), atol=1e-5)


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer weights not found"):
        load_tokenizer(tmp_path / "absent.pt")


def _tiny_run_args(tmp_path, *extra: str) -> list[str]:
    """Return trainer arguments for a tiny model on the fixture photos, checkpointing every step into tmp_path/run."""
    flags = (
        "--data fixtures --minutes 5 --channels 8,8,16,16 --crop-size 64 --batch-size 2 --full-every 0"
        " --eval-images 1 --log-every 1 --ckpt-every 1 --eval-every 100"
    )
    return ["--out", str(tmp_path / "run"), *flags.split(), *extra]


def _last_checkpoint(tmp_path) -> dict:
    return torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)


def test_trainer_runs_and_resumes(tmp_path):
    common = _tiny_run_args(tmp_path, "--no-distill")
    assert trainer.main([*common, "--max-steps", "2"]) == 0
    first = _last_checkpoint(tmp_path)
    assert first["step"] == 2

    assert trainer.main([*common, "--max-steps", "3", "--export", str(tmp_path / "tok.pt")]) == 0
    second = _last_checkpoint(tmp_path)
    assert second["step"] == 3
    assert load_tokenizer(tmp_path / "tok.pt").cfg.channels == (8, 8, 16, 16)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped v1 tokenizer weights not present")
def test_shipped_weights_match_card_psnr():
    match = re.search(r"fixture PSNR[^:]*:\s*([0-9.]+)\s*dB", CARD.read_text())
    assert match, "model card must state the fixture PSNR as 'fixture PSNR ...: NN.NN dB'"
    expected = float(match.group(1))

    model = load_tokenizer("v1")
    x = torch.cat([_photo(name) for name in FIXTURE_NAMES])
    out = model.decode(model.encode(x))
    mse = (out - x).pow(2).flatten(1).mean(1)
    measured = float((-10 * torch.log10(mse)).mean())
    assert abs(measured - expected) <= 0.5


def test_centred_target_removes_shared_direction():
    # Non-negative features that share one large common part, like MobileNetV2's pooled features.
    generator = torch.Generator().manual_seed(0)
    common = torch.rand(1, 64, generator=generator) * 4.0
    features = common + torch.rand(8, 64, generator=generator)

    raw = F.normalize(features, dim=1)
    raw_cosine = (raw @ raw.T)[~torch.eye(8, dtype=torch.bool)].mean()
    centred, mean = trainer.centred_teacher_target(features, None)
    unit = F.normalize(centred, dim=1)
    centred_cosine = (unit @ unit.T)[~torch.eye(8, dtype=torch.bool)].mean()

    assert raw_cosine > 0.9
    assert abs(float(centred_cosine)) < 0.2
    assert torch.allclose(mean, features.mean(0))

    # Later batches move the running mean only by (1 - momentum).
    _, updated = trainer.centred_teacher_target(features + 1.0, mean, momentum=0.9)
    assert torch.allclose(updated, mean + 0.1, atol=1e-6)


def test_resume_keeps_teacher_mean(tmp_path):
    common = _tiny_run_args(tmp_path, "--teacher-size", "64")
    assert trainer.main([*common, "--max-steps", "1"]) == 0
    first = _last_checkpoint(tmp_path)
    assert first["teacher_mean"].shape == (1280,)

    assert trainer.main([*common, "--max-steps", "2"]) == 0
    second = _last_checkpoint(tmp_path)
    assert second["step"] == 2

    # One more batch moved the restored mean by 1 % of that batch's mean, not replaced it.
    moved = float((second["teacher_mean"] - first["teacher_mean"]).abs().max())
    assert moved > 0
    assert moved < 0.05 * float(first["teacher_mean"].abs().max())


def test_schedule_follows_max_steps():
    state = trainer.TrainState(model=None, optimizer=None, step=250, budget=WallBudget(60.0), rng=None, generator=None)
    with_steps = argparse.Namespace(max_steps=1000)
    wall_only = argparse.Namespace(max_steps=0)

    assert trainer._schedule_progress(state, with_steps) == pytest.approx(0.25)
    assert trainer._schedule_progress(state, wall_only) < 0.01
