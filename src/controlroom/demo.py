"""What ``controlroom up`` adds when it runs the sandbox, so that every workflow can be
seen working on a laptop: a demo webhook source, workflow settings that fit the seeded
company, a starter policy, and a stand-in CI server that performs rollbacks.

Nothing here applies when Slack credentials are configured, and nothing overrides what
the operator configured: each default fills only an empty place.

``controlroom demo deploy`` sends signed deploy webhooks (a good release, then a failing
one) to the running hub, as a CI system would.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlroom.config import HookSource, Secret, Settings

__all__ = [
    "DEMO_HOOK",
    "demo_routes",
    "demo_secret",
    "send_demo_deploys",
    "with_demo_defaults",
]

DEMO_HOOK = "demo"
_HOOK_FILE = "demo-hook.secret"
#: the seeded company's people and groups (src/controlroom/sandbox/seeds/default.yaml)
SUPPORT = ["U0SUPPORT1", "U0T2LEAD01", "U0ACCTMGR1"]
RELEASE_MANAGERS = "S0RELEASE1"
TIER2_LEAD = "U0T2LEAD01"


def demo_secret(data_dir: Path) -> Path:
    """The demo webhook secret's file (0600), created on first use."""
    path = Path(data_dir) / _HOOK_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(24))
    return path


def with_demo_defaults(settings: Settings, hub_url: str) -> Settings:
    """Settings for ``up`` beside the sandbox, with the demo filled in where empty."""
    secret_path = demo_secret(settings.data_dir)
    hooks = dict(settings.hooks)
    hooks.setdefault(
        DEMO_HOOK,
        HookSource(
            provider="generic",
            secret=Secret(secret_path.read_text().strip(), f"file:{secret_path}"),
        ),
    )
    workflows = {name: dict(cfg) for name, cfg in settings.workflows.items()}
    workflows.setdefault(
        "deploys",
        {
            "routes": [
                {"match": {"provider": "generic"}, "channel": "C0DEPLOYS1", "rollback": "demo-ci"}
            ],
            "executors": {
                "demo-ci": {
                    "type": "generic",
                    "url": f"{hub_url}/demo/ci/rollback",
                    "secret": f"file:{secret_path}",
                }
            },
        },
    )
    workflows.setdefault("escalations", {"tier2_lead": TIER2_LEAD})
    workflows.setdefault(
        "digests",
        {
            "digests": [
                {
                    "name": "aurora",
                    "channels": ["proj-aurora", "support"],
                    "target": "leadership-digest",
                    "cron": "0 9 * * 1-5",
                    "timezone": "Europe/London",
                }
            ]
        },
    )
    policy = settings.policy or {
        "rules": [
            {"action": "escalations.*", "users": SUPPORT, "description": "support team"},
            {
                "action": "deploys.*",
                "usergroups": [RELEASE_MANAGERS],
                "description": "release managers roll back and lock",
            },
            {"action": "digests.*", "users": ["*"]},
        ]
    }
    return settings.model_copy(update={"hooks": hooks, "workflows": workflows, "policy": policy})


def demo_routes(settings: Settings, hub_url: str) -> list[Route]:
    """A stand-in CI server: accepts the signed rollback request like a real one would,
    answers with a run link, and a moment later reports the rolled-back version as
    deployed through the demo webhook, as a CI pipeline would."""
    from controlroom.workflows.deploys.executors import SIGNATURE_HEADER, verify_signature

    secret = demo_secret(settings.data_dir).read_text().strip()
    tasks: set[asyncio.Task[None]] = set()

    async def rollback(request: Request) -> Response:
        body = await request.body()
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(secret, header, body, now=time.time()):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        try:
            payload = json.loads(body)
            service, env = str(payload["service"]), str(payload["environment"])
            version = str(payload["to"]["version"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a rollback request"}, status_code=400)
        run = f"rollback-{uuid.uuid4().hex[:8]}"
        task = asyncio.create_task(
            _report(hub_url, secret, service, env, version, run, payload.get("requested_by"))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return JSONResponse({"url": f"{hub_url}/demo/ci/runs/{run}"})

    async def run_page(request: Request) -> Response:
        run = request.path_params["run"]
        return JSONResponse({"run": run, "note": "a stand-in CI run of the demo"})

    return [
        Route("/demo/ci/rollback", rollback, methods=["POST"]),
        Route("/demo/ci/runs/{run}", run_page, methods=["GET"]),
    ]


async def _report(
    hub_url: str, secret: str, service: str, env: str, version: str, run: str, by: Any
) -> None:
    await asyncio.sleep(2.0)
    deploy = {
        "service": service,
        "environment": env,
        "version": version,
        "run_id": run,
        "url": f"{hub_url}/demo/ci/runs/{run}",
        "details": {"reason": f"rollback requested by {by or 'someone'}"},
    }
    async with httpx.AsyncClient(timeout=10) as http:
        for status in ("in_progress", "succeeded"):
            await _send(http, hub_url, secret, {**deploy, "status": status})
            await asyncio.sleep(1.0)


async def _send(http: httpx.AsyncClient, hub_url: str, secret: str, event: dict[str, Any]) -> int:
    from controlroom.workflows.deploys.executors import SIGNATURE_HEADER, sign_body

    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_body(secret, body, int(time.time())),
    }
    resp = await http.post(f"{hub_url}/hooks/{DEMO_HOOK}", content=body, headers=headers)
    return resp.status_code


async def send_demo_deploys(
    hub_url: str, data_dir: Path, *, service: str, environment: str, good: str, bad: str
) -> list[int]:
    """A release that went out fine, then one that failed: the failed one's message
    offers "Rollback to <good>"."""
    secret = demo_secret(data_dir).read_text().strip()
    author = {"name": "Dan Okafor", "email": "dan@northwind.example"}
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for version, steps in (
            (good, ("in_progress", "succeeded")),
            (bad, ("in_progress", "failed")),
        ):
            run = f"{service}-{environment}-{version}-{uuid.uuid4().hex[:6]}"
            for status in steps:
                event = {
                    "service": service,
                    "environment": environment,
                    "version": version,
                    "status": status,
                    "run_id": run,
                    "author": author,
                    "url": f"{hub_url}/demo/ci/runs/{run}",
                    "commit": uuid.uuid4().hex + uuid.uuid4().hex[:8],
                }
                statuses.append(await _send(http, hub_url, secret, event))
                await asyncio.sleep(0.5)
    return statuses
