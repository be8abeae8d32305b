from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from controlroom import config
from controlroom.config import load_settings, resolve_secret
from controlroom.errors import ConfigError, SecretError
from controlroom.security.crypto import Cipher, generate_key, load_cipher, write_key_file
from controlroom.security.secrets import (
    _crc32c,
    install_secret_schemes,
    keystore_delete,
    keystore_get,
    keystore_list,
    keystore_rotate_key,
    keystore_set,
    resolve_aws,
    resolve_gcp,
    resolve_vault,
    rotate_master_key,
)

from .conftest import serve_asgi


@pytest.fixture(autouse=True)
def restore_schemes() -> Iterator[None]:
    saved = dict(config._SCHEMES)
    yield
    config._SCHEMES.clear()
    config._SCHEMES.update(saved)


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.from_key(generate_key())


# ----------------------------------------------------------------------------- keystore
def test_keystore_round_trip_list_and_delete(tmp_path: Path, cipher: Cipher) -> None:
    keystore_set(tmp_path, "slack-signing", "sig-value-1", cipher=cipher)
    keystore_set(tmp_path, "github/hook", "hook-value-2", cipher=cipher)
    assert keystore_get(tmp_path, "slack-signing", cipher=cipher) == "sig-value-1"
    assert keystore_list(tmp_path) == ["github/hook", "slack-signing"]
    assert keystore_delete(tmp_path, "github/hook") is True
    assert keystore_delete(tmp_path, "github/hook") is False
    assert keystore_list(tmp_path) == ["slack-signing"]
    with pytest.raises(SecretError, match="no such entry"):
        keystore_get(tmp_path, "github/hook", cipher=cipher)


def test_keystore_file_is_owner_only_and_holds_no_plaintext(tmp_path: Path, cipher: Cipher) -> None:
    keystore_set(tmp_path, "bot", "xoxb-111-222-plaintextvalue", cipher=cipher)
    path = tmp_path / "keystore.json"
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_bytes()
    assert b"xoxb" not in raw
    assert b"plaintextvalue" not in raw


def test_keystore_with_wrong_master_key_is_refused(tmp_path: Path, cipher: Cipher) -> None:
    keystore_set(tmp_path, "bot", "value", cipher=cipher)
    with pytest.raises(SecretError, match="not in the key ring"):
        keystore_get(tmp_path, "bot", cipher=Cipher.from_key(generate_key()))


def test_keystore_entry_swapped_with_another_is_detected(tmp_path: Path, cipher: Cipher) -> None:
    keystore_set(tmp_path, "a", "value-a", cipher=cipher)
    keystore_set(tmp_path, "b", "value-b", cipher=cipher)
    path = tmp_path / "keystore.json"
    doc = json.loads(path.read_text())
    doc["entries"]["a"], doc["entries"]["b"] = doc["entries"]["b"], doc["entries"]["a"]
    path.write_text(json.dumps(doc))
    with pytest.raises(SecretError, match="authentication failed"):
        keystore_get(tmp_path, "a", cipher=cipher)


def test_keystore_file_readable_by_others_is_refused(tmp_path: Path, cipher: Cipher) -> None:
    keystore_set(tmp_path, "bot", "value", cipher=cipher)
    (tmp_path / "keystore.json").chmod(0o644)
    with pytest.raises(SecretError, match="permissions 0644"):
        keystore_get(tmp_path, "bot", cipher=cipher)


def test_keystore_rejects_bad_names_and_empty_values(tmp_path: Path, cipher: Cipher) -> None:
    with pytest.raises(SecretError, match="invalid name"):
        keystore_set(tmp_path, "../escape", "v", cipher=cipher)
    with pytest.raises(SecretError, match="empty"):
        keystore_set(tmp_path, "ok", "", cipher=cipher)


def test_keystore_rotate_key_reencrypts_every_entry(tmp_path: Path, cipher: Cipher) -> None:
    for i in range(3):
        keystore_set(tmp_path, f"s{i}", f"value-{i}", cipher=cipher)
    new = cipher.rotated()
    assert keystore_rotate_key(tmp_path, cipher, new) == 3
    only_new = new.without_old_keys()
    assert [keystore_get(tmp_path, f"s{i}", cipher=only_new) for i in range(3)] == [
        "value-0",
        "value-1",
        "value-2",
    ]
    with pytest.raises(SecretError):
        keystore_get(tmp_path, "s0", cipher=cipher)


def test_rotate_master_key_rewrites_the_key_file_and_the_keystore(
    tmp_path: Path, cipher: Cipher
) -> None:
    write_key_file(tmp_path / "master.key", cipher)
    keystore_set(tmp_path, "a", "value-a", cipher=cipher)
    rotation = rotate_master_key(tmp_path, environ={})
    assert (rotation.reencrypted, rotation.key_file) == (1, tmp_path / "master.key")
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    reloaded = load_cipher(tmp_path, environ={})
    assert reloaded.key_ids == (rotation.cipher.primary_id, cipher.primary_id)
    assert keystore_get(tmp_path, "a", cipher=reloaded.without_old_keys()) == "value-a"


def test_rotate_master_key_from_environment_leaves_no_file(tmp_path: Path) -> None:
    key = generate_key()
    keystore_set(tmp_path, "a", "value-a", cipher=Cipher.from_key(key))
    rotation = rotate_master_key(tmp_path, environ={"CONTROLROOM_MASTER_KEY": key})
    assert rotation.key_file is None
    assert not (tmp_path / "master.key").exists()
    env = {"CONTROLROOM_MASTER_KEY": rotation.cipher.export()}
    assert keystore_get(tmp_path, "a", cipher=load_cipher(tmp_path, environ=env)) == "value-a"


def test_keystore_reference_resolves_through_config_with_master_key_file(
    tmp_path: Path, cipher: Cipher
) -> None:
    write_key_file(tmp_path / "master.key", cipher)
    keystore_set(tmp_path, "slack-signing", "resolved-signing-secret", cipher=cipher)
    install_secret_schemes(tmp_path, environ={})
    settings = load_settings(
        environ={}, overrides={"slack.signing_secret": "keystore:slack-signing"}
    )
    assert settings.slack.signing_secret is not None
    assert settings.slack.signing_secret.get() == "resolved-signing-secret"
    assert "resolved" not in repr(settings.slack.signing_secret)


def test_master_key_environment_variable_is_not_taken_for_a_setting(
    tmp_path: Path, cipher: Cipher
) -> None:
    key = generate_key()
    keystore_set(tmp_path, "x", "value-x", cipher=Cipher.from_key(key))
    env = {"CONTROLROOM_MASTER_KEY": key}
    install_secret_schemes(tmp_path, environ=env)
    settings = load_settings(environ=env, overrides={"slack.bot_token": "keystore:x"})
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get() == "value-x"


def test_missing_keystore_entry_is_a_config_error_naming_the_key(
    tmp_path: Path, cipher: Cipher
) -> None:
    install_secret_schemes(tmp_path, cipher=cipher)
    with pytest.raises(ConfigError, match=r"slack.signing_secret .*keystore:nope.*no such entry"):
        load_settings(environ={}, overrides={"slack.signing_secret": "keystore:nope"})


def test_plain_text_secret_is_still_refused_after_install(tmp_path: Path) -> None:
    install_secret_schemes(tmp_path)
    with pytest.raises(SecretError, match="plain-text secret"):
        resolve_secret("just-a-secret-value", allow_plain=False)


# ----------------------------------------------------------------------------- vault
def _vault_app(store: dict[str, dict[str, Any]], token: str) -> Starlette:
    async def read(request: Request) -> JSONResponse:
        if request.headers.get("x-vault-token") != token:
            return JSONResponse({"errors": ["permission denied"]}, status_code=403)
        key = f"{request.path_params['mount']}/{request.path_params['path']}"
        if key not in store:
            return JSONResponse({"errors": []}, status_code=404)
        return JSONResponse(
            {
                "request_id": str(uuid.uuid4()),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": {
                    "data": store[key],
                    "metadata": {
                        "created_time": "2024-01-01T00:00:00.000000Z",
                        "custom_metadata": None,
                        "deletion_time": "",
                        "destroyed": False,
                        "version": 3,
                    },
                },
                "wrap_info": None,
                "warnings": None,
                "auth": None,
                "mount_type": "kv",
            }
        )

    return Starlette(routes=[Route("/v1/{mount}/data/{path:path}", read)])


@pytest.fixture
def vault_url() -> Iterator[str]:
    store = {
        "secret/controlroom/slack": {"signing": "vault-signing-value", "other": "o"},
        "kv/single": {"only": "single-value"},
    }
    with serve_asgi(_vault_app(store, "s.goodtoken")) as url:
        yield url


def test_vault_kv2_field_is_read(vault_url: str) -> None:
    env = {"VAULT_ADDR": vault_url, "VAULT_TOKEN": "s.goodtoken"}
    assert resolve_vault("secret/controlroom/slack#signing", env) == "vault-signing-value"
    assert resolve_vault("kv/single", env) == "single-value"


def test_vault_errors_name_the_reference(vault_url: str) -> None:
    env = {"VAULT_ADDR": vault_url, "VAULT_TOKEN": "s.goodtoken"}
    with pytest.raises(SecretError, match="several fields"):
        resolve_vault("secret/controlroom/slack", env)
    with pytest.raises(SecretError, match="field 'nope' not found"):
        resolve_vault("secret/controlroom/slack#nope", env)
    with pytest.raises(SecretError, match="no secret at this path"):
        resolve_vault("secret/missing#x", env)
    with pytest.raises(SecretError, match="permission denied"):
        resolve_vault("secret/controlroom/slack#signing", {**env, "VAULT_TOKEN": "bad"})
    with pytest.raises(SecretError, match="VAULT_ADDR and VAULT_TOKEN"):
        resolve_vault("secret/x#y", {})
    with pytest.raises(SecretError, match="MOUNT/PATH"):
        resolve_vault("justmount", env)


def test_vault_scheme_resolves_through_config(tmp_path: Path, vault_url: str) -> None:
    install_secret_schemes(
        tmp_path, environ={"VAULT_ADDR": vault_url, "VAULT_TOKEN": "s.goodtoken"}
    )
    secret = resolve_secret("vault:secret/controlroom/slack#signing", allow_plain=False)
    assert secret.get() == "vault-signing-value"


# ----------------------------------------------------------------------------- aws
@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    # moto keeps its state per process: start each test from an empty account.
    httpx.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset").raise_for_status()
    client = boto3.session.Session().client(
        "secretsmanager", region_name="eu-west-1", endpoint_url=env["AWS_ENDPOINT_URL"]
    )
    client.create_secret(Name="controlroom/signing", SecretString="aws-signing-value")
    client.create_secret(
        Name="controlroom/json", SecretString=json.dumps({"bot": "aws-bot-value", "n": 1})
    )
    client.close()
    try:
        yield env
    finally:
        server.stop()


def test_aws_secret_string_and_json_field(moto_env: dict[str, str]) -> None:
    assert resolve_aws("controlroom/signing", moto_env) == "aws-signing-value"
    assert resolve_aws("controlroom/json#bot", moto_env) == "aws-bot-value"


def test_aws_errors_are_clear(moto_env: dict[str, str]) -> None:
    with pytest.raises(SecretError, match="ResourceNotFoundException"):
        resolve_aws("controlroom/missing", moto_env)
    with pytest.raises(SecretError, match="not JSON"):
        resolve_aws("controlroom/signing#x", moto_env)
    with pytest.raises(SecretError, match="not a string"):
        resolve_aws("controlroom/json#n", moto_env)


def test_aws_scheme_resolves_through_config(tmp_path: Path, moto_env: dict[str, str]) -> None:
    install_secret_schemes(tmp_path, environ=moto_env)
    assert resolve_secret("aws-sm:controlroom/json#bot", allow_plain=False).get() == (
        "aws-bot-value"
    )


# ----------------------------------------------------------------------------- gcp
def _gcp_app(store: dict[str, bytes], corrupt: bool = False) -> Starlette:
    async def access(request: Request) -> JSONResponse:
        p = request.path_params
        key = f"projects/{p['project']}/secrets/{p['secret']}"
        if key not in store:
            return JSONResponse(
                {
                    "error": {
                        "code": 404,
                        "status": "NOT_FOUND",
                        "message": f"Secret [{key}] not found or has no versions.",
                    }
                },
                status_code=404,
            )
        data = store[key]
        crc = _crc32c(data) ^ (1 if corrupt else 0)
        return JSONResponse(
            {
                "name": f"projects/123456/secrets/{p['secret']}/versions/2",
                "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(crc)},
            }
        )

    return Starlette(
        routes=[Route("/v1/projects/{project}/secrets/{secret}/versions/{version}:access", access)]
    )


def test_crc32c_matches_the_published_check_value() -> None:
    assert _crc32c(b"123456789") == 0xE3069283


def test_gcp_secret_is_read_over_the_rest_transport() -> None:
    with serve_asgi(_gcp_app({"projects/p1/secrets/signing": b"gcp-signing-value"})) as url:
        value = resolve_gcp(
            "projects/p1/secrets/signing/versions/latest",
            client_options={"api_endpoint": url},
            credentials=AnonymousCredentials(),
        )
        short = resolve_gcp(
            "projects/p1/secrets/signing",
            client_options={"api_endpoint": url},
            credentials=AnonymousCredentials(),
        )
    assert value == short == "gcp-signing-value"


def test_gcp_missing_secret_and_corrupt_payload_are_errors() -> None:
    with serve_asgi(_gcp_app({"projects/p1/secrets/s": b"v"}, corrupt=True)) as url:
        opts = {"api_endpoint": url}
        with pytest.raises(SecretError, match="no such secret"):
            resolve_gcp(
                "projects/p1/secrets/missing",
                client_options=opts,
                credentials=AnonymousCredentials(),
            )
        with pytest.raises(SecretError, match="CRC32C"):
            resolve_gcp(
                "projects/p1/secrets/s", client_options=opts, credentials=AnonymousCredentials()
            )
    with pytest.raises(SecretError, match="expected gcp-sm:projects"):
        resolve_gcp("my-secret")


def test_gcp_scheme_resolves_through_config_with_endpoint_from_env(tmp_path: Path) -> None:
    with serve_asgi(_gcp_app({"projects/p1/secrets/bot": b"gcp-bot-value\n"})) as url:
        install_secret_schemes(
            tmp_path,
            environ={"GCP_SECRET_MANAGER_ENDPOINT": url},
            gcp_credentials=AnonymousCredentials(),
        )
        secret = resolve_secret("gcp-sm:projects/p1/secrets/bot", allow_plain=False)
    assert secret.get() == "gcp-bot-value"


def test_concurrent_keystore_writers_lose_no_entry(tmp_path: Path, cipher: Cipher) -> None:
    import threading

    def writer(n: int) -> None:
        for i in range(5):
            keystore_set(tmp_path, f"w{n}-{i}", f"value-{n}-{i}", cipher=cipher)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(keystore_list(tmp_path)) == 20
    assert keystore_get(tmp_path, "w3-4", cipher=cipher) == "value-3-4"


@pytest.mark.parametrize(
    ("module", "call", "extra"),
    [
        (
            "hvac",
            lambda: resolve_vault(
                "secret/x#y", {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t"}
            ),
            "vault",
        ),
        ("boto3", lambda: resolve_aws("name", {"AWS_REGION": "eu-west-1"}), "aws"),
        ("google.cloud.secretmanager", lambda: resolve_gcp("projects/p/secrets/s"), "gcp"),
    ],
)
def test_a_missing_client_library_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, call: Any, extra: str
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    with pytest.raises(SecretError, match=rf"pip install 'controlroom\[{extra}\]'"):
        call()
