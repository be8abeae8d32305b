"""Envelope encryption for secrets and tokens at rest (AES-256-GCM).

A ``Cipher`` holds a key ring: one primary key that encrypts, and older keys that only
decrypt, so ``rotate-key`` can re-encrypt everything while old ciphertexts stay
readable. Each key has an id (by default derived from the key itself: ``k`` + 8 hex
digits of its SHA-256), written into every ciphertext:

    v1:<key id>:<nonce base64>:<ciphertext+tag base64>

The version, the key id and caller-supplied associated data (e.g. ``team:T123``) are
authenticated, so a ciphertext copied onto another row, or a header edited, fails to
decrypt.

Master keys come from ``CONTROLROOM_MASTER_KEY`` (base64 of 32 bytes; several keys may
be given separated by commas or whitespace, primary first, each optionally ``id=key``)
or from a key file in the same format that must be readable by its owner only (0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlroom.errors import SecretError

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "Cipher",
    "DecryptError",
    "generate_key",
    "key_id_for",
    "load_cipher",
    "read_key_file",
    "write_key_file",
]

MASTER_KEY_ENV = "CONTROLROOM_MASTER_KEY"
MASTER_KEY_FILE_ENV = "CONTROLROOM_MASTER_KEY_FILE"
VERSION = "v1"
_NONCE = 12


class DecryptError(SecretError):
    """A ciphertext could not be decrypted: unknown key, wrong key, bound to another
    row, or tampered with."""

    def __init__(self, reason: str) -> None:
        super().__init__("(ciphertext)", reason)


def generate_key() -> str:
    """A new random master key, base64 of 32 bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def key_id_for(key: bytes) -> str:
    return "k" + hashlib.sha256(b"controlroom-key-id:" + key).hexdigest()[:8]


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(where, "master key is not valid base64") from None
    if len(key) != 32:
        raise SecretError(where, f"master key must be 32 bytes (base64), got {len(key)} bytes")
    return key


def parse_keys(text: str, where: str) -> list[tuple[str, bytes]]:
    """Parse ``key[,key...]`` or ``id=key`` entries (commas, whitespace or newlines);
    ``#`` starts a comment line. The first key is the primary."""
    out: list[tuple[str, bytes]] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for item in line.replace(",", " ").split():
            kid, sep, b64 = item.partition("=")
            if not sep or not b64:  # a bare key (its "=" is base64 padding)
                kid, b64 = "", item
            key = _decode_key(b64, where)
            kid = kid or key_id_for(key)
            if not kid.replace("-", "").replace("_", "").isalnum() or len(kid) > 64:
                raise SecretError(where, f"invalid key id {kid!r} (letters, digits, - and _)")
            out.append((kid, key))
    if not out:
        raise SecretError(where, "no master key found")
    return out


class Cipher:
    """AES-GCM with a key ring. ``encrypt`` uses the primary key; ``decrypt`` any key."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a Cipher needs at least one key")
        self._keys: dict[str, AESGCM] = {}
        self._raw: list[tuple[str, bytes]] = []
        for kid, key in keys:
            if len(key) != 32:
                raise ValueError(f"key {kid!r} must be 32 bytes")
            if kid in self._keys:
                continue
            self._keys[kid] = AESGCM(key)
            self._raw.append((kid, key))
        self.primary_id = keys[0][0]

    @classmethod
    def from_key(cls, key_b64: str) -> Cipher:
        return cls(parse_keys(key_b64, "(key)"))

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self._raw)

    def rotated(self, new_key_b64: str | None = None) -> Cipher:
        """A Cipher whose primary is a new key (given or generated), keeping the old keys
        for decryption."""
        new = parse_keys(new_key_b64 or generate_key(), "(new key)")[0]
        return Cipher([new, *[(k, v) for k, v in self._raw if k != new[0]]])

    def without_old_keys(self) -> Cipher:
        return Cipher(self._raw[:1])

    def export(self) -> str:
        """The key ring as key-file text (``id=base64`` per line, primary first)."""
        return "".join(f"{kid}={base64.b64encode(k).decode()}\n" for kid, k in self._raw)

    @staticmethod
    def _aad(kid: str, associated_data: str) -> bytes:
        return f"controlroom:{VERSION}:{kid}:{associated_data}".encode()

    def encrypt(self, plaintext: str | bytes, associated_data: str = "") -> str:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        kid = self.primary_id
        nonce = os.urandom(_NONCE)
        ct = self._keys[kid].encrypt(nonce, data, self._aad(kid, associated_data))
        b64 = base64.b64encode
        return f"{VERSION}:{kid}:{b64(nonce).decode()}:{b64(ct).decode()}"

    def decrypt_bytes(self, token: str, associated_data: str = "") -> bytes:
        parts = token.split(":")
        if len(parts) != 4:
            raise DecryptError("not a Control Room ciphertext (expected v1:kid:nonce:ct)")
        version, kid, nonce_b64, ct_b64 = parts
        if version != VERSION:
            raise DecryptError(f"unsupported ciphertext version {version!r}")
        aes = self._keys.get(kid)
        if aes is None:
            raise DecryptError(
                f"encrypted with key {kid!r}, which is not in the key ring "
                f"(known: {', '.join(self.key_ids)}); is the right master key set?"
            )
        try:
            nonce = base64.b64decode(nonce_b64, validate=True)
            ct = base64.b64decode(ct_b64, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("ciphertext is not valid base64") from None
        if len(nonce) != _NONCE:
            raise DecryptError("bad nonce length")
        try:
            return aes.decrypt(nonce, ct, self._aad(kid, associated_data))
        except InvalidTag:
            raise DecryptError(
                "authentication failed: wrong key, tampered data, or data bound to another row"
            ) from None

    def decrypt(self, token: str, associated_data: str = "") -> str:
        return self.decrypt_bytes(token, associated_data).decode("utf-8")

    def needs_reencrypt(self, token: str) -> bool:
        """True when ``token`` was not encrypted with the primary key."""
        parts = token.split(":", 2)
        return len(parts) < 2 or parts[1] != self.primary_id

    def reencrypt(self, token: str, associated_data: str = "") -> str:
        """Decrypt with whichever key and encrypt again with the primary key."""
        return self.encrypt(self.decrypt_bytes(token, associated_data), associated_data)

    def __repr__(self) -> str:
        return f"Cipher(primary={self.primary_id!r}, keys={len(self._raw)})"


def read_key_file(path: Path) -> list[tuple[str, bytes]]:
    """Read a key file, refusing one that group or others can read or write, or that
    belongs to another user."""
    where = f"key file {path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(where, "does not exist") from None
    except OSError as exc:
        raise SecretError(where, f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(where, "is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecretError(
            where,
            f"has permissions {mode:04o}; it must be readable by its owner only "
            f"(run: chmod 600 {path})",
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise SecretError(where, "belongs to another user")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(where, f"cannot read: {exc.strerror}") from None
    return parse_keys(text, where)


def write_key_file(path: Path, cipher: Cipher) -> None:
    """Write the key ring atomically with 0600 permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, cipher.export().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_cipher(
    data_dir: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    key_file: Path | None = None,
) -> Cipher:
    """The master Cipher: ``CONTROLROOM_MASTER_KEY`` if set, else the key file named by
    ``key_file``, ``CONTROLROOM_MASTER_KEY_FILE`` or ``<data_dir>/master.key``."""
    env = os.environ if environ is None else environ
    inline = env.get(MASTER_KEY_ENV, "").strip()
    if inline:
        return Cipher(parse_keys(inline, f"env:{MASTER_KEY_ENV}"))
    path = key_file or (Path(env[MASTER_KEY_FILE_ENV]) if env.get(MASTER_KEY_FILE_ENV) else None)
    if path is None and data_dir is not None:
        path = Path(data_dir) / "master.key"
    if path is None:
        raise SecretError(MASTER_KEY_ENV, "no master key: set it or point to a key file")
    if not path.exists() and key_file is None and not env.get(MASTER_KEY_FILE_ENV):
        raise SecretError(
            MASTER_KEY_ENV,
            f"no master key: set {MASTER_KEY_ENV} or create {path} (controlroom secrets init-key)",
        )
    return Cipher(read_key_file(path.expanduser()))
