import logging
import pickle
import stat

import pytest

from hcr_model.keys import InvalidKeyError, KeyNotConfiguredError, SecretKey, create_key_file, load_key

KEY_HEX = "00112233445566778899aabbccddeeff" * 2


@pytest.fixture
def no_key_env(monkeypatch):
    monkeypatch.delenv("HCR_KEY", raising=False)
    monkeypatch.delenv("HCR_KEY_FILE", raising=False)


def test_key_from_env(monkeypatch):
    monkeypatch.setenv("HCR_KEY", KEY_HEX)
    monkeypatch.delenv("HCR_KEY_FILE", raising=False)
    key = load_key()
    assert key == SecretKey(bytes.fromhex(KEY_HEX))


def test_env_key_wins_over_key_file(monkeypatch, tmp_path):
    other = tmp_path / "key"
    other.write_text("ff" * 32)
    monkeypatch.setenv("HCR_KEY", KEY_HEX)
    monkeypatch.setenv("HCR_KEY_FILE", str(other))
    assert load_key() == SecretKey(bytes.fromhex(KEY_HEX))


def test_key_from_named_file(no_key_env, monkeypatch, tmp_path):
    path = tmp_path / "key"
    path.write_text(KEY_HEX + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("HCR_KEY_FILE", str(path))
    assert load_key() == SecretKey(bytes.fromhex(KEY_HEX))


def test_missing_named_file_raises(no_key_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HCR_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(KeyNotConfiguredError, match="does not exist"):
        load_key()


def test_create_named_file(no_key_env, monkeypatch, tmp_path):
    path = tmp_path / "sub" / "key"
    monkeypatch.setenv("HCR_KEY_FILE", str(path))
    key = load_key(create=True)
    assert path.is_file()
    assert load_key() == key


def test_no_key_raises_without_create(no_key_env, tmp_path):
    with pytest.raises(KeyNotConfiguredError, match="HCR_KEY"):
        load_key(key_file_default=tmp_path / "key")
    assert not (tmp_path / "key").exists()


def test_create_default_file(no_key_env, tmp_path, caplog):
    path = tmp_path / "config" / "hcr" / "key"
    with caplog.at_level(logging.INFO, logger="hcr_model.keys"):
        key = load_key(create=True, key_file_default=path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    assert str(path) in caplog.text
    assert key.to_hex() not in caplog.text
    # The next run finds the file it created, with or without create.
    assert load_key(key_file_default=path) == key


def test_create_never_overwrites(tmp_path):
    path = tmp_path / "key"
    path.write_text(KEY_HEX)
    with pytest.raises(FileExistsError):
        create_key_file(path)
    assert path.read_text() == KEY_HEX


def test_invalid_hex_not_echoed(monkeypatch):
    secret_looking = "zz" + KEY_HEX[2:]
    monkeypatch.setenv("HCR_KEY", secret_looking)
    with pytest.raises(InvalidKeyError) as raised:
        load_key()
    assert "HCR_KEY" in str(raised.value)
    assert secret_looking not in str(raised.value)
    assert KEY_HEX[2:20] not in str(raised.value)


def test_short_key_rejected(monkeypatch):
    monkeypatch.setenv("HCR_KEY", "ab" * 15)  # 120 bits
    with pytest.raises(InvalidKeyError, match="at least 128 bits"):
        load_key()


def test_short_key_file_rejected(no_key_env, tmp_path):
    path = tmp_path / "key"
    path.write_text("ab" * 8)
    with pytest.raises(InvalidKeyError, match=str(path)):
        load_key(key_file_default=path)


def test_repr_hides_key():
    key = SecretKey(bytes.fromhex(KEY_HEX))
    for text in (repr(key), str(key), f"{key}"):
        assert KEY_HEX not in text
        assert key.key_id in text


def test_key_id_fingerprint():
    key = SecretKey(bytes.fromhex(KEY_HEX))
    other = SecretKey(bytes.fromhex("ff" + KEY_HEX[2:]))
    assert len(key.key_id) == 12
    int(key.key_id, 16)
    assert key.key_id != other.key_id
    assert key.key_id not in KEY_HEX


def test_derive_separates_purposes():
    key = SecretKey(bytes.fromhex(KEY_HEX))
    mac = key.derive("payload/mac")
    assert len(mac) == 32
    assert mac == SecretKey(bytes.fromhex(KEY_HEX)).derive("payload/mac")
    assert mac != key.derive("payload/scramble")
    assert mac != SecretKey(bytes.fromhex("ff" + KEY_HEX[2:])).derive("payload/mac")
    with pytest.raises(ValueError):
        key.derive("")


def test_key_survives_pickle():
    key = SecretKey(bytes.fromhex(KEY_HEX))
    assert pickle.loads(pickle.dumps(key)) == key
