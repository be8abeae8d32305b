"""The deploys package's public surface changes only on purpose."""

from __future__ import annotations

import controlroom.workflows.deploys as deploys


def test_public_names_are_exactly_these() -> None:
    assert sorted(deploys.__all__) == sorted(
        [
            "ROLLBACK_ACTION_ID",
            "DeployEvent",
            "DeployLedger",
            "DeployLock",
            "DeployRoute",
            "DeployStatus",
            "Deployment",
            "ExecutorConfig",
            "HttpPolicy",
            "LockResult",
            "MalformedPayload",
            "Normalised",
            "Provider",
            "ResolvedRoute",
            "RollbackExecutor",
            "RollbackRef",
            "RollbackResult",
            "SlackMessage",
            "UpsertResult",
            "build_executor",
            "decode_rollback_value",
            "deployment_message",
            "normalise",
            "normalise_request",
            "resolve_route",
        ]
    )
    for name in deploys.__all__:
        assert getattr(deploys, name) is not None, name
