"""The payload codec: `version | hidden code | MAC`, scrambled, BCH-protected carrier bits.

Encoding, for the default budget (140 code bits on a 256-bit carrier):

1. Plain payload P, 180 bits, each field most significant bit first:
   P[0:8] = version, P[8:148] = hidden code (in the caller's order),
   P[148:180] = MAC = first 32 bits of HMAC-SHA256 under a key derived for
   the MAC, over a domain tag, the version byte, the code length (2 bytes,
   big endian) and the code packed MSB first.
2. Scrambled payload S = P XOR a keystream derived from the key, so the code
   cannot be read without the key.
3. BCH over GF(2^9) (bchlib 2.1.3), t = 8: S is packed MSB first into 23
   bytes (4 zero pad bits, which are known and not transmitted) and gets 72
   parity bits.
4. Carrier word C (256 bits) = [S (180) | parity (72) | 4 filler zeros]
   XOR a second keystream, so every carrier bit looks random whatever the
   payload.

Decoding reverses this on soft values (positive = bit 1): hard decisions,
BCH decoding, then Chase-II decoding (flipping the least reliable bits) when
plain decoding fails, then the MAC check. `payload_valid` = ECC decoded and
MAC verified; nothing else read from an image is trustworthy.
"""

import hashlib
import hmac
import itertools
import logging
import math
from dataclasses import dataclass

import bchlib
import numpy as np

from hcr_model.keys import SecretKey

logger = logging.getLogger(__name__)

_MAC_DOMAIN = b"hcr/payload-mac/v1\x00"


@dataclass(frozen=True)
class PayloadBudget:
    """Bit budget of one payload on the carrier. `bch_t` is the number of correctable bit errors."""

    version_bits: int
    code_bits: int
    mac_bits: int
    carrier_bits: int
    bch_m: int
    bch_t: int

    @property
    def payload_bits(self) -> int:
        """version + code + MAC: the bits BCH protects."""
        return self.version_bits + self.code_bits + self.mac_bits

    @property
    def data_bytes(self) -> int:
        return math.ceil(self.payload_bits / 8)

    @property
    def ecc_bits(self) -> int:
        return self.bch_m * self.bch_t

    @property
    def codeword_bits(self) -> int:
        """Transmitted BCH codeword: payload and parity (the byte padding is not sent)."""
        return self.payload_bits + self.ecc_bits

    @property
    def filler_bits(self) -> int:
        return self.carrier_bits - self.codeword_bits

    def validate(self) -> None:
        if self.version_bits != 8:
            raise ValueError(f"version_bits must be 8, got {self.version_bits}")
        if not 1 <= self.code_bits <= MAX_CODE_BITS:
            raise ValueError(f"code_bits must be in 1..{MAX_CODE_BITS}, got {self.code_bits}")
        if self.mac_bits not in (32, 64):
            raise ValueError(f"mac_bits must be 32 or 64, got {self.mac_bits}")
        if self.bch_t < 1:
            raise ValueError(f"the carrier has no room for parity: {self.carrier_bits} bits for a {self.payload_bits}-bit payload")
        if self.filler_bits < 0:
            raise ValueError(f"codeword of {self.codeword_bits} bits does not fit {self.carrier_bits} carrier bits")
        # bchlib works on a shortened code: data bytes plus parity within 2^m - 1 bits.
        if self.data_bytes * 8 + self.ecc_bits > 2**self.bch_m - 1:
            raise ValueError(f"BCH over GF(2^{self.bch_m}) cannot hold {self.data_bytes * 8 + self.ecc_bits} bits")


MAX_CODE_BITS = 160
DEFAULT_CODE_BITS = 140  # scales 1, 2, 3 of the tokenizer: 14 tokens x 10 bits
DEFAULT_CARRIER_BITS = 256

# The default budget, the one the shipped weights use: t = 8 corrects 8 of the
# 252 codeword bits (3.2 %) by hard decoding; Chase decoding goes further.
PAYLOAD_BUDGET = PayloadBudget(version_bits=8, code_bits=140, mac_bits=32, carrier_bits=256, bch_m=9, bch_t=8)


def make_budget(n_bits: int = DEFAULT_CARRIER_BITS, code_bits: int = DEFAULT_CODE_BITS) -> PayloadBudget:
    """Build the budget with the most BCH parity that fits `n_bits` carrier bits."""
    payload_bits = 8 + code_bits + 32
    if n_bits <= payload_bits:
        raise ValueError(f"{n_bits} carrier bits cannot hold a {payload_bits}-bit payload; use fewer code bits")
    bch_m = max(5, math.ceil(math.log2(n_bits + 1)))
    bch_t = (n_bits - payload_bits) // bch_m
    budget = PayloadBudget(version_bits=8, code_bits=code_bits, mac_bits=32, carrier_bits=n_bits, bch_m=bch_m, bch_t=bch_t)
    budget.validate()
    return budget


@dataclass
class DecodedPayload:
    """Result of decoding one carrier word. Only `payload_valid` payloads are trustworthy.

    `version` and `code_bits` come from the corrected codeword when `ecc_ok`,
    else from the raw hard decisions. `carrier_bits` is the corrected carrier
    word (the bits the image should carry), None when the ECC failed.
    """

    version: int
    code_bits: np.ndarray  # (code_bits,) uint8
    ecc_ok: bool
    mac_ok: bool
    payload_valid: bool
    n_corrected: int  # carrier bits whose hard decision the ECC flipped; -1 when the ECC failed
    bit_confidence: float  # mean |soft| over the carrier bits
    carrier_bits: np.ndarray | None = None  # (n_bits,) uint8


def _keystream_bits(seed: bytes, n_bits: int) -> np.ndarray:
    stream = hashlib.shake_256(seed).digest(math.ceil(n_bits / 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8))[:n_bits]


def _as_bits(array: np.ndarray, length: int, name: str) -> np.ndarray:
    bits = np.asarray(array)
    if bits.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {bits.shape}")
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise ValueError(f"{name} must contain only 0 and 1")
    return bits.astype(np.uint8)


class PayloadCodec:
    """Keyed payload codec between (version, code bits) and `n_bits` carrier bits.

    When hard decoding fails, the `chase_bits` least reliable bits are tried
    flipped (2^chase_bits BCH decodes, about 0.1 ms each here). Each try is
    another chance for random input to land within t of a codeword. An
    unmarked image therefore passes the ECC with probability about
    2^chase_bits x 6e-8 (estimate: 4e-6 at the default), and the MAC then
    rejects it with probability 1 - 2^-32.
    """

    def __init__(self, key: SecretKey, n_bits: int = DEFAULT_CARRIER_BITS, code_bits: int = DEFAULT_CODE_BITS, chase_bits: int = 6):
        if not 0 <= chase_bits <= 12:
            raise ValueError(f"chase_bits must be in 0..12, got {chase_bits}")
        self.budget = make_budget(n_bits, code_bits)
        self.n_bits = n_bits
        self.code_bits = code_bits
        self.chase_bits = chase_bits
        self.key_id = key.key_id
        self._mac_key = key.derive("payload/mac")
        self._inner_stream = _keystream_bits(key.derive("payload/scramble"), self.budget.payload_bits)
        self._outer_stream = _keystream_bits(key.derive("payload/carrier-scramble"), n_bits)
        self._bch = bchlib.BCH(self.budget.bch_t, m=self.budget.bch_m)
        if self._bch.ecc_bits != self.budget.ecc_bits:
            raise RuntimeError(f"bchlib reports {self._bch.ecc_bits} parity bits, the budget expects {self.budget.ecc_bits}")
        self._flip_patterns = [np.array(p, dtype=bool) for p in itertools.product((False, True), repeat=chase_bits)][1:]

    def __repr__(self) -> str:
        return f"PayloadCodec(key_id={self.key_id!r}, n_bits={self.n_bits}, code_bits={self.code_bits}, t={self.budget.bch_t})"

    # --- encoding ---------------------------------------------------------

    def mac(self, version: int, code_bits: np.ndarray) -> np.ndarray:
        """(mac_bits,) uint8: truncated HMAC-SHA256 over the version and the code."""
        message = _MAC_DOMAIN + bytes([version]) + len(code_bits).to_bytes(2, "big") + np.packbits(code_bits).tobytes()
        digest = hmac.new(self._mac_key, message, hashlib.sha256).digest()
        return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[: self.budget.mac_bits]

    def encode(self, version: int, code_bits: np.ndarray) -> np.ndarray:
        """(n_bits,) uint8 carrier bits for one payload."""
        if not 0 <= int(version) <= 255:
            raise ValueError(f"version must be in 0..255, got {version}")
        code = _as_bits(code_bits, self.code_bits, "code_bits")
        version_bits = np.unpackbits(np.array([version], dtype=np.uint8))
        plain = np.concatenate([version_bits, code, self.mac(int(version), code)])
        return self._encode_scrambled(plain ^ self._inner_stream)

    def encode_batch(self, versions: int | np.ndarray, code_bits: np.ndarray) -> np.ndarray:
        """(B, n_bits) uint8 for (B, code_bits) codes and one version or (B,) versions."""
        codes = np.asarray(code_bits)
        if codes.ndim != 2:
            raise ValueError(f"code_bits must be (B, {self.code_bits}), got shape {codes.shape}")
        versions = np.broadcast_to(np.asarray(versions), (codes.shape[0],))
        return np.stack([self.encode(int(v), c) for v, c in zip(versions, codes)]) if len(codes) else np.zeros((0, self.n_bits), np.uint8)

    def _encode_scrambled(self, scrambled: np.ndarray) -> np.ndarray:
        parity = self._parity(scrambled)
        filler = np.zeros(self.budget.filler_bits, dtype=np.uint8)
        return np.concatenate([scrambled, parity, filler]) ^ self._outer_stream

    def _parity(self, scrambled: np.ndarray) -> np.ndarray:
        ecc = self._bch.encode(np.packbits(scrambled).tobytes())
        return np.unpackbits(np.frombuffer(ecc, dtype=np.uint8))[: self.budget.ecc_bits]

    # --- decoding ---------------------------------------------------------

    def decode(self, soft: np.ndarray) -> DecodedPayload:
        """Decode (n_bits,) soft values, positive = bit 1, |value| = reliability."""
        soft = np.asarray(soft, dtype=np.float64)
        if soft.shape != (self.n_bits,):
            raise ValueError(f"soft must have shape ({self.n_bits},), got {soft.shape}")
        soft = np.nan_to_num(soft, nan=0.0, posinf=1.0, neginf=-1.0)
        confidence = float(np.abs(soft).clip(0, 1).mean())

        # Undo the outer scrambling on the soft values: a keystream 1 flips the sign.
        budget = self.budget
        soft = np.where(self._outer_stream == 1, -soft, soft)[: budget.codeword_bits]
        hard = (soft > 0).astype(np.uint8)
        corrected = self._correct(hard, np.abs(soft))

        if corrected is None:
            plain = hard[: budget.payload_bits] ^ self._inner_stream
            version, code, _ = self._split(plain)
            return DecodedPayload(version, code, False, False, False, -1, confidence, None)

        plain = corrected[: budget.payload_bits] ^ self._inner_stream
        version, code, mac = self._split(plain)
        mac_ok = bool(hmac.compare_digest(np.packbits(mac).tobytes(), np.packbits(self.mac(version, code)).tobytes()))
        n_corrected = int((corrected != hard).sum())
        carrier = self._encode_scrambled(corrected[: budget.payload_bits])
        return DecodedPayload(version, code, True, mac_ok, mac_ok, n_corrected, confidence, carrier)

    def decode_batch(self, soft: np.ndarray) -> list[DecodedPayload]:
        """Decode (B, n_bits) soft values."""
        soft = np.asarray(soft)
        if soft.ndim != 2:
            raise ValueError(f"soft must be (B, {self.n_bits}), got shape {soft.shape}")
        return [self.decode(row) for row in soft]

    def reencode(self, decoded: DecodedPayload) -> np.ndarray:
        """(n_bits,) uint8: the carrier bits an intact image with this payload carries.

        Needs `ecc_ok`; the MAC may have failed (a forged payload still predicts
        its own carrier bits, which the evidence map compares against).
        """
        if not decoded.ecc_ok or decoded.carrier_bits is None:
            raise ValueError("the payload did not pass the ECC, so its carrier bits are unknown")
        return decoded.carrier_bits.copy()

    def _split(self, plain: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        version = int(np.packbits(plain[:8])[0])
        code = plain[8 : 8 + self.code_bits].copy()
        mac = plain[8 + self.code_bits :].copy()
        return version, code, mac

    def _try_bch(self, codeword: np.ndarray) -> np.ndarray | None:
        budget = self.budget
        data = bytearray(np.packbits(codeword[: budget.payload_bits]).tobytes())
        ecc_bits = np.zeros(self._bch.ecc_bytes * 8, dtype=np.uint8)
        ecc_bits[: budget.ecc_bits] = codeword[budget.payload_bits :]
        ecc = bytearray(np.packbits(ecc_bits).tobytes())
        n_errors = self._bch.decode(data, ecc)
        if n_errors < 0:
            return None
        if n_errors:
            self._bch.correct(data, ecc)
        fixed_data = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
        fixed_ecc = np.unpackbits(np.frombuffer(bytes(ecc), dtype=np.uint8))
        # A correction inside the byte padding means the word was not a codeword of our shortened code.
        if fixed_data[budget.payload_bits :].any() or fixed_ecc[budget.ecc_bits :].any():
            return None
        # bchlib 2.1.3 sometimes reports success for a word beyond t errors of any
        # codeword (repeated error locations, parity that does not match): about
        # 1 random word in 10^4 here. Re-encoding the result rejects those.
        fixed = np.concatenate([fixed_data[: budget.payload_bits], fixed_ecc[: budget.ecc_bits]])
        if n_errors and not np.array_equal(self._parity(fixed[: budget.payload_bits]), fixed[budget.payload_bits :]):
            return None
        return fixed

    def _correct(self, hard: np.ndarray, reliability: np.ndarray) -> np.ndarray | None:
        """Correct a hard-decided codeword, or return None.

        Chase-II: among the decodable flips of the least reliable bits, keep the
        codeword closest to the soft values.
        """
        corrected = self._try_bch(hard)
        if corrected is not None or self.chase_bits == 0:
            return corrected

        weakest = np.argsort(reliability, kind="stable")[: self.chase_bits]
        best, best_cost = None, math.inf
        for pattern in self._flip_patterns:
            trial = hard.copy()
            trial[weakest[pattern]] ^= 1
            candidate = self._try_bch(trial)
            if candidate is None:
                continue
            cost = float(reliability[candidate != hard].sum())
            if cost < best_cost:
                best, best_cost = candidate, cost
        return best
