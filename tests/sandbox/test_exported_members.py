"""The sandbox's public surface changes only on purpose."""

from __future__ import annotations

import ast
from pathlib import Path

import controlroom.sandbox as sandbox

EXPECTED = {
    "ActionError", "Actor", "ApiCall", "ApiError", "Channel", "DeliveryRecord", "FaultSpec",
    "Faults", "InteractiveResult", "NotFound", "RateLimiter", "RunningSandbox", "Sandbox",
    "SandboxConfig", "Seed", "SeedError", "State", "Team", "Token", "User", "load_seed",
    "serve_sandbox", "signature",
}  # fmt: skip


def test_public_names() -> None:
    assert set(sandbox.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(sandbox, name) is not None


def test_sandbox_imports_nothing_from_the_hub() -> None:
    package = Path(sandbox.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("controlroom"), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("controlroom"), f"{path.name}: {alias.name}"


def test_default_seed_ships_as_package_data() -> None:
    assert (Path(sandbox.__file__).parent / "seeds" / "default.yaml").is_file()
