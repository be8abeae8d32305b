"""``controlroom secrets``: the encrypted local keystore (``keystore:NAME`` references).

Values never travel on the command line (where ``ps`` and shell history would keep
them): ``set`` reads standard input or a hidden prompt. Every change, every read and
every key rotation is recorded in the audit log (names only, never values)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controlroom.config import Settings
from controlroom.errors import ControlRoomError
from controlroom.ops._common import ConfigOpt, actor, fail, load, open_db, run

if TYPE_CHECKING:
    from controlroom.security.secrets import KeyRotation

__all__ = ["rotate_key", "secrets_app", "tty_warning"]

secrets_app = typer.Typer(
    help="Manage the encrypted keystore (keystore:NAME secret references).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="entry name, e.g. slack-signing-secret")]


async def _audit(settings: Settings, action: str, target: str, **details: object) -> None:
    from controlroom.security.audit import AuditLog

    async with open_db(settings, must_exist=False) as db:
        await AuditLog(db).record(
            actor=actor(), action=action, target=target, outcome="allowed", details=details
        )


def tty_warning(is_tty: bool) -> str | None:
    """The warning ``secrets get`` prints on stderr when the value goes to a terminal."""
    if not is_tty:
        return None
    return (
        "warning: the secret is shown on your terminal (scrollback, screen sharing); "
        "pipe it instead, e.g. controlroom secrets get NAME | pbcopy"
    )


@secrets_app.command("init-key")
def init_key(config: ConfigOpt = None) -> None:
    """Create a new master key file (0600) for the keystore and stored tokens."""
    from controlroom.security.crypto import (
        MASTER_KEY_ENV,
        MASTER_KEY_FILE_ENV,
        Cipher,
        generate_key,
        write_key_file,
    )

    settings = load(config)
    if os.environ.get(MASTER_KEY_ENV, "").strip():
        raise fail(f"{MASTER_KEY_ENV} is set: the master key comes from the environment")
    path = Path(os.environ.get(MASTER_KEY_FILE_ENV) or settings.data_dir / "master.key")
    if path.exists():
        raise fail(f"{path} already exists; use 'controlroom secrets rotate-key' to change it")
    write_key_file(path, Cipher.from_key(generate_key()))
    typer.echo(f"master key written to {path} (mode 0600); back it up somewhere safe")


@secrets_app.command("set")
def secrets_set(
    name: NameArg,
    config: ConfigOpt = None,
    value_stdin: Annotated[
        bool, typer.Option("--value-stdin", help="read the value from standard input")
    ] = False,
) -> None:
    """Store NAME encrypted; the value comes from stdin or a hidden prompt, never argv."""
    settings = load(config)
    if value_stdin:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    else:
        value = typer.prompt(f"value for {name}", hide_input=True, confirmation_prompt=True)
    if not value:
        raise fail("refusing to store an empty value")
    from controlroom.security.secrets import keystore_list, keystore_set

    try:
        existed = name in keystore_list(settings.data_dir)
        keystore_set(settings.data_dir, name, value)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    run(_audit(settings, "secrets.set", f"keystore:{name}", replaced=existed))
    typer.echo(f"{'replaced' if existed else 'stored'} keystore:{name}")


@secrets_app.command("get")
def secrets_get(name: NameArg, config: ConfigOpt = None) -> None:
    """Print the value of NAME (warns when standard output is a terminal)."""
    from controlroom.security.secrets import keystore_get

    settings = load(config)
    try:
        value = keystore_get(settings.data_dir, name)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    run(_audit(settings, "secrets.get", f"keystore:{name}"))
    warning = tty_warning(sys.stdout.isatty())
    if warning:
        typer.echo(warning, err=True)
    typer.echo(value)


@secrets_app.command("list")
def secrets_list(config: ConfigOpt = None) -> None:
    """List entry names (never values)."""
    from controlroom.security.secrets import keystore_list

    settings = load(config)
    try:
        names = keystore_list(settings.data_dir)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    if not names:
        typer.echo("the keystore is empty", err=True)
    for entry in names:
        typer.echo(entry)


@secrets_app.command("delete")
def secrets_delete(name: NameArg, config: ConfigOpt = None) -> None:
    """Remove NAME from the keystore."""
    from controlroom.security.secrets import keystore_delete

    settings = load(config)
    try:
        existed = keystore_delete(settings.data_dir, name)
    except ControlRoomError as exc:
        raise fail(str(exc)) from None
    if not existed:
        raise fail(f"no entry keystore:{name}")
    run(_audit(settings, "secrets.delete", f"keystore:{name}"))
    typer.echo(f"deleted keystore:{name}")


async def rotate_key(settings: Settings) -> tuple[KeyRotation, int, Path | None]:
    """Make a new primary master key, re-encrypt the keystore and every stored
    installation token with it, and audit the rotation. Returns the rotation, the
    number of installations re-encrypted and, when the key came from the environment,
    the 0600 file holding the new key ring (to put into ``CONTROLROOM_MASTER_KEY``)."""
    from controlroom.security.crypto import write_key_file
    from controlroom.security.installations import InstallationStore
    from controlroom.security.secrets import rotate_master_key

    rotation = rotate_master_key(settings.data_dir)
    pending: Path | None = None
    if rotation.key_file is None:
        pending = settings.data_dir / "master.key.rotated"
        write_key_file(pending, rotation.cipher)
    async with open_db(settings, must_exist=False) as db:
        store = InstallationStore(db, rotation.cipher)
        installs = await store.reencrypt_all(rotation.cipher)
        from controlroom.security.audit import AuditLog

        await AuditLog(db).record(
            actor=actor(),
            action="secrets.rotate_key",
            target="master key",
            outcome="allowed",
            details={
                "primary_key_id": rotation.cipher.primary_id,
                "keystore_entries": rotation.reencrypted,
                "installations": installs,
            },
        )
    return rotation, installs, pending


@secrets_app.command("rotate-key")
def secrets_rotate_key(config: ConfigOpt = None) -> None:
    """New master key: re-encrypt the keystore and stored tokens, keep old keys for
    decryption, and say where the new key ring is."""
    settings = load(config)
    from controlroom.security.crypto import MASTER_KEY_ENV

    rotation, installs, pending = run(rotate_key(settings))
    typer.echo(
        f"new primary key {rotation.cipher.primary_id}: re-encrypted {rotation.reencrypted} "
        f"keystore entr{'y' if rotation.reencrypted == 1 else 'ies'} and {installs} "
        f"installation{'' if installs == 1 else 's'}"
    )
    if rotation.key_file is not None:
        typer.echo(f"key ring written to {rotation.key_file} (mode 0600; old keys kept)")
    elif pending is not None:
        typer.echo(
            f"the key came from {MASTER_KEY_ENV}: set it to the contents of {pending} "
            "(new key first, old keys after), then delete that file"
        )
