"""Secret reference schemes beyond ``env:`` and ``file:``.

- ``keystore:NAME``  an encrypted local keystore file (``<data_dir>/keystore.json``,
  0600, each value AES-GCM-encrypted with the master key and bound to its name),
  managed by ``keystore_set/get/delete/list/rotate_key`` (``controlroom secrets ...``).
- ``vault:MOUNT/PATH#FIELD``  HashiCorp Vault KV v2 through ``hvac`` (``VAULT_ADDR``,
  ``VAULT_TOKEN``, optional ``VAULT_NAMESPACE``). ``vault:secret/controlroom#signing``
  reads field ``signing`` of ``secret/data/controlroom``.
- ``aws-sm:NAME[#JSON_FIELD]``  AWS Secrets Manager through ``boto3`` (region from
  ``AWS_REGION``/``AWS_DEFAULT_REGION``; ``AWS_ENDPOINT_URL`` is honoured by boto3).
- ``gcp-sm:projects/P/secrets/S[/versions/V]``  Google Secret Manager through
  ``google-cloud-secret-manager`` (REST transport; the payload CRC32C is checked).

``install_secret_schemes(data_dir)`` registers them all. Client libraries are imported
only when a reference is resolved; a missing one is a clear error naming the extra to
install. Errors name the reference, never the value.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlroom.config import register_secret_scheme
from controlroom.errors import SecretError
from controlroom.security.crypto import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    Cipher,
    DecryptError,
    load_cipher,
    write_key_file,
)

__all__ = [
    "KEYSTORE_FILE",
    "KeyRotation",
    "install_secret_schemes",
    "keystore_delete",
    "keystore_get",
    "keystore_list",
    "keystore_rotate_key",
    "keystore_set",
    "resolve_aws",
    "resolve_gcp",
    "resolve_vault",
    "rotate_master_key",
]

KEYSTORE_FILE = "keystore.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")


# --------------------------------------------------------------------------- keystore
def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise SecretError(
            f"keystore:{name}",
            "invalid name (1-128 characters: letters, digits, _ . - /; starts alphanumeric)",
        )


def _path(data_dir: Path) -> Path:
    return Path(data_dir) / KEYSTORE_FILE


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(data_dir) / (KEYSTORE_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(data_dir: Path) -> dict[str, str]:
    path = _path(data_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if st.st_mode & 0o077:
        raise SecretError(
            f"keystore {path}",
            f"has permissions {st.st_mode & 0o777:04o}; it must be 0600 (chmod 600 {path})",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SecretError(f"keystore {path}", f"cannot read: {exc}") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if doc.get("version") != 1 or not isinstance(entries, dict):
        raise SecretError(f"keystore {path}", "not a version 1 keystore file")
    return {str(k): str(v) for k, v in entries.items()}


def _write(data_dir: Path, entries: Mapping[str, str]) -> None:
    path = _path(data_dir)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        body = json.dumps({"version": 1, "entries": dict(sorted(entries.items()))}, indent=1)
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _aad(name: str) -> str:
    return f"keystore:{name}"


def keystore_set(data_dir: Path, name: str, value: str, *, cipher: Cipher | None = None) -> None:
    """Store (or replace) ``name``, encrypted with the master key."""
    _check_name(name)
    if not value:
        raise SecretError(f"keystore:{name}", "refusing to store an empty value")
    c = cipher or load_cipher(data_dir)
    with _locked(data_dir):
        entries = _read(data_dir)
        entries[name] = c.encrypt(value, _aad(name))
        _write(data_dir, entries)


def keystore_get(data_dir: Path, name: str, *, cipher: Cipher | None = None) -> str:
    _check_name(name)
    entries = _read(data_dir)
    if name not in entries:
        raise SecretError(f"keystore:{name}", f"no such entry in {_path(data_dir)}")
    c = cipher or load_cipher(data_dir)
    try:
        return c.decrypt(entries[name], _aad(name))
    except DecryptError as exc:
        raise SecretError(f"keystore:{name}", exc.reason) from None


def keystore_delete(data_dir: Path, name: str) -> bool:
    """Remove ``name``; returns whether it existed."""
    _check_name(name)
    with _locked(data_dir):
        entries = _read(data_dir)
        if entries.pop(name, None) is None:
            return False
        _write(data_dir, entries)
        return True


def keystore_list(data_dir: Path) -> list[str]:
    """Names only; values are never listed."""
    return sorted(_read(data_dir))


def keystore_rotate_key(data_dir: Path, old: Cipher, new: Cipher) -> int:
    """Re-encrypt every entry with ``new``'s primary key (``old`` must decrypt them).
    Returns how many entries were re-encrypted. All or nothing: the file is replaced
    only once every entry decrypted."""
    with _locked(data_dir):
        entries = _read(data_dir)
        out: dict[str, str] = {}
        for name, token in entries.items():
            try:
                value = old.decrypt_bytes(token, _aad(name))
            except DecryptError as exc:
                raise SecretError(f"keystore:{name}", exc.reason) from None
            out[name] = new.encrypt(value, _aad(name))
        _write(data_dir, out)
        return len(out)


@dataclass(frozen=True)
class KeyRotation:
    """The outcome of ``rotate_master_key``. ``key_file`` is the file rewritten (None when
    the key came from the environment: then set ``CONTROLROOM_MASTER_KEY`` to
    ``cipher.export()`` yourself)."""

    cipher: Cipher
    reencrypted: int
    key_file: Path | None


def rotate_master_key(
    data_dir: Path, *, environ: Mapping[str, str] | None = None, new_key: str | None = None
) -> KeyRotation:
    """``controlroom secrets rotate-key``: make a new primary master key (kept with the
    old ones for decryption), re-encrypt the keystore with it and, when the key ring lives
    in a file, rewrite that file (0600). Stored installations are re-encrypted separately
    with ``InstallationStore.reencrypt_all(rotation.cipher)``."""
    env = os.environ if environ is None else environ
    old = load_cipher(data_dir, environ=env)
    new = old.rotated(new_key)
    count = keystore_rotate_key(data_dir, old, new)
    key_file: Path | None = None
    if not env.get(MASTER_KEY_ENV, "").strip():
        key_file = Path(env.get(MASTER_KEY_FILE_ENV) or Path(data_dir) / "master.key")
        write_key_file(key_file, new)
    return KeyRotation(new, count, key_file)


# --------------------------------------------------------------------------- helpers
def _require(module: str, extra: str, ref: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SecretError(
            ref, f"the {module!r} package is needed: pip install 'controlroom[{extra}]'"
        ) from None


def _pick_field(ref: str, data: Any, field: str) -> str:
    if field:
        if not isinstance(data, dict) or field not in data:
            raise SecretError(ref, f"field {field!r} not found")
        value = data[field]
    elif isinstance(data, dict):
        if len(data) != 1:
            raise SecretError(ref, "the secret has several fields; name one with #FIELD")
        value = next(iter(data.values()))
    else:
        value = data
    if not isinstance(value, str) or not value:
        raise SecretError(ref, "value is empty or not a string")
    return value


# --------------------------------------------------------------------------- vault
def resolve_vault(rest: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    ref = f"vault:{rest}"
    path, _, field = rest.partition("#")
    mount, _, sub = path.strip("/").partition("/")
    if not mount or not sub:
        raise SecretError(ref, "expected vault:MOUNT/PATH#FIELD (KV v2)")
    addr, token = env.get("VAULT_ADDR", ""), env.get("VAULT_TOKEN", "")
    if not addr or not token:
        raise SecretError(ref, "VAULT_ADDR and VAULT_TOKEN must be set")
    hvac = _require("hvac", "vault", ref)
    client = hvac.Client(url=addr, token=token, namespace=env.get("VAULT_NAMESPACE") or None)
    try:
        resp = client.secrets.kv.v2.read_secret_version(
            path=sub, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        raise SecretError(ref, "no secret at this path") from None
    except hvac.exceptions.Forbidden:
        raise SecretError(ref, "permission denied by Vault (check VAULT_TOKEN policy)") from None
    except hvac.exceptions.VaultError as exc:
        raise SecretError(ref, f"Vault error: {type(exc).__name__}") from None
    except OSError as exc:
        raise SecretError(ref, f"cannot reach Vault at {addr}: {type(exc).__name__}") from None
    finally:
        client.adapter.close()
    try:
        data = resp["data"]["data"]
    except (KeyError, TypeError):
        raise SecretError(ref, "unexpected Vault response (is this a KV v2 mount?)") from None
    return _pick_field(ref, data, field)


# --------------------------------------------------------------------------- aws
def resolve_aws(rest: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    ref = f"aws-sm:{rest}"
    name, _, field = rest.partition("#")
    if not name:
        raise SecretError(ref, "expected aws-sm:NAME[#JSON_FIELD]")
    boto3 = _require("boto3", "aws", ref)
    botocore_exc = _require("botocore.exceptions", "aws", ref)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    endpoint = env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") or env.get("AWS_ENDPOINT_URL")
    try:
        client = boto3.session.Session().client(
            "secretsmanager", region_name=region, endpoint_url=endpoint or None
        )
    except botocore_exc.NoRegionError:
        raise SecretError(ref, "no AWS region: set AWS_REGION") from None
    try:
        resp = client.get_secret_value(SecretId=name)
    except botocore_exc.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretError(ref, f"AWS Secrets Manager: {code}") from None
    except botocore_exc.NoCredentialsError:
        raise SecretError(ref, "no AWS credentials found") from None
    except botocore_exc.BotoCoreError as exc:
        raise SecretError(ref, f"AWS Secrets Manager: {type(exc).__name__}") from None
    finally:
        client.close()
    if resp.get("SecretString") is not None:
        raw: str = resp["SecretString"]
    else:
        raw = bytes(resp.get("SecretBinary") or b"").decode("utf-8", "replace")
    if not field:
        if not raw:
            raise SecretError(ref, "value is empty")
        return raw
    try:
        data = json.loads(raw)
    except ValueError:
        raise SecretError(ref, "secret is not JSON, so #FIELD cannot apply") from None
    return _pick_field(ref, data, field)


# --------------------------------------------------------------------------- gcp
def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


_GCP_NAME = re.compile(r"^projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?$")


def resolve_gcp(
    rest: str, *, client_options: Mapping[str, Any] | None = None, credentials: Any = None
) -> str:
    ref = f"gcp-sm:{rest}"
    if not _GCP_NAME.match(rest):
        raise SecretError(ref, "expected gcp-sm:projects/P/secrets/S[/versions/V]")
    name = rest if "/versions/" in rest else rest + "/versions/latest"
    sm = _require("google.cloud.secretmanager", "gcp", ref)
    gexc = _require("google.api_core.exceptions", "gcp", ref)
    auth_exc = _require("google.auth.exceptions", "gcp", ref)
    try:
        client = sm.SecretManagerServiceClient(
            transport="rest", client_options=dict(client_options or {}), credentials=credentials
        )
    except auth_exc.DefaultCredentialsError:
        raise SecretError(ref, "no Google credentials found") from None
    try:
        resp = client.access_secret_version(request={"name": name}, timeout=10)
    except gexc.NotFound:
        raise SecretError(ref, "no such secret or version") from None
    except gexc.PermissionDenied:
        raise SecretError(ref, "permission denied by Secret Manager") from None
    except gexc.GoogleAPIError as exc:
        raise SecretError(ref, f"Secret Manager: {type(exc).__name__}") from None
    finally:
        client.transport.close()
    data: bytes = resp.payload.data
    if "data_crc32c" in resp.payload and _crc32c(data) != int(resp.payload.data_crc32c):
        raise SecretError(ref, "payload checksum (CRC32C) mismatch: data corrupted")
    value = data.decode("utf-8", "replace").strip()
    if not value:
        raise SecretError(ref, "value is empty")
    return value


# --------------------------------------------------------------------------- install
def install_secret_schemes(
    data_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    cipher: Cipher | Callable[[], Cipher] | None = None,
    gcp_client_options: Mapping[str, Any] | None = None,
    gcp_credentials: Any = None,
) -> None:
    """Register ``keystore:``, ``vault:``, ``aws-sm:`` and ``gcp-sm:`` with
    ``controlroom.config``. The master key is loaded on first ``keystore:`` use."""
    data_dir = Path(data_dir)

    def get_cipher() -> Cipher:
        if isinstance(cipher, Cipher):
            return cipher
        if cipher is not None:
            return cipher()
        return load_cipher(data_dir, environ=environ)

    def keystore(rest: str) -> str:
        return keystore_get(data_dir, rest, cipher=get_cipher())

    def gcp(rest: str) -> str:
        env = os.environ if environ is None else environ
        options = dict(gcp_client_options or {})
        if "api_endpoint" not in options and env.get("GCP_SECRET_MANAGER_ENDPOINT"):
            options["api_endpoint"] = env["GCP_SECRET_MANAGER_ENDPOINT"]
        return resolve_gcp(rest, client_options=options, credentials=gcp_credentials)

    register_secret_scheme("keystore", keystore)
    register_secret_scheme("vault", lambda rest: resolve_vault(rest, environ))
    register_secret_scheme("aws-sm", lambda rest: resolve_aws(rest, environ))
    register_secret_scheme("gcp-sm", gcp)
