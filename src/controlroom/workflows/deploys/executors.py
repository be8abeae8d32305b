"""Rollback executors: ask a CI system to deploy the rollback target again.

One protocol, ``RollbackExecutor.rollback(deployment, target) -> RollbackResult``, four
implementations, all over ``httpx`` with a timeout and retries of transient failures
only (connection refused, 429, 500, 502, 503, 504, honouring ``Retry-After``). A
request that may have reached the provider (a read timeout) is never sent again: a
duplicate rollback is worse than a failed one. 4xx answers (bad token, unknown project,
invalid input) are not retried.

- GitHub: ``POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches``
  (``workflow_dispatch`` of a rollback workflow; Bearer token, ``X-GitHub-Api-Version``).
- GitLab: ``POST /projects/:id/trigger/pipeline`` (trigger token, ``variables[...]``), or
  ``POST /projects/:id/jobs/:job_id/retry`` of the target's deploy job (``PRIVATE-TOKEN``).
- Jenkins: ``GET /crumbIssuer/api/json`` then ``POST /job/{name}/buildWithParameters``
  (basic auth with a user's API token, the crumb header, the session cookie).
- Generic: an HMAC-signed JSON ``POST`` to a configured URL, header
  ``X-ControlRoom-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">``.

Inputs / variables / parameters are templates over ``version``, ``commit``,
``service``, ``environment``, ``from_version``, ``deployment_id``, ``target_id`` and
``requested_by`` (e.g. ``{"VERSION": "{version}"}``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controlroom.config import Secret, resolve_secret
from controlroom.errors import ConfigError, SecretError
from controlroom.queue.base import Backoff
from controlroom.workflows.deploys.ledger import Deployment

__all__ = [
    "SIGNATURE_HEADER",
    "ExecutorConfig",
    "GenericRollback",
    "GenericRollbackConfig",
    "GitHubRollback",
    "GitHubRollbackConfig",
    "GitLabRollback",
    "GitLabRollbackConfig",
    "HttpPolicy",
    "JenkinsRollback",
    "JenkinsRollbackConfig",
    "RollbackExecutor",
    "RollbackResult",
    "build_executor",
    "load_executor_configs",
    "sign_body",
    "verify_signature",
]

SIGNATURE_HEADER = "X-ControlRoom-Signature"
GITHUB_API_VERSION = "2022-11-28"
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_USER_AGENT = "ControlRoom-Deploys"
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """``ok``: the provider accepted the rollback; ``url`` links to it when known.
    ``retryable``: it failed only transiently (worth another try later)."""

    ok: bool
    url: str = ""
    detail: str = ""
    retryable: bool = False


@runtime_checkable
class RollbackExecutor(Protocol):
    async def rollback(self, deployment: Deployment, target: Deployment) -> RollbackResult:
        """Redeploy ``target`` where ``deployment`` went wrong."""


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Per-request timeout (seconds) and retries of transient failures."""

    timeout: float = 10.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, cap=8.0))
    max_retry_after: float = 30.0


# -- configuration ------------------------------------------------------------------------


def _secret(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str):
        allow_plain = bool((info.context or {}).get("allow_plaintext_secrets", False))
        try:
            return resolve_secret(value, allow_plain=allow_plain)
        except SecretError as exc:
            raise ValueError(str(exc)) from None
    return value


_TEMPLATE_FIELDS = {
    "version": "v",
    "commit": "c",
    "service": "s",
    "environment": "e",
    "from_version": "f",
    "deployment_id": "1",
    "target_id": "2",
    "requested_by": "U",
}


def _check_templates(templates: dict[str, str]) -> dict[str, str]:
    for key, template in templates.items():
        try:
            template.format_map(_TEMPLATE_FIELDS)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            known = ", ".join(sorted(_TEMPLATE_FIELDS))
            raise ValueError(
                f"{key}: invalid template {template!r} ({exc!r}; known: {known})"
            ) from None
    return templates


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class GitHubRollbackConfig(_Config):
    type: Literal["github"] = "github"
    token: Secret
    workflow: str = Field(min_length=1, description="workflow file name or id")
    repository: str = Field(default="", description="owner/repo; default: the deployment's")
    ref: str = "main"
    inputs: dict[str, str] = {"version": "{version}"}
    api_url: str = "https://api.github.com"
    web_url: str = "https://github.com"
    return_run_details: bool = True

    _token = field_validator("token", mode="before")(_secret)
    _inputs = field_validator("inputs")(_check_templates)


class GitLabRollbackConfig(_Config):
    type: Literal["gitlab"] = "gitlab"
    mode: Literal["trigger", "retry"] = "trigger"
    api_url: str = "https://gitlab.com/api/v4"
    project: str = Field(default="", description="id or path; default: the deployment's")
    trigger_token: Secret | None = None
    private_token: Secret | None = None
    ref: str = "main"
    variables: dict[str, str] = {"VERSION": "{version}", "ENVIRONMENT": "{environment}"}

    _tokens = field_validator("trigger_token", "private_token", mode="before")(_secret)
    _variables = field_validator("variables")(_check_templates)

    @model_validator(mode="after")
    def _token_for_mode(self) -> GitLabRollbackConfig:
        if self.mode == "trigger" and self.trigger_token is None:
            raise ValueError("mode 'trigger' needs trigger_token")
        if self.mode == "retry" and self.private_token is None:
            raise ValueError("mode 'retry' needs private_token")
        return self


class JenkinsRollbackConfig(_Config):
    type: Literal["jenkins"] = "jenkins"
    url: str = Field(min_length=1, description="Jenkins root URL")
    job: str = Field(min_length=1, description="job name; folders separated by '/'")
    user: str = Field(min_length=1)
    api_token: Secret
    parameters: dict[str, str] = {"VERSION": "{version}", "ENVIRONMENT": "{environment}"}

    _token = field_validator("api_token", mode="before")(_secret)
    _parameters = field_validator("parameters")(_check_templates)


class GenericRollbackConfig(_Config):
    type: Literal["generic"] = "generic"
    url: str = Field(min_length=1)
    secret: Secret
    headers: dict[str, str] = {}

    _secret_v = field_validator("secret", mode="before")(_secret)


ExecutorConfig = Annotated[
    GitHubRollbackConfig | GitLabRollbackConfig | JenkinsRollbackConfig | GenericRollbackConfig,
    Field(discriminator="type"),
]


# -- shared HTTP machinery ----------------------------------------------------------------


def _values(dep: Deployment, target: Deployment) -> dict[str, str]:
    return {
        "version": target.version,
        "commit": target.commit_sha,
        "service": dep.service,
        "environment": dep.environment,
        "from_version": dep.version,
        "deployment_id": str(dep.id),
        "target_id": str(target.id),
        "requested_by": dep.rollback_by or "",
    }


def _render(templates: Mapping[str, str], dep: Deployment, target: Deployment) -> dict[str, str]:
    values = _values(dep, target)
    return {key: template.format_map(values) for key, template in templates.items()}


def _json(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when the body is empty or not an object."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if isinstance(data.get(key), str | dict | list):
                return str(data[key])[:300]
    return ""


def _failure(provider: str, response: httpx.Response) -> RollbackResult:
    message = _message(response)
    detail = f"{provider} answered {response.status_code}" + (f": {message}" if message else "")
    return RollbackResult(False, detail=detail)


class _HttpExecutor:
    provider = "http"

    def __init__(
        self,
        *,
        policy: HttpPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or HttpPolicy()
        self._sleep = sleep
        self._transport = transport
        self._rng = rng

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.policy.timeout,
            transport=self._transport,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
        )

    async def _send(
        self, client: httpx.AsyncClient, request: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response | RollbackResult:
        """Run ``request`` with retries of transient failures; a final answer (2xx or a
        non-transient error status) is returned as a response."""
        last = ""
        for attempt in range(1, self.policy.attempts + 1):
            delay: float | None = None
            try:
                response = await request()
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = f"{self.provider} unreachable: {type(exc).__name__}"
            except httpx.TimeoutException as exc:
                return RollbackResult(
                    False,
                    detail=f"{self.provider} did not answer in time ({type(exc).__name__}); "
                    "the request may have been accepted, so it was not sent again",
                )
            except httpx.HTTPError as exc:
                return RollbackResult(False, detail=f"{self.provider} request failed: {exc}")
            else:
                if response.status_code not in _TRANSIENT_STATUS:
                    return response
                last = f"{self.provider} answered {response.status_code}"
                delay = _retry_after(response)
            if attempt < self.policy.attempts:
                backoff = self.policy.backoff.delay(attempt, self._rng)
                wait = backoff if delay is None else min(delay, self.policy.max_retry_after)
                await self._sleep(wait)
        return RollbackResult(
            False, detail=f"{last} (gave up after {self.policy.attempts} attempts)", retryable=True
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# -- GitHub -------------------------------------------------------------------------------


class GitHubRollback(_HttpExecutor):
    """``workflow_dispatch`` of the configured rollback workflow."""

    provider = "GitHub"

    def __init__(self, config: GitHubRollbackConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    async def rollback(self, deployment: Deployment, target: Deployment) -> RollbackResult:
        cfg = self.config
        repository = cfg.repository or deployment.repository
        if repository.count("/") != 1:
            return RollbackResult(False, detail=f"no GitHub repository for {deployment.service}")
        url = (
            f"{cfg.api_url.rstrip('/')}/repos/{repository}/actions/workflows/"
            f"{quote(cfg.workflow, safe='')}/dispatches"
        )
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {cfg.token.get()}",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        body: dict[str, Any] = {
            "ref": cfg.ref,
            "inputs": _render(cfg.inputs, deployment, target),
        }
        if cfg.return_run_details:
            body["return_run_details"] = True
        async with self._client() as client:
            outcome = await self._send(client, lambda: client.post(url, headers=headers, json=body))
            if (
                isinstance(outcome, httpx.Response)
                and outcome.status_code in (400, 422)
                and "return_run_details" in outcome.text
            ):
                # Older GitHub Enterprise Server: dispatch without asking for the run.
                body.pop("return_run_details")
                outcome = await self._send(
                    client, lambda: client.post(url, headers=headers, json=body)
                )
        if isinstance(outcome, RollbackResult):
            return outcome
        workflow_page = f"{cfg.web_url.rstrip('/')}/{repository}/actions/workflows/{cfg.workflow}"
        if outcome.status_code == 204:
            return RollbackResult(True, url=workflow_page, detail="workflow dispatched")
        if outcome.status_code == 200:
            data = _json(outcome)
            run_url = data.get("html_url")
            run_id = data.get("workflow_run_id")
            return RollbackResult(
                True,
                url=str(run_url or workflow_page),
                detail=f"workflow run {run_id} started" if run_id else "workflow dispatched",
            )
        return _failure(self.provider, outcome)


# -- GitLab -------------------------------------------------------------------------------


class GitLabRollback(_HttpExecutor):
    """Trigger a rollback pipeline, or retry the target deployment's deploy job."""

    provider = "GitLab"

    def __init__(self, config: GitLabRollbackConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    async def rollback(self, deployment: Deployment, target: Deployment) -> RollbackResult:
        cfg = self.config
        project = cfg.project or deployment.repository
        if not project:
            return RollbackResult(False, detail=f"no GitLab project for {deployment.service}")
        base = f"{cfg.api_url.rstrip('/')}/projects/{quote(project, safe='')}"
        async with self._client() as client:
            if cfg.mode == "trigger":
                assert cfg.trigger_token is not None
                form = {"token": cfg.trigger_token.get(), "ref": cfg.ref}
                for key, value in _render(cfg.variables, deployment, target).items():
                    form[f"variables[{key}]"] = value
                outcome = await self._send(
                    client, lambda: client.post(f"{base}/trigger/pipeline", data=form)
                )
            else:
                assert cfg.private_token is not None
                job_id = _gitlab_job_id(target)
                if not job_id:
                    return RollbackResult(
                        False,
                        detail=f"{target.version} has no GitLab deploy job to retry "
                        "(it did not come from a Job or Deployment hook)",
                    )
                headers = {"PRIVATE-TOKEN": cfg.private_token.get()}
                outcome = await self._send(
                    client,
                    lambda: client.post(f"{base}/jobs/{job_id}/retry", headers=headers),
                )
        if isinstance(outcome, RollbackResult):
            return outcome
        if outcome.status_code in (200, 201):
            data = _json(outcome)
            kind = "pipeline" if cfg.mode == "trigger" else "job"
            return RollbackResult(
                True, url=str(data.get("web_url") or ""), detail=f"{kind} {data.get('id')} created"
            )
        return _failure(self.provider, outcome)


def _gitlab_job_id(target: Deployment) -> str:
    if target.provider != "gitlab" or not target.run_id.isdigit():
        return ""
    if ":job:" in target.run_key or ":deployment:" in target.run_key:
        return target.run_id
    return ""


# -- Jenkins ------------------------------------------------------------------------------


class JenkinsRollback(_HttpExecutor):
    """``buildWithParameters`` of the configured job, with a crumb and an API token."""

    provider = "Jenkins"

    def __init__(self, config: JenkinsRollbackConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    async def rollback(self, deployment: Deployment, target: Deployment) -> RollbackResult:
        cfg = self.config
        root = cfg.url.rstrip("/")
        job_path = "/".join(f"job/{quote(part, safe='')}" for part in cfg.job.strip("/").split("/"))
        auth = httpx.BasicAuth(cfg.user, cfg.api_token.get())
        params = _render(cfg.parameters, deployment, target)
        async with self._client() as client:
            crumb = await self._send(
                client, lambda: client.get(f"{root}/crumbIssuer/api/json", auth=auth)
            )
            if isinstance(crumb, RollbackResult):
                return crumb
            headers: dict[str, str] = {}
            if crumb.status_code == 200:
                data = _json(crumb)
                if not isinstance(data.get("crumb"), str):
                    return RollbackResult(False, detail="Jenkins crumb issuer answered no crumb")
                headers[str(data.get("crumbRequestField") or "Jenkins-Crumb")] = data["crumb"]
            elif crumb.status_code != 404:  # 404: CSRF protection is off, no crumb needed
                return _failure(self.provider, crumb)
            outcome = await self._send(
                client,
                lambda: client.post(
                    f"{root}/{job_path}/buildWithParameters",
                    auth=auth,
                    headers=headers,
                    data=params,
                ),
            )
        if isinstance(outcome, RollbackResult):
            return outcome
        if outcome.status_code in (200, 201):
            location = outcome.headers.get("Location", "") or f"{root}/{job_path}/"
            return RollbackResult(True, url=location, detail="build queued")
        return _failure(self.provider, outcome)


# -- generic ------------------------------------------------------------------------------


def sign_body(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-ControlRoom-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300.0
) -> bool:
    """What a receiver checks: a fresh timestamp and a matching HMAC (constant time)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign_body(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class GenericRollback(_HttpExecutor):
    """An HMAC-signed JSON POST describing the rollback to a configured URL."""

    provider = "rollback endpoint"

    def __init__(
        self, config: GenericRollbackConfig, *, clock: Callable[[], float] = time.time, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.config = config
        self._clock = clock

    async def rollback(self, deployment: Deployment, target: Deployment) -> RollbackResult:
        cfg = self.config
        payload = {
            "action": "rollback",
            "service": deployment.service,
            "environment": deployment.environment,
            "from": {
                "deployment_id": deployment.id,
                "version": deployment.version,
                "commit": deployment.commit_sha,
            },
            "to": {
                "deployment_id": target.id,
                "version": target.version,
                "commit": target.commit_sha,
            },
            "requested_by": deployment.rollback_by or "",
        }
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

        async def request() -> httpx.Response:
            # Signed per attempt: a retry carries a fresh timestamp.
            headers = {
                **cfg.headers,
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_body(cfg.secret.get(), body, int(self._clock())),
            }
            return await client.post(cfg.url, content=body, headers=headers)

        async with self._client() as client:
            outcome = await self._send(client, request)
        if isinstance(outcome, RollbackResult):
            return outcome
        if 200 <= outcome.status_code < 300:
            url = _json(outcome).get("url")
            return RollbackResult(
                True,
                url=url if isinstance(url, str) else "",
                detail=f"accepted ({outcome.status_code})",
            )
        return _failure(self.provider, outcome)


def build_executor(config: ExecutorConfig, **kwargs: Any) -> RollbackExecutor:
    """The executor for a validated configuration (``kwargs``: policy, sleep, transport)."""
    if isinstance(config, GitHubRollbackConfig):
        return GitHubRollback(config, **kwargs)
    if isinstance(config, GitLabRollbackConfig):
        return GitLabRollback(config, **kwargs)
    if isinstance(config, JenkinsRollbackConfig):
        return JenkinsRollback(config, **kwargs)
    return GenericRollback(config, **kwargs)


def load_executor_configs(
    raw: object,
    *,
    key: str = "workflows.deploys.executors",
    source: str = "configuration",
    allow_plaintext_secrets: bool = False,
) -> dict[str, ExecutorConfig]:
    """Validate ``{name: {type = "github" | "gitlab" | "jenkins" | "generic", ...}}``,
    resolving secret references; ``ConfigError`` names every bad key."""
    adapter: TypeAdapter[dict[str, ExecutorConfig]] = TypeAdapter(dict[str, ExecutorConfig])
    try:
        return adapter.validate_python(
            raw, context={"allow_plaintext_secrets": allow_plaintext_secrets}
        )
    except ValidationError as exc:
        problems = [
            (".".join([key, *(str(p) for p in err["loc"])]), source, err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None
