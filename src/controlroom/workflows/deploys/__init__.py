"""Deploys: CI webhooks -> a ledger of deployments -> one living Slack message each,
with a guarded one-click rollback.

The pure domain core lives here; the Slack / queue wiring is built on top of it:

- ``sources``: normalise provider webhooks into ``DeployEvent``; routes from configuration;
- ``ledger``: deployments, deliveries, deploy locks and the rollback state machine;
- ``messages``: Block Kit for the living message, thread lines and ``/deploy status``;
- ``executors``: rollback executors for GitHub, GitLab, Jenkins and a signed generic POST.
"""

from __future__ import annotations

from controlroom.workflows.deploys.events import (
    DeployEvent,
    DeployStatus,
    MalformedPayload,
    Normalised,
    Provider,
)
from controlroom.workflows.deploys.executors import (
    ExecutorConfig,
    HttpPolicy,
    RollbackExecutor,
    RollbackResult,
    build_executor,
)
from controlroom.workflows.deploys.ledger import (
    DeployLedger,
    DeployLock,
    Deployment,
    LockResult,
    UpsertResult,
)
from controlroom.workflows.deploys.messages import (
    ROLLBACK_ACTION_ID,
    RollbackRef,
    SlackMessage,
    decode_rollback_value,
    deployment_message,
)
from controlroom.workflows.deploys.sources import (
    DeployRoute,
    ResolvedRoute,
    normalise,
    normalise_request,
    resolve_route,
)

__all__ = [
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
