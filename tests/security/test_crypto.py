from __future__ import annotations

import base64
from pathlib import Path

import pytest

from controlroom.errors import SecretError
from controlroom.security.crypto import (
    Cipher,
    DecryptError,
    generate_key,
    key_id_for,
    load_cipher,
    read_key_file,
    write_key_file,
)


def test_round_trip_with_associated_data() -> None:
    c = Cipher.from_key(generate_key())
    token = c.encrypt("xoxb-1-2-secret", "team:T1")
    assert token.startswith(f"v1:{c.primary_id}:")
    assert "xoxb" not in token
    assert c.decrypt(token, "team:T1") == "xoxb-1-2-secret"


def test_each_encryption_uses_a_fresh_nonce() -> None:
    c = Cipher.from_key(generate_key())
    assert c.encrypt("same", "a") != c.encrypt("same", "a")


def test_ciphertext_moved_to_another_row_fails_to_decrypt() -> None:
    c = Cipher.from_key(generate_key())
    token = c.encrypt("xoxb-1-2-secret", "team:T1")
    with pytest.raises(DecryptError, match="another row"):
        c.decrypt(token, "team:T2")


def test_wrong_master_key_is_refused_with_the_key_id() -> None:
    token = Cipher.from_key(generate_key()).encrypt("v")
    other = Cipher.from_key(generate_key())
    with pytest.raises(DecryptError, match="not in the key ring"):
        other.decrypt(token)


def test_same_key_id_but_different_key_fails_authentication() -> None:
    k1, k2 = generate_key(), generate_key()
    token = Cipher.from_key(f"main={k1}").encrypt("v")
    with pytest.raises(DecryptError, match="authentication failed"):
        Cipher.from_key(f"main={k2}").decrypt(token)


@pytest.mark.parametrize("part", [1, 2, 3])
def test_tampered_header_or_body_is_detected(part: int) -> None:
    c = Cipher.from_key(generate_key())
    pieces = c.encrypt("value").split(":")
    raw = bytearray(base64.b64decode(pieces[part])) if part > 1 else None
    if raw is None:
        pieces[1] = "kdeadbeef"
    else:
        raw[0] ^= 1
        pieces[part] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(DecryptError):
        c.decrypt(":".join(pieces))


def test_malformed_ciphertexts_raise_clear_errors() -> None:
    c = Cipher.from_key(generate_key())
    with pytest.raises(DecryptError, match="expected v1"):
        c.decrypt("plain-text")
    with pytest.raises(DecryptError, match="unsupported ciphertext version"):
        c.decrypt("v9:k:a:b")
    with pytest.raises(DecryptError, match="base64"):
        c.decrypt(f"v1:{c.primary_id}:!!:??")


def test_rotation_keeps_old_ciphertexts_readable_and_reencrypts_with_new_key() -> None:
    old = Cipher.from_key(generate_key())
    token = old.encrypt("value", "row")
    new = old.rotated()
    assert new.primary_id != old.primary_id
    assert new.key_ids == (new.primary_id, old.primary_id)
    assert new.needs_reencrypt(token)
    again = new.reencrypt(token, "row")
    assert not new.needs_reencrypt(again)
    assert new.without_old_keys().decrypt(again, "row") == "value"
    with pytest.raises(DecryptError):
        new.without_old_keys().decrypt(token, "row")


def test_bad_master_keys_are_refused() -> None:
    with pytest.raises(SecretError, match="32 bytes"):
        Cipher.from_key(base64.b64encode(b"short").decode())
    with pytest.raises(SecretError, match="not valid base64"):
        Cipher.from_key("not base64 at all!")


def test_load_cipher_from_environment_with_several_keys() -> None:
    k1, k2 = generate_key(), generate_key()
    c = load_cipher(environ={"CONTROLROOM_MASTER_KEY": f"{k1},{k2}"})
    assert c.key_ids == (key_id_for(base64.b64decode(k1)), key_id_for(base64.b64decode(k2)))


def test_key_file_with_owner_only_rights_is_accepted(tmp_path: Path) -> None:
    c = Cipher.from_key(generate_key()).rotated()
    path = tmp_path / "master.key"
    write_key_file(path, c)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_cipher(tmp_path, environ={})
    assert loaded.key_ids == c.key_ids
    assert loaded.decrypt(c.encrypt("x")) == "x"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, Cipher.from_key(generate_key()))
    path.chmod(mode)
    with pytest.raises(SecretError, match=f"permissions {mode:04o}.*chmod 600"):
        read_key_file(path)


def test_missing_master_key_names_both_ways_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="CONTROLROOM_MASTER_KEY or create"):
        load_cipher(tmp_path, environ={})


def test_key_file_named_by_environment_is_used(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.key"
    c = Cipher.from_key(generate_key())
    write_key_file(path, c)
    loaded = load_cipher(None, environ={"CONTROLROOM_MASTER_KEY_FILE": str(path)})
    assert loaded.primary_id == c.primary_id


def test_repr_does_not_show_keys() -> None:
    key = generate_key()
    assert key not in repr(Cipher.from_key(key))
