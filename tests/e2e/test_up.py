"""The first command of the README: ``controlroom up`` with no configuration starts the
hub and the sandbox workspace, wired together, and stops cleanly on Ctrl+C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, deadline: float) -> httpx.Response:
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_up_runs_the_hub_and_the_wired_sandbox_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    hub, sandbox = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLROOM_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from controlroom.cli import main; main()",
            "up",
            "--port",
            str(hub),
            "--sandbox-port",
            str(sandbox),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = wait_for(f"http://127.0.0.1:{hub}/readyz", deadline)
        assert ready.status_code == 200 and ready.json()["ok"] is True
        page = wait_for(f"http://127.0.0.1:{sandbox}/", deadline)
        assert page.status_code == 200
        # The sandbox answers the Web API with the token `up` wired into the hub.
        auth = httpx.post(f"http://127.0.0.1:{sandbox}/api/auth.test", timeout=5)
        assert auth.json() == {"ok": False, "error": "not_authed"}
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"Control Room is up at http://127.0.0.1:{hub}" in out
    assert f"Sandbox workspace at http://127.0.0.1:{sandbox}" in out
    assert "@priya" in out
    assert (tmp_path / ".controlroom" / "controlroom.db").exists()
    assert "Traceback" not in out
