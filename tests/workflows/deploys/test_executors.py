"""executors.py against fake CI servers on real loopback ports: the request each provider
receives, credentials checked, transient failures retried and nothing else."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import socket
import time
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlroom.config import Secret
from controlroom.errors import ConfigError
from controlroom.queue.base import Backoff
from controlroom.workflows.deploys.executors import (
    ExecutorConfig,
    GenericRollback,
    GenericRollbackConfig,
    GitHubRollback,
    GitHubRollbackConfig,
    GitLabRollback,
    GitLabRollbackConfig,
    HttpPolicy,
    JenkinsRollback,
    JenkinsRollbackConfig,
    RollbackExecutor,
    RollbackResult,
    build_executor,
    load_executor_configs,
    sign_body,
    verify_signature,
)
from controlroom.workflows.deploys.ledger import Deployment

from .conftest import serve
from .fake_ci import FakeGitHub, FakeGitLab, FakeJenkins, FakeRollbackEndpoint

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
FAILED = Deployment(
    id=12,
    run_key="github:acme/checkout:run:99:1",
    provider="github",
    service="checkout",
    environment="production",
    status="failed",
    created_at=NOW,
    updated_at=NOW,
    repository="acme/checkout",
    version="v1.4.2",
    commit_sha="9f1c2e7",
    rollback_state="rolling_back",
    rollback_by="U0CLICK",
)
TARGET = dataclasses.replace(
    FAILED,
    id=7,
    run_key="github:acme/checkout:run:98:1",
    status="succeeded",
    version="v1.4.1",
    commit_sha="1a2b3c4",
    rollback_state=None,
    rollback_by=None,
)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def kwargs(sleeps: Sleeps, timeout: float = 5.0) -> dict[str, object]:
    policy = HttpPolicy(timeout=timeout, attempts=3, backoff=Backoff(base=0.5, cap=4.0))
    return {"policy": policy, "sleep": sleeps, "rng": random.Random(7)}


def github_config(base: str, **changes: object) -> GitHubRollbackConfig:
    values: dict[str, object] = {
        "token": Secret("ghs_good"),
        "workflow": "rollback.yml",
        "inputs": {"version": "{version}", "environment": "{environment}"},
        "api_url": base,
    }
    values.update(changes)
    return GitHubRollbackConfig.model_validate(values)


# -- GitHub --------------------------------------------------------------------------------


async def test_github_dispatches_the_rollback_workflow_as_github_receives_it(
    sleeps: Sleeps,
) -> None:
    fake = FakeGitHub()
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result == RollbackResult(
        True,
        url="https://github.com/acme/checkout/actions/runs/7001",
        detail="workflow run 7001 started",
    )
    [request] = fake.requests
    assert (request.method, request.path) == (
        "POST",
        "/repos/acme/checkout/actions/workflows/rollback.yml/dispatches",
    )
    assert request.headers["authorization"] == "Bearer ghs_good"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.json == {
        "ref": "main",
        "inputs": {"version": "v1.4.1", "environment": "production"},
        "return_run_details": True,
    }
    assert sleeps.calls == []


async def test_github_204_without_run_details_links_the_workflow(sleeps: Sleeps) -> None:
    fake = FakeGitHub()
    async with serve(fake.app()) as base:
        config = github_config(base, return_run_details=False, ref="release")
        result = await GitHubRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result.ok
    assert result.url == "https://github.com/acme/checkout/actions/workflows/rollback.yml"
    assert fake.requests[0].json == {
        "ref": "release",
        "inputs": {"version": "v1.4.1", "environment": "production"},
    }


async def test_github_enterprise_without_run_details_is_retried_without_the_key(
    sleeps: Sleeps,
) -> None:
    fake = FakeGitHub(supports_run_details=False)
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result.ok
    assert ["return_run_details" in r.json for r in fake.requests] == [True, False]


async def test_github_wrong_token_is_401_and_not_retried(sleeps: Sleeps) -> None:
    fake = FakeGitHub()
    async with serve(fake.app()) as base:
        config = github_config(base, token=Secret("ghs_wrong"))
        result = await GitHubRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(False, detail="GitHub answered 401: Bad credentials")
    assert len(fake.requests) == 1
    assert "ghs_wrong" not in repr(config)


async def test_github_unknown_workflow_is_404_and_not_retried(sleeps: Sleeps) -> None:
    fake = FakeGitHub()
    async with serve(fake.app()) as base:
        config = github_config(base, workflow="nope.yml")
        result = await GitHubRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert (result.ok, result.retryable, len(fake.requests)) == (False, False, 1)
    assert result.detail == "GitHub answered 404: Not Found"


async def test_github_unexpected_input_is_reported(sleeps: Sleeps) -> None:
    fake = FakeGitHub()
    async with serve(fake.app()) as base:
        config = github_config(base, inputs={"version": "{version}", "service": "{service}"})
        result = await GitHubRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result.detail == 'GitHub answered 422: Unexpected inputs provided: ["service"]'
    assert len(fake.requests) == 1


async def test_transient_502_is_retried_then_succeeds(sleeps: Sleeps) -> None:
    fake = FakeGitHub(fail_next=[502])
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result.ok
    assert len(fake.requests) == 2
    assert len(sleeps.calls) == 1
    assert 0 <= sleeps.calls[0] <= 0.5


async def test_persistent_502_gives_up_after_the_attempts_and_is_retryable(
    sleeps: Sleeps,
) -> None:
    fake = FakeGitHub(fail_next=[502, 503, 502])
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result == RollbackResult(
        False, detail="GitHub answered 502 (gave up after 3 attempts)", retryable=True
    )
    assert len(fake.requests) == 3
    assert len(sleeps.calls) == 2
    assert 0 <= sleeps.calls[1] <= 1.0


async def test_retry_after_is_honoured(sleeps: Sleeps) -> None:
    fake = FakeGitHub(fail_next=[429], retry_after="2")
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result.ok
    assert sleeps.calls == [2.0]


async def test_read_timeout_is_not_retried_because_the_request_may_have_landed(
    sleeps: Sleeps,
) -> None:
    fake = FakeGitHub(delay=0.5)
    async with serve(fake.app()) as base:
        result = await GitHubRollback(github_config(base), **kwargs(sleeps, timeout=0.1)).rollback(
            FAILED, TARGET
        )
    assert not result.ok and not result.retryable
    assert "may have been accepted" in result.detail
    assert len(fake.requests) == 1


async def test_connection_refused_is_retried_and_retryable(sleeps: Sleeps) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await GitHubRollback(
        github_config(f"http://127.0.0.1:{port}"), **kwargs(sleeps)
    ).rollback(FAILED, TARGET)
    assert result.retryable
    assert result.detail == "GitHub unreachable: ConnectError (gave up after 3 attempts)"
    assert len(sleeps.calls) == 2


async def test_github_needs_a_repository(sleeps: Sleeps) -> None:
    no_repo = dataclasses.replace(FAILED, repository="")
    result = await GitHubRollback(github_config("http://127.0.0.1:9"), **kwargs(sleeps)).rollback(
        no_repo, TARGET
    )
    assert result == RollbackResult(False, detail="no GitHub repository for checkout")


# -- GitLab --------------------------------------------------------------------------------


def gitlab_config(base: str, **changes: object) -> GitLabRollbackConfig:
    values: dict[str, object] = {
        "api_url": f"{base}/api/v4",
        "trigger_token": Secret("glptt-good"),
        "private_token": Secret("glpat-good"),
    }
    values.update(changes)
    return GitLabRollbackConfig.model_validate(values)


async def test_gitlab_trigger_pipeline_with_variables(sleeps: Sleeps) -> None:
    fake = FakeGitLab()
    async with serve(fake.app()) as base:
        result = await GitLabRollback(gitlab_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result == RollbackResult(
        True,
        url="https://gitlab.example.com/acme/checkout/-/pipelines/4242",
        detail="pipeline 4242 created",
    )
    [request] = fake.requests
    assert request.raw_path == "/api/v4/projects/acme%2Fcheckout/trigger/pipeline"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "token": "glptt-good",
        "ref": "main",
        "variables[VERSION]": "v1.4.1",
        "variables[ENVIRONMENT]": "production",
    }


async def test_gitlab_wrong_trigger_token_is_404_as_gitlab_answers(sleeps: Sleeps) -> None:
    fake = FakeGitLab()
    async with serve(fake.app()) as base:
        config = gitlab_config(base, trigger_token=Secret("glptt-wrong"), project="30")
        result = await GitLabRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(False, detail="GitLab answered 404: 404 Not Found")
    assert fake.requests[0].raw_path == "/api/v4/projects/30/trigger/pipeline"
    assert len(fake.requests) == 1


def gitlab_job_target() -> Deployment:
    return dataclasses.replace(
        TARGET, provider="gitlab", run_key="gitlab:acme/checkout:job:1977", run_id="1977"
    )


async def test_gitlab_retry_of_the_targets_deploy_job(sleeps: Sleeps) -> None:
    fake = FakeGitLab()
    async with serve(fake.app()) as base:
        config = gitlab_config(base, mode="retry")
        result = await GitLabRollback(config, **kwargs(sleeps)).rollback(
            FAILED, gitlab_job_target()
        )
    assert result == RollbackResult(
        True, url="https://gitlab.example.com/acme/checkout/-/jobs/2977", detail="job 2977 created"
    )
    [request] = fake.requests
    assert request.raw_path == "/api/v4/projects/acme%2Fcheckout/jobs/1977/retry"
    assert request.headers["private-token"] == "glpat-good"


async def test_gitlab_wrong_private_token_is_401_and_not_retried(sleeps: Sleeps) -> None:
    fake = FakeGitLab()
    async with serve(fake.app()) as base:
        config = gitlab_config(base, mode="retry", private_token=Secret("glpat-wrong"))
        result = await GitLabRollback(config, **kwargs(sleeps)).rollback(
            FAILED, gitlab_job_target()
        )
    assert result == RollbackResult(False, detail="GitLab answered 401: 401 Unauthorized")
    assert len(fake.requests) == 1


async def test_gitlab_retry_needs_a_job_on_the_target(sleeps: Sleeps) -> None:
    pipeline_target = dataclasses.replace(
        TARGET, provider="gitlab", run_key="gitlab:acme/checkout:pipeline:31", run_id="31"
    )
    config = gitlab_config("http://127.0.0.1:9", mode="retry")
    result = await GitLabRollback(config, **kwargs(sleeps)).rollback(FAILED, pipeline_target)
    assert not result.ok
    assert "no GitLab deploy job to retry" in result.detail


def test_gitlab_config_needs_the_token_of_its_mode() -> None:
    with pytest.raises(ValidationError, match="needs trigger_token"):
        GitLabRollbackConfig.model_validate({"mode": "trigger"})
    with pytest.raises(ValidationError, match="needs private_token"):
        GitLabRollbackConfig.model_validate({"mode": "retry", "trigger_token": Secret("x")})


# -- Jenkins -------------------------------------------------------------------------------


def jenkins_config(base: str, **changes: object) -> JenkinsRollbackConfig:
    values: dict[str, object] = {
        "url": base,
        "job": "deploy/rollback",
        "user": "deploy-bot",
        "api_token": Secret("11aa22bb33cc"),
    }
    values.update(changes)
    return JenkinsRollbackConfig.model_validate(values)


async def test_jenkins_fetches_a_crumb_then_builds_with_parameters(sleeps: Sleeps) -> None:
    fake = FakeJenkins()
    async with serve(fake.app()) as base:
        result = await JenkinsRollback(jenkins_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
        assert result == RollbackResult(True, url=f"{base}/queue/item/77/", detail="build queued")
    crumb_request, build_request = fake.requests
    basic = "Basic " + base64.b64encode(b"deploy-bot:11aa22bb33cc").decode()
    assert (crumb_request.method, crumb_request.path) == ("GET", "/crumbIssuer/api/json")
    assert crumb_request.headers["authorization"] == basic
    assert (build_request.method, build_request.path) == (
        "POST",
        "/job/deploy/job/rollback/buildWithParameters",
    )
    assert build_request.headers["authorization"] == basic
    assert build_request.headers["jenkins-crumb"] == next(iter(fake.crumbs.values()))
    assert "JSESSIONID.fake=" in build_request.headers["cookie"]
    assert build_request.form == {"VERSION": "v1.4.1", "ENVIRONMENT": "production"}


async def test_jenkins_wrong_api_token_is_401_and_not_retried(sleeps: Sleeps) -> None:
    fake = FakeJenkins()
    async with serve(fake.app()) as base:
        config = jenkins_config(base, api_token=Secret("wrong"))
        result = await JenkinsRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(False, detail="Jenkins answered 401: Unauthorized")
    assert len(fake.requests) == 1


async def test_jenkins_without_csrf_protection_builds_without_a_crumb(sleeps: Sleeps) -> None:
    fake = FakeJenkins(csrf=False)
    async with serve(fake.app()) as base:
        result = await JenkinsRollback(jenkins_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert result.ok
    assert "jenkins-crumb" not in fake.requests[1].headers


async def test_jenkins_unknown_job_is_404(sleeps: Sleeps) -> None:
    fake = FakeJenkins()
    async with serve(fake.app()) as base:
        config = jenkins_config(base, job="deploy/other")
        result = await JenkinsRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(False, detail="Jenkins answered 404: Not Found")
    assert len(fake.requests) == 2


# -- generic -------------------------------------------------------------------------------


async def test_generic_post_is_signed_and_verified_by_the_receiver(sleeps: Sleeps) -> None:
    fake = FakeRollbackEndpoint()
    async with serve(fake.app()) as base:
        config = GenericRollbackConfig(
            url=f"{base}/rollback", secret=Secret("whsec-good"), headers={"X-Team": "payments"}
        )
        result = await GenericRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(
        True, url="https://deployer.example.com/rollbacks/5", detail="accepted (202)"
    )
    [request] = fake.requests
    assert request.headers["x-team"] == "payments"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "action": "rollback",
        "service": "checkout",
        "environment": "production",
        "from": {"deployment_id": 12, "version": "v1.4.2", "commit": "9f1c2e7"},
        "to": {"deployment_id": 7, "version": "v1.4.1", "commit": "1a2b3c4"},
        "requested_by": "U0CLICK",
    }
    signature = request.headers["x-controlroom-signature"]
    assert signature.startswith("t=") and ",v1=" in signature
    assert verify_signature("whsec-good", signature, request.body, now=time.time())


async def test_generic_wrong_secret_is_refused_by_the_receiver(sleeps: Sleeps) -> None:
    fake = FakeRollbackEndpoint()
    async with serve(fake.app()) as base:
        config = GenericRollbackConfig(url=f"{base}/rollback", secret=Secret("whsec-wrong"))
        result = await GenericRollback(config, **kwargs(sleeps)).rollback(FAILED, TARGET)
    assert result == RollbackResult(False, detail="rollback endpoint answered 401: bad signature")
    assert len(fake.requests) == 1


async def test_generic_retry_is_signed_afresh(sleeps: Sleeps) -> None:
    fake = FakeRollbackEndpoint(fail_next=[502])
    ticks = iter([1_764_493_200, 1_764_493_205])
    async with serve(fake.app()) as base:
        config = GenericRollbackConfig(url=f"{base}/rollback", secret=Secret("whsec-good"))
        executor = GenericRollback(config, clock=lambda: next(ticks), **kwargs(sleeps))
        result = await executor.rollback(FAILED, TARGET)
    # The receiver checks freshness against its real clock: the fixed ticks are stale.
    assert result.detail == "rollback endpoint answered 401: bad signature"
    stamps = [r.headers["x-controlroom-signature"].split(",")[0] for r in fake.requests]
    assert stamps == ["t=1764493200", "t=1764493205"]


def test_signature_format_and_verification() -> None:
    body = b'{"a":1}'
    header = sign_body("s3cret", body, 1_764_493_200)
    expected = (
        "t=1764493200,v1="
        + __import__("hmac").new(b"s3cret", b'1764493200.{"a":1}', "sha256").hexdigest()
    )
    assert header == expected
    assert verify_signature("s3cret", header, body, now=1_764_493_200 + 299)
    assert not verify_signature("s3cret", header, body, now=1_764_493_200 + 301)
    assert not verify_signature("s3cret", header, b'{"a":2}', now=1_764_493_200)
    assert not verify_signature("other", header, body, now=1_764_493_200)
    assert not verify_signature("s3cret", "garbage", body, now=1_764_493_200)


# -- configuration -------------------------------------------------------------------------


def test_executors_are_built_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CR_DEPLOYS_TEST_TOKEN", "ghs_from_env")
    adapter: TypeAdapter[ExecutorConfig] = TypeAdapter(ExecutorConfig)
    configs = [
        {"type": "github", "token": "env:CR_DEPLOYS_TEST_TOKEN", "workflow": "rollback.yml"},
        {"type": "gitlab", "trigger_token": "env:CR_DEPLOYS_TEST_TOKEN"},
        {
            "type": "jenkins",
            "url": "https://jenkins.example.com",
            "job": "deploy",
            "user": "bot",
            "api_token": "env:CR_DEPLOYS_TEST_TOKEN",
        },
        {"type": "generic", "url": "https://x.example.com", "secret": "env:CR_DEPLOYS_TEST_TOKEN"},
    ]
    kinds = []
    for raw in configs:
        executor = build_executor(adapter.validate_python(raw))
        assert isinstance(executor, RollbackExecutor)
        kinds.append(type(executor))
    assert kinds == [GitHubRollback, GitLabRollback, JenkinsRollback, GenericRollback]
    github = adapter.validate_python(configs[0])
    assert isinstance(github, GitHubRollbackConfig)
    assert github.token.get() == "ghs_from_env"
    assert "ghs_from_env" not in json.dumps(str(github))


def test_plain_text_secrets_are_refused_unless_allowed() -> None:
    adapter: TypeAdapter[ExecutorConfig] = TypeAdapter(ExecutorConfig)
    raw = {"type": "github", "token": "ghs_plain", "workflow": "rollback.yml"}
    with pytest.raises(ValidationError, match="plain-text secret"):
        adapter.validate_python(raw)
    allowed = adapter.validate_python(raw, context={"allow_plaintext_secrets": True})
    assert isinstance(allowed, GitHubRollbackConfig)
    assert allowed.token.get() == "ghs_plain"


def test_templates_are_checked_when_the_configuration_is_loaded() -> None:
    with pytest.raises(ValidationError, match="invalid template"):
        github_config("http://127.0.0.1:9", inputs={"version": "{tag}"})
    with pytest.raises(ValidationError, match="invalid template"):
        JenkinsRollbackConfig.model_validate(
            {
                "url": "http://j",
                "job": "x",
                "user": "u",
                "api_token": Secret("t"),
                "parameters": {"V": "{version"},
            }
        )


async def test_odd_but_successful_answers_do_not_crash(sleeps: Sleeps) -> None:
    async def dispatch(request: Request) -> Response:
        return Response("not json", status_code=200)

    async def crumb(request: Request) -> Response:
        return Response("<html>login</html>", status_code=200)

    app = Starlette(
        routes=[
            Route("/repos/{o}/{r}/actions/workflows/{w}/dispatches", dispatch, methods=["POST"]),
            Route("/crumbIssuer/api/json", crumb),
        ]
    )
    async with serve(app) as base:
        github = await GitHubRollback(github_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
        jenkins = await JenkinsRollback(jenkins_config(base), **kwargs(sleeps)).rollback(
            FAILED, TARGET
        )
    assert github == RollbackResult(
        True,
        url="https://github.com/acme/checkout/actions/workflows/rollback.yml",
        detail="workflow dispatched",
    )
    assert jenkins == RollbackResult(False, detail="Jenkins crumb issuer answered no crumb")


def test_load_executor_configs_resolves_secrets_and_names_bad_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CR_DEPLOYS_TEST_TOKEN", "ghs_from_env")
    configs = load_executor_configs(
        {
            "github-checkout": {
                "type": "github",
                "token": "env:CR_DEPLOYS_TEST_TOKEN",
                "workflow": "rollback.yml",
            },
            "jenkins": {
                "type": "jenkins",
                "url": "https://j.example.com",
                "job": "deploy",
                "user": "bot",
                "api_token": "env:CR_DEPLOYS_TEST_TOKEN",
            },
        }
    )
    assert sorted(configs) == ["github-checkout", "jenkins"]
    assert isinstance(configs["github-checkout"], GitHubRollbackConfig)
    with pytest.raises(ConfigError) as info:
        load_executor_configs(
            {
                "a": {"type": "github", "token": "env:CR_DEPLOYS_UNSET_VAR", "workflow": "x"},
                "b": {"type": "svn"},
            }
        )
    keys = [p[0] for p in info.value.problems]
    assert keys[0] == "workflows.deploys.executors.a.github.token"
    assert "environment variable is not set" in info.value.problems[0][2]
    assert keys[1].startswith("workflows.deploys.executors.b")
