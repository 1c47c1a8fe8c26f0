import numpy as np
import pytest
import torch

from hcr_model.recovery import (
    STATE_CODE,
    STATE_MASKED,
    STATE_RECEIVED,
    STATE_RECOVERED,
    RecoveryConfig,
    RecoveryTransformer,
    composite,
    decode_expected,
    feather_weights,
    fill_from_boundary,
    flatten_pyramid,
    load_recovery,
    restore_image,
    save_recovery,
    split_pyramid,
    token_masks,
)
from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer, save_tokenizer
from hcr_model.training import recovery as training
from hcr_model.training.recovery import TokenSet, make_batch, sample_batch

R = 256
SCALES = (1, 2, 3, 4, 6, 8, 12, 16)


def _photos() -> torch.Tensor:
    """Two real photos from the scikit-image wheel, (2, 3, R, R) in [0, 1]."""
    import skimage.data

    from hcr_model.imaging import to_canonical, uint8_to_tensor

    return torch.cat([to_canonical(uint8_to_tensor(getattr(skimage.data, name)()), R) for name in ("astronaut", "chelsea")])


def _shipped_or_none(loader):
    try:
        return loader("v1")
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return _photos()


@pytest.fixture(scope="module")
def tokenizer(photos) -> MultiScaleVQ:
    """The shipped v1 tokenizer, or a fresh one with codebooks drawn from the photos' residuals."""
    shipped = _shipped_or_none(load_tokenizer)
    if shipped is not None:
        return shipped
    torch.manual_seed(0)
    model = MultiScaleVQ().eval()
    with torch.no_grad():
        model.init_codebooks(model.encoder(photos))
    return model


@pytest.fixture(scope="module")
def model() -> RecoveryTransformer:
    shipped = _shipped_or_none(load_recovery)
    if shipped is not None:
        return shipped
    torch.manual_seed(0)
    return RecoveryTransformer(RecoveryConfig(dim=64, depth=1, heads=2)).eval()


def _rect_mask(batch: int, top: int, left: int, size: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, R, R, dtype=torch.bool)
    mask[:, :, top : top + size, left : left + size] = True
    return mask


def test_token_masks_any_overlap():
    mask = torch.zeros(1, 1, R, R, dtype=torch.bool)
    mask[0, 0, 10, 85] = True  # column 85 lies in two cells of scale 6: [42, 86) and [85, 128)
    masks = token_masks(mask, SCALES, n_code_scales=3)

    assert [tuple(m.shape[1:]) for m in masks] == [(s, s) for s in SCALES]
    for k in range(3):
        assert not masks[k].any()  # the hidden code is never masked
    assert masks[4][0].nonzero().tolist() == [[0, 1], [0, 2]]
    assert masks[7][0].nonzero().tolist() == [[0, 5]]
    assert masks[3][0].nonzero().tolist() == [[0, 1]]


def test_flatten_split_roundtrip():
    tokens = [torch.randint(0, 1024, (2, s, s)) for s in SCALES]
    flat = flatten_pyramid(tokens)
    assert flat.shape == (2, sum(s * s for s in SCALES))
    assert all(torch.equal(a, b) for a, b in zip(tokens, split_pyramid(flat, SCALES)))


def test_training_batch_never_leaks_masked_targets():
    config = RecoveryConfig()
    scale_of_position = RecoveryTransformer(RecoveryConfig(dim=32, depth=1, heads=1)).scale_of_position
    generator = torch.Generator().manual_seed(0)
    batch_size, length = 64, config.seq_len
    clean = torch.randint(0, 1024, (batch_size, length), generator=generator)
    received = torch.randint(0, 1024, (batch_size, length), generator=generator)
    masked = torch.rand(batch_size, length, generator=generator) < 0.3
    masked[:, scale_of_position < config.n_code_scales] = False
    depth = torch.randint(config.n_code_scales, len(SCALES), (batch_size,), generator=generator)

    batch = make_batch(clean, received, masked, depth, config, scale_of_position)
    finer = scale_of_position[None] >= depth[:, None]
    assert torch.equal(batch.pending, masked & finer)
    assert (batch.inputs[batch.pending] == config.mask_id).all()
    assert (batch.states[batch.pending] == STATE_MASKED).all()
    assert torch.equal(batch.targets[batch.pending], clean[batch.pending])

    # Changing the ground truth at the positions in the loss must not change the input.
    altered = clean.clone()
    altered[batch.pending] = (altered[batch.pending] + 1) % 1024
    again = make_batch(altered, received, masked, depth, config, scale_of_position)
    assert torch.equal(again.inputs, batch.inputs)

    recovered = masked & ~finer
    assert torch.equal(batch.inputs[recovered], clean[recovered])
    assert (batch.states[recovered] == STATE_RECOVERED).all()
    outside = ~masked
    assert torch.equal(batch.inputs[outside], received[outside])
    code = outside & (scale_of_position[None] < config.n_code_scales)
    assert (batch.states[code] == STATE_CODE).all()
    assert (batch.states[outside & ~code] == STATE_RECEIVED).all()


def test_sampled_batches_never_leak():
    config = RecoveryConfig()
    scale_of_position = RecoveryTransformer(RecoveryConfig(dim=32, depth=1, heads=1)).scale_of_position
    generator = torch.Generator().manual_seed(1)
    n, length = 32, config.seq_len
    tokens = TokenSet(
        clean=torch.randint(0, 1024, (n, length), generator=generator).short(),
        received=torch.randint(0, 1024, (n, length), generator=generator).short(),
        masked=(torch.rand(n, length, generator=generator) < 0.3) & (scale_of_position[None] >= 3),
        edited=torch.rand(n, generator=generator) < 0.5,
    )
    masks = (torch.rand(16, length, generator=generator) < 0.2) & (scale_of_position[None] >= 3)
    for _ in range(5):
        batch = sample_batch(tokens, masks, 32, config, scale_of_position, generator, tampered_prob=0.5, generate_prob=0.3)
        assert batch.pending.any()
        assert (batch.inputs[batch.pending] == config.mask_id).all()
        assert not (batch.next_scale & ~batch.pending).any()


def test_restore_tokens_keeps_code_and_unmasked(tokenizer, model, photos):
    cfg = model.config
    tokens = tokenizer.encode(photos)
    code = tokens[: cfg.n_code_scales]
    mask = _rect_mask(2, 64, 96, 80)
    received = tokenizer.encode(photos.flip(-1), prefix=code)  # plays the role of an edited image

    restored = model.restore_tokens(code, received, mask)
    masks = token_masks(mask, cfg.scales, cfg.n_code_scales)
    for k in range(len(cfg.scales)):
        if k < cfg.n_code_scales:
            assert torch.equal(restored[k], code[k])
        else:
            assert torch.equal(restored[k][~masks[k]], received[k][~masks[k]])
            assert restored[k].min() >= 0
            assert restored[k].max() < cfg.vocab_size

    unchanged = model.restore_tokens(code, received, torch.zeros_like(mask))
    assert all(torch.equal(a, b) for a, b in zip(unchanged[cfg.n_code_scales :], received[cfg.n_code_scales :]))


def test_restore_tokens_seeded_sampling(tokenizer, model, photos):
    code = tokenizer.encode(photos)[: model.config.n_code_scales]
    received = tokenizer.encode(photos, prefix=code)
    mask = _rect_mask(2, 0, 0, 128)
    draws = [
        model.restore_tokens(code, received, mask, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*draws))
    greedy = [model.restore_tokens(code, received, mask) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*greedy))


def test_restore_image_outside_mask_bit_identical(tokenizer, model, photos):
    code = tokenizer.encode(photos)[: model.config.n_code_scales]
    edited = photos.clone()
    mask = _rect_mask(2, 40, 30, 100)
    mask[1, :, 150:200, 150:240] = True  # a second region on the second image
    edited[mask.expand_as(edited)] = 0.5

    restored = restore_image(tokenizer, model, edited, code, mask)
    assert restored.shape == photos.shape
    outside = ~mask.expand_as(edited)
    assert torch.equal(restored[outside], edited[outside])
    assert not torch.equal(restored[~outside], edited[~outside])
    assert restored.min() >= 0.0
    assert restored.max() <= 1.0


def test_decode_expected_one_hot_matches_decode(tokenizer, photos):
    tokens = tokenizer.encode(photos)
    masks = token_masks(_rect_mask(2, 0, 0, 256), SCALES, 3)
    one_hot = {k: torch.nn.functional.one_hot(tokens[k], 1024).float() for k in range(3, len(SCALES))}
    expected = decode_expected(tokenizer, tokens, one_hot, masks)
    assert torch.allclose(expected, tokenizer.decode(tokens), atol=1e-4)


def test_restore_image_token_decode_path(tokenizer, model, photos):
    code = tokenizer.encode(photos)[: model.config.n_code_scales]
    mask = _rect_mask(2, 128, 128, 64)
    restored = restore_image(tokenizer, model, photos, code, mask, expected=False)
    outside = ~mask.expand_as(photos)
    assert torch.equal(restored[outside], photos[outside])


def test_feather_weights_inside_band_only():
    mask = _rect_mask(1, 100, 100, 40)
    weights = feather_weights(mask, band_px=4)
    assert (weights[~mask] == 0).all()
    assert weights[0, 0, 100, 120] == pytest.approx(1.0)  # on the inner edge
    assert weights[0, 0, 103, 120] == pytest.approx(0.25)  # 4 px deep
    assert weights[0, 0, 104, 120] == 0.0  # deeper than the band
    assert weights[0, 0, 120, 120] == 0.0


def test_composite_matches_seam_without_touching_outside():
    generator = torch.Generator().manual_seed(0)
    received = torch.rand(1, 3, 64, 64, generator=generator) * 0.7
    decoded = received + 0.2  # a decoder with a constant colour bias
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    mask[:, :, 16:48, 16:48] = True
    inside = mask.expand_as(received)

    for band_px in (None, 4, 0):
        out = composite(received, decoded, mask, band_px=band_px)
        assert torch.equal(out[~inside], received[~inside])

    # The bias measured outside is removed in the whole mask by default.
    out = composite(received, decoded, mask)
    assert (out - received)[inside].abs().max() < 0.02
    # With a band, the edge is corrected and the centre keeps the decoded pixels.
    banded = composite(received, decoded, mask, band_px=4)
    assert (banded - received)[0, :, 16, 20:44].abs().mean() < 0.05
    assert torch.equal(banded[0, :, 30:34, 30:34], decoded[0, :, 30:34, 30:34])
    assert torch.equal(composite(received, decoded, mask, band_px=0)[inside], decoded[inside])


def test_fill_from_boundary_keeps_known_pixels():
    values = torch.linspace(0, 1, 40)[None, None, None, :].expand(1, 1, 40, 40).contiguous()
    known = torch.ones(1, 1, 40, 40, dtype=torch.bool)
    known[:, :, 10:30, 10:30] = False
    filled = fill_from_boundary(values, known)
    assert torch.allclose(filled[known], values[known])
    # A horizontal ramp stays roughly a ramp inside the hole.
    assert filled[0, 0, 20, 12] < filled[0, 0, 20, 20] < filled[0, 0, 20, 28]
    assert torch.equal(fill_from_boundary(values, torch.zeros_like(known)), torch.zeros_like(values))


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = RecoveryTransformer(RecoveryConfig(dim=32, depth=1, heads=2)).eval()
    path = tmp_path / "recovery.pt"
    save_recovery(model, path, metadata={"steps": 3})
    loaded = load_recovery(path)
    assert loaded.config == model.config
    inputs = torch.randint(0, 1024, (1, model.config.seq_len))
    states = torch.zeros_like(inputs)
    assert torch.equal(loaded(inputs, states), model(inputs, states))
    with pytest.raises(FileNotFoundError, match="recovery weights not found"):
        load_recovery(tmp_path / "missing.pt")


def test_training_runs_and_resumes(tmp_path, photos, monkeypatch):
    torch.manual_seed(0)
    tokenizer = MultiScaleVQ().eval()
    with torch.no_grad():
        tokenizer.init_codebooks(tokenizer.encoder(photos))
    save_tokenizer(tokenizer, tmp_path / "tokenizer.pt")
    monkeypatch.setenv("HCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(training, "load_split", lambda source, split: list(photos))

    args = [
        "--tokenizer", str(tmp_path / "tokenizer.pt"), "--out", str(tmp_path / "run"),
        "--crops-per-photo", "0", "--val-crops-per-photo", "0", "--mask-bank", "8",
        "--batch-size", "2", "--dim", "32", "--depth", "1", "--heads", "2",
        "--eval-every", "1000", "--log-every", "1",
    ]
    assert training.main(args + ["--max-steps", "2"]) == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["step"] == 2

    export = tmp_path / "recovery.pt"
    assert training.main(args + ["--max-steps", "3", "--export", str(export)]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 3
    assert load_recovery(export).config.dim == 32
    assert any((tmp_path / "cache" / "recovery").glob("fixtures-train-*.pt")) is False
    assert any((tmp_path / "cache" / "recovery").glob("photos-train-*.pt"))


def test_random_masks_cover_requested_area():
    rng = np.random.default_rng(0)
    areas = [training.random_pixel_mask(R, rng).mean() for _ in range(60)]
    assert min(areas) > 0.01
    assert max(areas) <= 0.45
