"""Fake CI servers (Starlette, run on loopback by the tests) that check credentials as the
real APIs do and record each request exactly as it arrived.

Answers follow the providers' documented shapes: GitHub ``401 {"message": "Bad
credentials"}``, ``204`` (or ``200`` with ``workflow_run_id`` when
``return_run_details`` is sent); GitLab ``404 {"message": "404 Not Found"}`` for a wrong
trigger token, ``401 {"message": "401 Unauthorized"}`` for a wrong private token, ``201``
with the pipeline / job; Jenkins ``401`` without valid basic auth, ``403`` without the
crumb of the session, ``201`` with the queue item in ``Location``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlroom.workflows.deploys.executors import verify_signature


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class FakeCI:
    """Shared behaviour: recorded requests, injected transient failures, a slow mode."""

    requests: list[Recorded] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    retry_after: str | None = None
    delay: float = 0.0

    async def record(self, request: Request) -> Response | None:
        body = await request.body()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                raw_path=request.scope.get("raw_path", b"").decode(),
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            status = self.fail_next.pop(0)
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return Response("<html>Bad gateway</html>", status_code=status, headers=headers)
        return None


@dataclass
class FakeGitHub(FakeCI):
    token: str = "ghs_good"
    repositories: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: {"acme/checkout": {"rollback.yml": {"version", "environment"}}}
    )
    supports_run_details: bool = True

    def app(self) -> Starlette:
        async def dispatch(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse(
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest",
                        "status": "401",
                    },
                    status_code=401,
                )
            repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
            workflows = self.repositories.get(repo)
            inputs_allowed = (workflows or {}).get(request.path_params["workflow"])
            if inputs_allowed is None:
                return JSONResponse({"message": "Not Found", "status": "404"}, status_code=404)
            body = json.loads(await request.body())
            if "ref" not in body:
                return JSONResponse(
                    {"message": 'Invalid request.\n\n"ref" wasn\'t supplied.'}, status_code=422
                )
            unexpected = sorted(set(body.get("inputs", {})) - inputs_allowed)
            if unexpected:
                return JSONResponse(
                    {"message": f"Unexpected inputs provided: {json.dumps(unexpected)}"},
                    status_code=422,
                )
            if body.get("return_run_details"):
                if not self.supports_run_details:
                    return JSONResponse(
                        {
                            "message": "Invalid request.\n\n"
                            '"return_run_details" is not a permitted key.'
                        },
                        status_code=422,
                    )
                return JSONResponse(
                    {
                        "workflow_run_id": 7001,
                        "run_url": f"{request.base_url}repos/{repo}/actions/runs/7001",
                        "html_url": f"https://github.com/{repo}/actions/runs/7001",
                    }
                )
            return Response(status_code=204)

        return Starlette(
            routes=[
                Route(
                    "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                    dispatch,
                    methods=["POST"],
                )
            ]
        )


@dataclass
class FakeGitLab(FakeCI):
    trigger_token: str = "glptt-good"
    private_token: str = "glpat-good"
    projects: dict[str, int] = field(default_factory=lambda: {"acme/checkout": 30})

    def _project(self, request: Request) -> int | None:
        ident = request.path_params["project"]
        if ident.isdigit():
            return int(ident) if int(ident) in self.projects.values() else None
        return self.projects.get(ident)

    def app(self) -> Starlette:
        async def trigger(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            form = await request.form()
            project = self._project(request)
            if form.get("token") != self.trigger_token or project is None:
                return JSONResponse({"message": "404 Not Found"}, status_code=404)
            if not form.get("ref"):
                return JSONResponse({"error": "ref is missing"}, status_code=400)
            return JSONResponse(
                {
                    "id": 4242,
                    "iid": 12,
                    "project_id": project,
                    "status": "created",
                    "ref": form["ref"],
                    "web_url": "https://gitlab.example.com/acme/checkout/-/pipelines/4242",
                },
                status_code=201,
            )

        async def retry(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            if request.headers.get("private-token") != self.private_token:
                return JSONResponse({"message": "401 Unauthorized"}, status_code=401)
            if self._project(request) is None:
                return JSONResponse({"message": "404 Project Not Found"}, status_code=404)
            job = int(request.path_params["job"])
            return JSONResponse(
                {
                    "id": job + 1000,
                    "status": "pending",
                    "web_url": f"https://gitlab.example.com/acme/checkout/-/jobs/{job + 1000}",
                },
                status_code=201,
            )

        return Starlette(
            routes=[
                Route(
                    "/api/v4/projects/{project:path}/trigger/pipeline", trigger, methods=["POST"]
                ),
                Route(
                    "/api/v4/projects/{project:path}/jobs/{job:int}/retry", retry, methods=["POST"]
                ),
            ]
        )


@dataclass
class FakeJenkins(FakeCI):
    user: str = "deploy-bot"
    api_token: str = "11aa22bb33cc"
    jobs: set[str] = field(default_factory=lambda: {"deploy/rollback"})
    csrf: bool = True
    crumbs: dict[str, str] = field(default_factory=dict)  # session -> crumb

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.api_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def app(self) -> Starlette:
        async def crumb_issuer(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            if not self.csrf:
                return Response("Not Found", status_code=404)
            if not self._authorised(request):
                return Response("Unauthorized", status_code=401)
            session = secrets.token_hex(8)
            crumb = secrets.token_hex(16)
            self.crumbs[session] = crumb
            response = JSONResponse(
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": crumb,
                    "crumbRequestField": "Jenkins-Crumb",
                }
            )
            response.set_cookie("JSESSIONID.fake", session, httponly=True)
            return response

        async def build(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            if not self._authorised(request):
                return Response("Unauthorized", status_code=401)
            if self.csrf:
                session = request.cookies.get("JSESSIONID.fake", "")
                if not session or request.headers.get("jenkins-crumb") != self.crumbs.get(session):
                    return Response("No valid crumb was included in the request", status_code=403)
            parts = request.path_params["name"].split("/job/")
            if "/".join(parts) not in self.jobs:
                return Response("Not Found", status_code=404)
            return Response(
                status_code=201, headers={"Location": f"{request.base_url}queue/item/77/"}
            )

        return Starlette(
            routes=[
                Route("/crumbIssuer/api/json", crumb_issuer, methods=["GET"]),
                Route("/job/{name:path}/buildWithParameters", build, methods=["POST"]),
            ]
        )


@dataclass
class FakeRollbackEndpoint(FakeCI):
    secret: str = "whsec-good"

    def app(self) -> Starlette:
        async def rollback(request: Request) -> Response:
            if (early := await self.record(request)) is not None:
                return early
            body = await request.body()
            header = request.headers.get("x-controlroom-signature", "")
            if not verify_signature(self.secret, header, body, now=time.time()):
                return JSONResponse({"error": "bad signature"}, status_code=401)
            return JSONResponse(
                {"url": "https://deployer.example.com/rollbacks/5"}, status_code=202
            )

        return Starlette(routes=[Route("/rollback", rollback, methods=["POST"])])
