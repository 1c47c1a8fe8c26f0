import numpy as np
import pytest

from hcr_model.keys import SecretKey
from hcr_model.payload import PAYLOAD_BUDGET, PayloadCodec, make_budget

KEY = SecretKey(bytes(range(32)))
OTHER_KEY = SecretKey(bytes(range(1, 33)))


def random_code(rng: np.random.Generator, bits: int = 140) -> np.ndarray:
    return rng.integers(0, 2, bits).astype(np.uint8)


def to_soft(bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft values with random reliability in [0.3, 1], positive = 1."""
    return (bits.astype(np.float64) * 2 - 1) * rng.uniform(0.3, 1.0, bits.shape)


def test_budget_table():
    assert PAYLOAD_BUDGET.version_bits == 8
    assert PAYLOAD_BUDGET.code_bits == 140
    assert PAYLOAD_BUDGET.mac_bits == 32
    assert PAYLOAD_BUDGET.payload_bits == 180
    assert PAYLOAD_BUDGET.carrier_bits == 256
    assert (PAYLOAD_BUDGET.bch_m, PAYLOAD_BUDGET.bch_t) == (9, 8)
    assert PAYLOAD_BUDGET.codeword_bits == 252
    assert PAYLOAD_BUDGET.filler_bits == 4
    PAYLOAD_BUDGET.validate()
    assert make_budget(256, 140) == PAYLOAD_BUDGET


def test_budget_grows_parity_for_fewer_code_bits():
    assert make_budget(256, 100).bch_t > PAYLOAD_BUDGET.bch_t
    assert make_budget(256, 160).bch_t >= 1
    with pytest.raises(ValueError, match="fewer code bits"):
        make_budget(128, 140)
    with pytest.raises(ValueError, match="code_bits"):
        make_budget(512, 161)


def test_round_trip_clean():
    rng = np.random.default_rng(0)
    codec = PayloadCodec(KEY)
    code = random_code(rng)
    bits = codec.encode(7, code)

    assert bits.shape == (256,)
    assert bits.dtype == np.uint8
    decoded = codec.decode(to_soft(bits, rng))
    assert decoded.payload_valid
    assert decoded.ecc_ok and decoded.mac_ok
    assert decoded.version == 7
    np.testing.assert_array_equal(decoded.code_bits, code)
    assert decoded.n_corrected == 0
    np.testing.assert_array_equal(codec.reencode(decoded), bits)


@pytest.mark.parametrize("n_errors", [1, 4, 8])
def test_corrects_up_to_bch_limit(n_errors):
    rng = np.random.default_rng(n_errors)
    codec = PayloadCodec(KEY, chase_bits=0)
    for _ in range(20):
        code = random_code(rng)
        bits = codec.encode(1, code)
        soft = to_soft(bits, rng)
        flipped = rng.choice(PAYLOAD_BUDGET.codeword_bits, n_errors, replace=False)
        soft[flipped] *= -1

        decoded = codec.decode(soft)
        assert decoded.payload_valid
        np.testing.assert_array_equal(decoded.code_bits, code)
        assert decoded.n_corrected == n_errors
        np.testing.assert_array_equal(codec.reencode(decoded), bits)


def test_chase_corrects_beyond_limit():
    # Errors the hard decoder cannot fix, on the least reliable bits, are what Chase decoding recovers.
    rng = np.random.default_rng(1)
    codec = PayloadCodec(KEY, chase_bits=6)
    recovered = 0
    for _ in range(20):
        code = random_code(rng)
        bits = codec.encode(1, code)
        soft = (bits.astype(np.float64) * 2 - 1) * rng.uniform(0.5, 1.0, 256)
        flipped = rng.choice(PAYLOAD_BUDGET.codeword_bits, 11, replace=False)
        soft[flipped] *= -0.1
        decoded = codec.decode(soft)
        recovered += decoded.payload_valid and np.array_equal(decoded.code_bits, code)
    assert recovered == 20


def test_too_many_errors_fail_cleanly():
    rng = np.random.default_rng(2)
    codec = PayloadCodec(KEY)
    bits = codec.encode(1, random_code(rng))
    soft = to_soft(bits, rng)
    soft[rng.choice(256, 40, replace=False)] *= -1
    decoded = codec.decode(soft)
    assert not decoded.payload_valid
    assert decoded.n_corrected == -1
    with pytest.raises(ValueError, match="ECC"):
        codec.reencode(decoded)


def test_mac_rejects_altered_code():
    # A payload minted without the key: a valid BCH codeword whose MAC is wrong.
    rng = np.random.default_rng(3)
    codec = PayloadCodec(KEY)
    code = random_code(rng)
    bits = codec.encode(1, code)
    scrambled = (bits ^ codec._outer_stream)[: PAYLOAD_BUDGET.payload_bits]
    scrambled[20] ^= 1  # one hidden-code bit
    forged = codec._encode_scrambled(scrambled)

    decoded = codec.decode(forged * 2.0 - 1)
    assert decoded.ecc_ok
    assert not decoded.mac_ok
    assert not decoded.payload_valid
    assert decoded.n_corrected == 0
    np.testing.assert_array_equal(codec.reencode(decoded), forged)


def test_wrong_key_reads_nothing():
    rng = np.random.default_rng(4)
    bits = PayloadCodec(KEY).encode(1, random_code(rng))
    decoded = PayloadCodec(OTHER_KEY).decode(to_soft(bits, rng))
    assert not decoded.payload_valid


def test_scrambling_hides_code():
    # Two codes differing in one bit give carrier words differing in many bits.
    rng = np.random.default_rng(5)
    codec = PayloadCodec(KEY)
    code = random_code(rng)
    other = code.copy()
    other[0] ^= 1
    assert (codec.encode(1, code) != codec.encode(1, other)).sum() > 20
    # An all-zero code does not give an all-zero carrier word.
    assert 64 < codec.encode(0, np.zeros(140, np.uint8)).sum() < 192


def test_random_soft_values_never_valid():
    rng = np.random.default_rng(6)
    codec = PayloadCodec(KEY)
    decoded = codec.decode_batch(rng.normal(size=(300, 256)))
    assert not any(d.payload_valid for d in decoded)


def test_batch_helpers():
    rng = np.random.default_rng(7)
    codec = PayloadCodec(KEY)
    codes = np.stack([random_code(rng) for _ in range(3)])
    bits = codec.encode_batch(np.array([1, 2, 3]), codes)
    assert bits.shape == (3, 256)
    decoded = codec.decode_batch(bits * 2.0 - 1)
    assert [d.version for d in decoded] == [1, 2, 3]
    for d, code in zip(decoded, codes):
        np.testing.assert_array_equal(d.code_bits, code)


def test_other_budget_round_trip():
    rng = np.random.default_rng(8)
    codec = PayloadCodec(KEY, n_bits=256, code_bits=100)
    code = random_code(rng, 100)
    bits = codec.encode(2, code)
    soft = to_soft(bits, rng)
    soft[rng.choice(codec.budget.codeword_bits, codec.budget.bch_t, replace=False)] *= -1
    decoded = codec.decode(soft)
    assert decoded.payload_valid
    np.testing.assert_array_equal(decoded.code_bits, code)


def test_bad_inputs_rejected():
    codec = PayloadCodec(KEY)
    with pytest.raises(ValueError, match="version"):
        codec.encode(256, np.zeros(140, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        codec.encode(1, np.zeros(139, np.uint8))
    with pytest.raises(ValueError, match="0 and 1"):
        codec.encode(1, np.full(140, 2, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        codec.decode(np.zeros(255))


def test_nan_soft_values_do_not_crash():
    soft = np.full(256, np.nan)
    decoded = PayloadCodec(KEY).decode(soft)
    assert not decoded.payload_valid
    assert decoded.bit_confidence == 0.0
