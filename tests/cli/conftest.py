from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controlroom.cli_ops import register
from controlroom.sandbox import Sandbox, SandboxConfig, serve_sandbox


def build_app() -> typer.Typer:
    """A ``controlroom``-like app with the operator commands registered as the lead's
    cli.py registers them."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Control Room (test build)."""

    register(app)
    return app


@dataclass
class Env:
    tmp: Path
    data_dir: Path
    config: Path

    @property
    def db_path(self) -> Path:
        return self.data_dir / "controlroom.db"

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(f'data_dir = "{self.data_dir}"\n{extra}', encoding="utf-8")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A configuration file with a data directory under tmp_path, named by
    CONTROLROOM_CONFIG; no master key in the environment."""
    for name in ("CONTROLROOM_MASTER_KEY", "CONTROLROOM_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    e = Env(tmp_path, tmp_path / "data", tmp_path / "controlroom.toml")
    e.write_config()
    monkeypatch.setenv("CONTROLROOM_CONFIG", str(e.config))
    return e


@pytest.fixture
def app() -> typer.Typer:
    return build_app()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@dataclass(frozen=True)
class ThreadSandbox:
    sandbox: Sandbox
    api_url: str


@contextmanager
def sandbox_in_thread() -> Iterator[ThreadSandbox]:
    """Serve a sandbox on a loopback port from its own event loop in a thread, so a
    synchronous CLI invocation (which runs its own loop) can call it over HTTP."""
    sb = Sandbox(SandboxConfig(rate_limits=False))
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        async with serve_sandbox(sb, port=0) as running:
            box["api_url"] = running.api_url
            ready.set()
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    if not ready.wait(15) or "error" in box:
        raise RuntimeError(f"sandbox did not start: {box.get('error')}")
    try:
        yield ThreadSandbox(sb, str(box["api_url"]))
    finally:
        loop, stop = box["stop"]  # type: ignore[misc]
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
