"""The secret key: loading, fingerprint and keyed derivations.

One key protects everything: it scrambles the payload, signs it (MAC) and
seeds the watermark carrier's permutation and dither. It comes from `HCR_KEY`
(hex, at least 128 bits) or from the file `HCR_KEY_FILE` names. Neither the
key nor any value derived from it is logged or shown by `repr`; `key_id`, a
fingerprint, is what rows and logs carry.
"""

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_KEY = "HCR_KEY"
ENV_KEY_FILE = "HCR_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/hcr/key")
MIN_KEY_BYTES = 16  # 128 bits
NEW_KEY_BYTES = 32  # 256 bits for keys this module creates

# Domain separation: the fingerprint and every derived key hash different
# prefixes, so publishing key_id reveals nothing about a derived key.
_KEY_ID_DOMAIN = b"hcr/key-id/v1\x00"
_DERIVE_DOMAIN = b"hcr/derive/v1\x00"


class KeyNotConfiguredError(RuntimeError):
    """No key in the environment, no key file, and creating one was not allowed."""


class InvalidKeyError(ValueError):
    """A configured key is not valid hex or is shorter than 128 bits."""


class SecretKey:
    """A secret key of at least 128 bits. `str` and `repr` show only `key_id`."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(f"a key must be bytes, got {type(key).__name__}")
        if len(key) < MIN_KEY_BYTES:
            raise InvalidKeyError(f"the key is {len(key) * 8} bits long; at least {MIN_KEY_BYTES * 8} bits are required")
        self._key = bytes(key)

    @classmethod
    def from_hex(cls, text: str, source: str = "the key") -> "SecretKey":
        """Parse a hex key; errors name `source` (an env variable or a path), never the value."""
        cleaned = "".join(text.split())
        if cleaned[:2].lower() == "0x":
            cleaned = cleaned[2:]
        try:
            key = bytes.fromhex(cleaned)
        except ValueError:
            raise InvalidKeyError(
                f"{source} is not valid hexadecimal: expected an even number of hex digits "
                f"(at least {MIN_KEY_BYTES * 2}), e.g. the output of `openssl rand -hex 32`"
            ) from None
        if len(key) < MIN_KEY_BYTES:
            raise InvalidKeyError(
                f"{source} contains a {len(key) * 8}-bit key; at least {MIN_KEY_BYTES * 8} bits "
                f"({MIN_KEY_BYTES * 2} hex digits) are required"
            )
        return cls(key)

    @classmethod
    def generate(cls) -> "SecretKey":
        """Create a fresh random 256-bit key."""
        return cls(secrets.token_bytes(NEW_KEY_BYTES))

    @property
    def key_id(self) -> str:
        """12 hex digits of SHA-256 over the domain-separated key: safe to store and log."""
        return hashlib.sha256(_KEY_ID_DOMAIN + self._key).hexdigest()[:12]

    def derive(self, purpose: str) -> bytes:
        """32 bytes of HMAC-SHA256(key, purpose): an independent subkey per purpose."""
        if not purpose:
            raise ValueError("purpose must be a non-empty string")
        return hmac.new(self._key, _DERIVE_DOMAIN + purpose.encode("utf-8"), hashlib.sha256).digest()

    def to_hex(self) -> str:
        """Encode the key as hex, for writing a key file. Never log it."""
        return self._key.hex()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"SecretKey(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self):
        # Pickling (Ray, multiprocessing) keeps the key; only text output hides it.
        return (SecretKey, (self._key,))


def _read_key_file(path: Path) -> SecretKey:
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise InvalidKeyError(f"key file {path} is not ASCII hex text") from None
    mode = path.stat().st_mode & 0o077
    if mode:
        logger.warning("key file %s is readable by group or others (mode %o); run: chmod 600 %s", path, path.stat().st_mode & 0o777, path)
    return SecretKey.from_hex(text, source=f"key file {path}")


def create_key_file(path: Path) -> SecretKey:
    """Write a new random key to `path` (mode 0600, parent folders 0700) and return it.

    Raises FileExistsError rather than overwrite a key, because images protected
    with the old key could no longer be verified.
    """
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SecretKey.generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.to_hex() + "\n")
    logger.warning("created a new secret key file %s (key_id %s); back it up: images protected with it need it to be audited", path, key.key_id)
    return key


def load_key(create: bool = False, key_file_default: Path | None = None) -> SecretKey:
    """Load the secret key from the environment or a key file.

    Order: `HCR_KEY` (hex), then the file `HCR_KEY_FILE` names, then the
    default key file (`key_file_default`, else ~/.config/hcr/key) if it
    exists. With `create=True` a missing key file (the named one, or the
    default) is created. Raises KeyNotConfiguredError when there is no key and
    `create` is False, InvalidKeyError when a key is malformed.
    """
    env_key = os.environ.get(ENV_KEY, "").strip()
    env_file = os.environ.get(ENV_KEY_FILE, "").strip()

    if env_key:
        if env_file:
            logger.info("both %s and %s are set; using %s", ENV_KEY, ENV_KEY_FILE, ENV_KEY)
        key = SecretKey.from_hex(env_key, source=ENV_KEY)
        logger.info("using the key from %s (key_id %s)", ENV_KEY, key.key_id)
        return key

    if env_file:
        path = Path(env_file).expanduser()
        if path.is_file():
            key = _read_key_file(path)
            logger.info("using the key file %s from %s (key_id %s)", path, ENV_KEY_FILE, key.key_id)
            return key
        if create:
            return create_key_file(path)
        raise KeyNotConfiguredError(f"{ENV_KEY_FILE} names {path}, which does not exist; point it at the key file used to protect the images")

    path = (key_file_default or DEFAULT_KEY_FILE).expanduser()
    if path.is_file():
        key = _read_key_file(path)
        logger.info("using the key file %s (key_id %s)", path, key.key_id)
        return key
    if create:
        return create_key_file(path)
    raise KeyNotConfiguredError(
        f"no secret key configured: set {ENV_KEY} to a hex key of at least {MIN_KEY_BYTES * 8} bits, "
        f"or {ENV_KEY_FILE} to a file containing one (no key file at {path} either). "
        "The key must be the one the images were protected with."
    )
