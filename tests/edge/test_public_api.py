"""The edge's public surface changes only on purpose."""

from __future__ import annotations

import controlroom.edge as edge


def test_public_names_are_exactly_these() -> None:
    assert sorted(edge.__all__) == sorted(
        [
            "DEFAULT_SLACK_MAX_BODY",
            "SLACK_PATHS",
            "EdgeMetrics",
            "EdgeRejection",
            "GitHubVerifier",
            "GitLabVerifier",
            "InlineHandler",
            "InlineRegistry",
            "MemoryReplayCache",
            "ReplayCache",
            "SignedHookVerifier",
            "SlackControl",
            "SlackVerifier",
            "SocketModeIntake",
            "SqlReplayCache",
            "WebhookVerifier",
            "edge_routes",
            "hook_verifier",
            "parse_slack_body",
            "parse_socket_payload",
            "run_inline",
            "sign_hook",
            "sign_slack",
            "webhook_envelope",
        ]
    )


def test_every_public_name_resolves() -> None:
    for name in edge.__all__:
        assert getattr(edge, name) is not None


def test_socket_mode_intake_is_the_socket_mode_class() -> None:
    from controlroom.edge.socket_mode import SocketModeIntake

    assert edge.SocketModeIntake is SocketModeIntake
