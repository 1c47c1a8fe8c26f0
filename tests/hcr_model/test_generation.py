import numpy as np
import pytest
import torch

from hcr_model.generation import embed_generated, generate_protected, pack_code_tokens
from hcr_model.imaging import to_canonical, uint8_to_tensor
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.recovery import RecoveryConfig, RecoveryTransformer, load_recovery
from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer
from hcr_model.watermark.dct import DctCarrier

VERSION = 1


def _photos() -> torch.Tensor:
    import skimage.data

    return torch.cat([to_canonical(uint8_to_tensor(getattr(skimage.data, n)()), 256) for n in ("astronaut", "coffee")])


@pytest.fixture(scope="module")
def tokenizer() -> MultiScaleVQ:
    """The shipped v1 tokenizer, or a fresh one with codebooks drawn from real photos."""
    try:
        return load_tokenizer("v1")
    except FileNotFoundError:
        torch.manual_seed(0)
        model = MultiScaleVQ().eval()
        with torch.no_grad():
            model.init_codebooks(model.encoder(_photos()))
        return model


@pytest.fixture(scope="module")
def model() -> RecoveryTransformer:
    try:
        return load_recovery("v1")
    except FileNotFoundError:
        torch.manual_seed(0)
        return RecoveryTransformer(RecoveryConfig(dim=64, depth=1, heads=2)).eval()


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return SecretKey(bytes(range(32)))


@pytest.fixture(scope="module")
def carrier(key) -> DctCarrier:
    return DctCarrier(key, n_bits=256, resolution=256)


@pytest.fixture(scope="module")
def codec(key, tokenizer) -> PayloadCodec:
    return PayloadCodec(key, n_bits=256, code_bits=tokenizer.cfg.code_bits)


def _read_code(carrier, codec, images):
    extraction = carrier.extract(images)
    return codec.decode_batch(extraction.soft_bits.cpu().numpy())


def test_pack_code_tokens_matches_tokenizer(tokenizer):
    tokens = tokenizer.encode(_photos())
    code_tokens = tokens[: tokenizer.cfg.hidden_scales]
    packed = pack_code_tokens(code_tokens, tokenizer.cfg.code_bits)
    assert np.array_equal(packed, tokenizer.hidden_code(tokens))


def test_pack_code_tokens_rejects_wrong_width():
    tokens = [torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)]
    with pytest.raises(ValueError, match="split evenly"):
        pack_code_tokens(tokens, 51)
    with pytest.raises(ValueError, match="0..1023"):
        pack_code_tokens([torch.full((1, 1, 1), 1024)], 10)


def test_generated_image_carries_its_own_tokens(tokenizer, model, carrier, codec):
    batch = generate_protected(tokenizer, model, carrier, codec, n=2, seed=3, version=VERSION)
    assert batch.images.shape == (2, 3, 256, 256)
    assert batch.images.min() >= 0.0
    assert batch.images.max() <= 1.0

    decoded = _read_code(carrier, codec, batch.images)
    for i, payload in enumerate(decoded):
        assert payload.payload_valid
        assert payload.version == VERSION
        assert np.array_equal(payload.code_bits, batch.code_bits[i])
        recovered = tokenizer.tokens_from_code(payload.code_bits[None])
        for scale, generated in zip(recovered, batch.tokens[: tokenizer.cfg.hidden_scales]):
            assert torch.equal(scale[0], generated[i].cpu())


def test_generation_is_seeded(tokenizer, model, carrier, codec):
    first = generate_protected(tokenizer, model, carrier, codec, n=1, seed=11)
    second = generate_protected(tokenizer, model, carrier, codec, n=1, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(first.tokens, second.tokens))
    assert torch.equal(first.images, second.images)


def test_embed_hook_at_full_size(tokenizer, carrier, codec):
    # Another generator's output at its own size, with the code tokens it computed.
    photo = _photos()[:1]
    image = torch.nn.functional.interpolate(photo, size=(320, 480), mode="bilinear", align_corners=False)
    code_tokens = tokenizer.encode(photo)[: tokenizer.cfg.hidden_scales]

    marked, code_bits = embed_generated(image, code_tokens, carrier, codec, VERSION)
    assert marked.shape == image.shape
    (payload,) = _read_code(carrier, codec, to_canonical(marked, 256))
    assert payload.payload_valid
    assert np.array_equal(payload.code_bits, code_bits[0])


def test_embed_hook_rejects_count_mismatch(tokenizer, carrier, codec):
    photos = _photos()
    code_tokens = tokenizer.encode(photos[:1])[: tokenizer.cfg.hidden_scales]
    with pytest.raises(ValueError, match="1 codes for 2 images"):
        embed_generated(photos, code_tokens, carrier, codec, VERSION)
