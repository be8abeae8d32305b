"""The public surface changes only on purpose."""

from __future__ import annotations

import controlroom


def test_the_package_root_exports_exactly_the_curated_api() -> None:
    assert sorted(controlroom.__all__) == [
        "AuthorizationDenied",
        "ConfigError",
        "Context",
        "ControlRoomError",
        "Envelope",
        "PermanentError",
        "RetryLater",
        "SlackApiError",
        "Workflow",
        "__version__",
    ]
    for name in controlroom.__all__:
        assert getattr(controlroom, name) is not None
