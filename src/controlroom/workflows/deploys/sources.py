"""Normalise CI providers' webhooks into one ``DeployEvent``.

Errors: ``MalformedPayload`` (a ``PermanentError``: retrying cannot help) names the
provider and the missing or invalid field. Events that are valid but are not about a
deploy (``ping``, ``push``, a GitLab environment ``stop`` job...) are not errors:
``normalise`` returns ``Normalised(event=None, reason=...)`` and the caller counts them.

Providers and the events understood:

- ``github``: ``workflow_run``, ``workflow_job``, ``deployment``, ``deployment_status``
  (event name from ``X-GitHub-Event``, delivery id from ``X-GitHub-Delivery``).
- ``gitlab``: ``Pipeline Hook``, ``Job Hook`` (``object_kind: build``; older GitLab calls
  it ``Build Hook``), ``Deployment Hook`` (``X-Gitlab-Event``; delivery id from
  ``Idempotency-Key``, else ``X-Gitlab-Event-UUID``).
- ``jenkins``: the Notification plugin's JSON (phases QUEUED, STARTED, COMPLETED,
  FINALIZED; statuses SUCCESS, UNSTABLE, FAILURE, ABORTED, NOT_BUILT). Only ``name`` and
  ``build.number`` are required; every other field may be missing. Jenkins sends no
  delivery id, so one is derived from the job, build number, phase and status.
- ``generic``: the JSON format below, for Argo CD and any script.

Generic JSON format (one object; only the first four keys are required)::

    {
      "service": "checkout",              # required
      "environment": "production",        # required
      "version": "v1.4.2",                # required: what is deployed (tag, image, sha)
      "status": "succeeded",              # required, see below
      "commit": "9f1c2e7...",             # sha, or {"sha": "...", "url": "..."}
      "commit_url": "https://...",        # optional link for the version
      "author": "Jane Doe <jane@example.com>",  # or {"name", "email", "login"}
      "url": "https://ci.example.com/run/42",   # the run / application page
      "run_id": "checkout-prod-42",       # identifies the run across events;
                                          # default "<service>/<environment>/<version>"
      "started_at": "2026-11-30T10:00:00Z",     # ISO 8601 or unix seconds; "" = unknown
      "finished_at": "",
      "delivery_id": "...",               # or header X-ControlRoom-Delivery; default:
                                          # a hash of the body (a resend is a duplicate)
      "details": {"cluster": "eu-1"}      # optional strings shown in the thread
    }

``status`` is one of queued, in_progress, succeeded, failed, cancelled, unstable,
case-insensitive, and also accepts the common words for them: pending, running,
started, success, ok, failure, error, aborted, canceled, and Argo CD's operation phases
Running, Succeeded, Failed, Error, Terminating.

An Argo CD notification template that sends it (``argocd-notifications-cm``; the
service and trigger syntax is Argo CD's ``service.webhook`` documentation)::

    service.webhook.controlroom: |
      url: https://controlroom.example.com/hooks/argocd
      headers:
      - name: Content-Type
        value: application/json
      - name: Authorization
        value: Bearer $controlroom-hook-token
    template.controlroom-deploy: |
      webhook:
        controlroom:
          method: POST
          body: |
            {{- $rev := .app.status.operationState.operation.sync.revision -}}
            {
              "service": "{{.app.metadata.name}}",
              "environment": "{{.app.spec.destination.namespace}}",
              "version": "{{$rev}}",
              "status": "{{.app.status.operationState.phase}}",
              "commit": "{{$rev}}",
              "author": "{{(call .repo.GetCommitMetadata $rev).Author}}",
              "url": "{{.context.argocdUrl}}/applications/{{.app.metadata.name}}",
              "run_id": "{{.app.metadata.name}}/{{.app.status.operationState.startedAt}}",
              "started_at": "{{.app.status.operationState.startedAt}}",
              "finished_at": "{{.app.status.operationState.finishedAt}}"
            }
    trigger.on-deploy-controlroom: |
      - when: app.status.operationState != nil and
          app.status.operationState.phase in ['Running']
        oncePer: app.status.operationState?.syncResult?.revision
        send: [controlroom-deploy]
      - when: app.status.operationState != nil and
          app.status.operationState.phase in ['Succeeded', 'Error', 'Failed']
        oncePer: app.status.operationState?.syncResult?.revision
        send: [controlroom-deploy]

and on the Application, the annotation
``notifications.argoproj.io/subscribe.on-deploy-controlroom.controlroom: ""``.

Routing: ``DeployRoute`` (configuration) says which repository / project / job, workflow,
branch and environment map to which service, environment and Slack channel;
``resolve_route(routes, event)`` returns the first route that matches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from controlroom.errors import ConfigError
from controlroom.workflows.deploys._scm import normalise_github, normalise_gitlab
from controlroom.workflows.deploys.events import (
    _PROVIDERS,
    TERMINAL,
    DeployEvent,
    DeployStatus,
    MalformedPayload,
    Normalised,
    Provider,
    _body_hash,
    _branch,
    _commit_url,
    _headers,
    _ignored,
    _items,
    _obj,
    _req_obj,
    _req_str,
    _s,
    parse_time,
)

__all__ = [
    "TERMINAL",
    "DeployEvent",
    "DeployRoute",
    "DeployStatus",
    "MalformedPayload",
    "Normalised",
    "Provider",
    "ResolvedRoute",
    "RouteMatch",
    "load_routes",
    "normalise",
    "normalise_request",
    "parse_time",
    "resolve_route",
]

# ---------------------------------------------------------------------------------------
# Jenkins (Notification plugin)

_JENKINS_RESULTS: dict[str, DeployStatus] = {
    "SUCCESS": "succeeded",
    "UNSTABLE": "unstable",
    "FAILURE": "failed",
    "ABORTED": "cancelled",
    "NOT_BUILT": "cancelled",
}
_JENKINS_VERSION_PARAMS = ("VERSION", "version", "IMAGE_TAG", "TAG", "RELEASE")
_JENKINS_ENV_PARAMS = ("ENVIRONMENT", "environment", "ENV", "DEPLOY_ENV", "TARGET_ENV")


def _jenkins(payload: Mapping[str, Any], delivery: str) -> Normalised:
    name = _req_str("jenkins", payload, "name")
    build = _req_obj("jenkins", payload, "build")
    if not isinstance(build, Mapping):
        raise MalformedPayload("jenkins", "build", "not an object")
    number = _req_str("jenkins", payload, "build.number")
    phase = _s(build.get("phase")).upper()
    result = _s(build.get("status")).upper()
    status: DeployStatus
    if phase == "QUEUED":
        status = "queued"
    elif phase == "STARTED":
        status = "in_progress"  # build.status may be the previous build's result here
    elif phase in ("COMPLETED", "FINALIZED"):
        if not result:
            return _ignored(f"jenkins {phase} without a build status")
        if result not in _JENKINS_RESULTS:
            raise MalformedPayload("jenkins", "build.status", f"unknown {result!r}")
        status = _JENKINS_RESULTS[result]
    elif not phase:
        raise MalformedPayload("jenkins", "build.phase")
    else:
        return _ignored(f"jenkins phase {phase!r} is not a deploy phase")
    scm = _obj(build, "scm")
    params = {str(k): _s(v) for k, v in _obj(build, "parameters").items()}
    sha = _s(scm.get("commit"))
    culprits = [c for c in _items(scm.get("culprits")) if isinstance(c, str) and c]
    version = next((params[p] for p in _JENKINS_VERSION_PARAMS if params.get(p)), "")
    environment = next((params[p] for p in _JENKINS_ENV_PARAMS if params.get(p)), "")
    started = parse_time(build.get("timestamp"))
    finished = None
    duration = build.get("duration")
    if status in TERMINAL and started and isinstance(duration, int | float) and duration > 0:
        finished = parse_time(int(started.timestamp() * 1000 + duration))
    tests = _obj(build, "test_summary")
    details = {
        "phase": phase,
        "result": result if phase != "STARTED" else "",
        "job": _s(payload.get("display_name")) or name,
        "notes": _s(build.get("notes")),
        "tests_failed": _s(tests.get("failed")) if tests.get("failed") else "",
    }
    return Normalised(
        DeployEvent(
            provider="jenkins",
            delivery_id=delivery
            or _body_hash("jenkins", {"n": name, "b": number, "p": phase, "s": result}),
            event_name=phase,
            run_key=f"jenkins:{name}#{number}",
            status=status,
            repository=name,
            job=name,
            branch=_branch(_s(scm.get("branch"))),
            environment=environment,
            version=version or (sha[:7] if sha else f"#{number}"),
            commit_sha=sha,
            commit_url=_commit_url(_s(scm.get("url")), sha),
            author_name=culprits[0] if culprits else "",
            run_url=_s(build.get("full_url")),
            run_id=number,
            started_at=started,
            finished_at=finished,
            details={k: v for k, v in details.items() if v},
        )
    )


# ---------------------------------------------------------------------------------------
# Generic JSON

_GENERIC_STATUS: dict[str, DeployStatus] = {
    "queued": "queued",
    "pending": "queued",
    "in_progress": "in_progress",
    "running": "in_progress",
    "started": "in_progress",
    "deploying": "in_progress",
    "progressing": "in_progress",
    "succeeded": "succeeded",
    "success": "succeeded",
    "successful": "succeeded",
    "ok": "succeeded",
    "deployed": "succeeded",
    "failed": "failed",
    "failure": "failed",
    "error": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "aborted": "cancelled",
    "terminating": "cancelled",
    "unstable": "unstable",
}


def _author(value: object) -> tuple[str, str, str]:
    """``"Name <email>"``, a bare email, a name, or {"name", "email", "login"}."""
    if isinstance(value, Mapping):
        return _s(value.get("name")), _s(value.get("email")), _s(value.get("login"))
    text = _s(value).strip()
    if text.endswith(">") and "<" in text:
        name, _, email = text[:-1].rpartition("<")
        return name.strip(), email.strip(), ""
    if "@" in text and " " not in text:
        return "", text, ""
    return text, "", ""


def _generic(payload: Mapping[str, Any], delivery: str) -> Normalised:
    service = _req_str("generic", payload, "service")
    environment = _req_str("generic", payload, "environment")
    version = _req_str("generic", payload, "version")
    raw_status = _req_str("generic", payload, "status")
    status = _GENERIC_STATUS.get(raw_status.strip().lower())
    if status is None:
        raise MalformedPayload("generic", "status", f"unknown {raw_status!r}")
    commit = payload.get("commit")
    if isinstance(commit, Mapping):
        sha, commit_url = _s(commit.get("sha")), _s(commit.get("url"))
    else:
        sha, commit_url = _s(commit), ""
    name, email, login = _author(payload.get("author"))
    run_id = _s(payload.get("run_id")) or f"{service}/{environment}/{version}"
    raw_details = payload.get("details")
    details = (
        {str(k): _s(v) for k, v in raw_details.items() if _s(v)}
        if isinstance(raw_details, Mapping)
        else {}
    )
    return Normalised(
        DeployEvent(
            provider="generic",
            delivery_id=delivery
            or _s(payload.get("delivery_id"))
            or _body_hash("generic", payload),
            event_name=raw_status,
            run_key=f"generic:{run_id}",
            status=status,
            repository=service,
            service=service,
            environment=environment,
            version=version,
            commit_sha=sha,
            commit_url=_s(payload.get("commit_url")) or commit_url,
            author_name=name,
            author_email=email,
            author_login=login,
            run_url=_s(payload.get("url")),
            run_id=run_id,
            started_at=parse_time(payload.get("started_at")),
            finished_at=parse_time(payload.get("finished_at")) if status in TERMINAL else None,
            details=details,
        )
    )


# ---------------------------------------------------------------------------------------
# entry points


def normalise(
    provider: str,
    payload: Mapping[str, Any],
    *,
    event_name: str = "",
    delivery_id: str = "",
) -> Normalised:
    """Map one provider payload to a ``DeployEvent`` (or ``None`` and a reason).

    ``event_name`` is the provider's event header (``X-GitHub-Event``,
    ``X-Gitlab-Event``); ``delivery_id`` its delivery id. Raises ``MalformedPayload``.
    """
    if provider not in _PROVIDERS:
        raise MalformedPayload(provider, "provider", "unknown provider")
    if not isinstance(payload, Mapping):
        raise MalformedPayload(provider, "(body)", "not a JSON object")
    if provider == "github":
        delivery = delivery_id or _body_hash("github", payload)
        return normalise_github(payload, event_name, delivery)
    if provider == "gitlab":
        delivery = delivery_id or _body_hash("gitlab", payload)
        return normalise_gitlab(payload, event_name, delivery)
    if provider == "jenkins":
        return _jenkins(payload, delivery_id)
    return _generic(payload, delivery_id)


def normalise_request(provider: str, headers: Mapping[str, str], body: bytes) -> Normalised:
    """``normalise`` from a (verified) HTTP request: reads the event name and the
    delivery id from the provider's headers and parses the JSON body."""
    h = _headers(headers)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(provider, "(body)", f"not JSON: {exc}") from None
    if provider == "github":
        event, delivery = h.get("x-github-event", ""), h.get("x-github-delivery", "")
    elif provider == "gitlab":
        event = h.get("x-gitlab-event", "")
        delivery = h.get("idempotency-key", "") or h.get("x-gitlab-event-uuid", "")
    else:
        event, delivery = "", h.get("x-controlroom-delivery", "")
    return normalise(provider, payload, event_name=event, delivery_id=delivery)


# ---------------------------------------------------------------------------------------
# routing (configuration)


class RouteMatch(BaseModel):
    """What an event must look like for a route to apply. Strings are globs
    (``fnmatch``, case-sensitive); ``*`` matches anything, including empty.

    ``event`` matches the raw event name (``workflow_run.*``, ``workflow_job.*``,
    ``deployment_status.*``, ``Pipeline Hook``, ``Job Hook``, ``Deployment Hook``, a
    Jenkins phase, or a generic status). A GitHub run sends both ``workflow_run`` and
    ``workflow_job`` events when both are subscribed: route one of them (e.g.
    ``event = "workflow_run.*"``), or each job becomes a deployment of its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Provider | None = None
    event: str = "*"
    repository: str = "*"
    workflow: str = "*"
    job: str = "*"
    branch: str = "*"
    environment: str = "*"

    def matches(self, event: DeployEvent) -> bool:
        if self.provider is not None and self.provider != event.provider:
            return False
        pairs = (
            (self.event, event.event_name),
            (self.repository, event.repository),
            (self.workflow, event.workflow),
            (self.job, event.job),
            (self.branch, event.branch),
            (self.environment, event.environment),
        )
        return all(pattern == "*" or fnmatchcase(value, pattern) for pattern, value in pairs)


class DeployRoute(BaseModel):
    """Maps matching events to a service, an environment and a Slack channel.

    ``service`` / ``environment`` default to what the event says (the generic format and
    GitHub / GitLab deployments carry them; a workflow run does not). ``rollback`` names
    the configured rollback executor for deployments on this route ("" = none).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: RouteMatch = RouteMatch()
    service: str = ""
    environment: str = ""
    channel: str = Field(min_length=1)
    rollback: str = ""


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    """A route applied to one event: concrete service, environment and channel."""

    service: str
    environment: str
    channel: str
    rollback: str = ""


def resolve_route(routes: Sequence[DeployRoute], event: DeployEvent) -> ResolvedRoute | None:
    """The first route that matches ``event`` and yields a service and an environment;
    ``None`` when no route does (the caller ignores the event and counts it)."""
    for route in routes:
        if not route.match.matches(event):
            continue
        service = route.service or event.service or event.repository.rsplit("/", 1)[-1]
        environment = route.environment or event.environment
        if service and environment:
            return ResolvedRoute(service, environment, route.channel, route.rollback)
    return None


def load_routes(
    raw: object, *, key: str = "workflows.deploys.routes", source: str = "configuration"
) -> tuple[DeployRoute, ...]:
    """Validate the configured list of routes; ``ConfigError`` names every bad key."""
    try:
        routes = TypeAdapter(list[DeployRoute]).validate_python(raw)
    except ValidationError as exc:
        problems = [
            (".".join([key, *(str(p) for p in err["loc"])]), source, err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None
    return tuple(routes)
