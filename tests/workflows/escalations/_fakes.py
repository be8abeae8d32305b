"""Fake Salesforce and HubSpot servers: small Starlette apps on a real loopback port that
answer with the providers' real response shapes (and their real error shapes).

Shapes follow the providers' REST documentation:
- Salesforce OAuth token response and SOQL query result (``totalSize``, ``done``,
  ``records`` with ``attributes``; a child relationship with no rows is ``null``), and
  the REST error list ``[{"message", "errorCode"}]``.
- HubSpot CRM v3 search result (``total``, ``results`` of ``{id, properties, createdAt,
  updatedAt, archived}``, ``paging.next.after``), owners, and the error object
  ``{status, message, correlationId, category}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1, an OS-chosen port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        fake = getattr(app, "state", None)
        release = getattr(getattr(fake, "fake", None), "release", None)
        if isinstance(release, asyncio.Event):
            release.set()
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Behaviour:
    """Scripted misbehaviour: statuses to answer next (then normal service), a body that
    is not JSON, or handlers that hang until the test ends."""

    fail: list[int | tuple[int, Any]] = field(default_factory=list)
    retry_after: str | None = None
    malformed: bool = False
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[tuple[str, str]] = field(default_factory=list)

    async def misbehave(self, request: Request, error_body: Any) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if self.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 10)
        if self.fail:
            status, body = self.fail.pop(0), error_body
            if isinstance(status, tuple):
                status, body = status
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse(body, status_code=status, headers=headers)
        if self.malformed:
            return PlainTextResponse("<html><body>Service Unavailable</body></html>", 200)
        return None


# -- Salesforce -------------------------------------------------------------------------

SF_ACCOUNTS: list[dict[str, Any]] = [
    {
        "Id": "001Dn000000AcmeAAA",
        "Name": "Acme Corporation",
        "Website": "https://www.acme.example",
        "Type": "Customer - Direct",
        "AnnualRevenue": 1250000.0,
        "owner": ("005Dn000001DanaAAA", "Dana Whitfield", "Dana.Whitfield@controlroom.example"),
        "cases": ["500Dn00000Case1AAA", "500Dn00000Case2AAA", "500Dn00000Case3AAA"],
    },
    {
        "Id": "001Dn00000AcmeWAAA",
        "Name": "Acme Widgets Ltd",
        "Website": "acmewidgets.example",
        "Type": "Customer - Channel",
        "AnnualRevenue": None,
        "owner": ("005Dn000001MarcAAA", "Marco Ruiz", "marco.ruiz@controlroom.example"),
        "cases": [],
    },
    {
        "Id": "001Dn000000OreiAAA",
        "Name": "O'Reilly 100% Labs",
        "Website": "http://oreilly-labs.example/home",
        "Type": None,
        "AnnualRevenue": 50000,
        "owner": ("005Dn000001PriyAAA", "Priya Nair", "priya.nair@controlroom.example"),
        "cases": ["500Dn00000Case9AAA"],
    },
]

_SF_LITERAL = r"'((?:[^'\\]|\\.)*)'"


def _sf_unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), s)


def _sf_like(pattern: str, value: str) -> bool:
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if c == "%" else "." if c == "_" else re.escape(c)
        i += 1
    return re.fullmatch(regex, value, flags=re.IGNORECASE | re.DOTALL) is not None


def _sf_where(soql: str, acc: dict[str, Any]) -> bool:
    where = soql.split(" WHERE ", 2)[-1].rsplit(" LIMIT ", 1)[0]
    for m in re.finditer(r"Id IN \(((?:\s*" + _SF_LITERAL + r"\s*,?)+)\)", where):
        ids = [_sf_unescape(x) for x in re.findall(_SF_LITERAL, m[1])]
        if acc["Id"] in ids:
            return True
    for m in re.finditer(r"Id = " + _SF_LITERAL, where):
        if acc["Id"] == _sf_unescape(m[1]):
            return True
    for m in re.finditer(r"(\w+) LIKE " + _SF_LITERAL, where):
        value = acc.get(m[1])
        # Keep LIKE escapes (\% \_) for the matcher; unescape only quotes/backslashes.
        pattern = re.sub(r"\\([\\'\"])", r"\1", m[2])
        if isinstance(value, str) and _sf_like(pattern, value):
            return True
    return False


def _sf_record(acc: dict[str, Any], version: str) -> dict[str, Any]:
    uid, uname, email = acc["owner"]
    cases = acc["cases"]
    return {
        "attributes": {
            "type": "Account",
            "url": f"/services/data/v{version}/sobjects/Account/{acc['Id']}",
        },
        "Id": acc["Id"],
        "Name": acc["Name"],
        "Website": acc["Website"],
        "Type": acc["Type"],
        "AnnualRevenue": acc["AnnualRevenue"],
        "Owner": {
            "attributes": {"type": "User", "url": f"/services/data/v{version}/sobjects/User/{uid}"},
            "Name": uname,
            "Email": email,
        },
        "Cases": None
        if not cases
        else {
            "totalSize": len(cases),
            "done": True,
            "records": [
                {
                    "attributes": {
                        "type": "Case",
                        "url": f"/services/data/v{version}/sobjects/Case/{c}",
                    },
                    "Id": c,
                }
                for c in cases
            ],
        },
    }


@dataclass
class FakeSalesforce(Behaviour):
    client_id: str = "3MVG9-consumer-key"
    client_secret: str = "consumer-secret-123"
    username: str = "integration@controlroom.example"
    password: str = "hunter2TOKEN"
    issued: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    token_fail: bool = False
    reject_sessions: bool = False

    def app(self) -> Starlette:
        async def token(request: Request) -> Response:
            self.requests.append((request.method, request.url.path))
            form = {k: str(v) for k, v in (await request.form()).items()}
            self.token_requests.append(form)
            ok = form.get("client_id") == self.client_id and (
                form.get("client_secret") == self.client_secret
            )
            grant = form.get("grant_type")
            if grant == "password":
                ok = ok and form.get("username") == self.username
                ok = ok and form.get("password") == self.password
            elif grant != "client_credentials":
                return JSONResponse(
                    {
                        "error": "unsupported_grant_type",
                        "error_description": "grant type not supported",
                    },
                    400,
                )
            if not ok or self.token_fail:
                return JSONResponse(
                    {"error": "invalid_client", "error_description": "invalid client credentials"},
                    400,
                )
            self.issued += 1
            tok = f"00DDn000000Fake!AQ{self.issued}"
            self.valid_tokens.add(tok)
            base = str(request.base_url).rstrip("/")
            return JSONResponse(
                {
                    "access_token": tok,
                    "signature": "d+ZQ2ZyVdo6mLPtrtFbBkNwC3cVhcsZhOhgYAmUcqKY=",
                    "scope": "api",
                    "instance_url": base,
                    "id": f"{base}/id/00DDn000000FakeMAA/005Dn000001IntgAAA",
                    "token_type": "Bearer",
                    "issued_at": "1764474000000",
                }
            )

        async def query(request: Request) -> Response:
            bad = await self.misbehave(
                request, [{"message": "Server error", "errorCode": "SERVER_UNAVAILABLE"}]
            )
            if bad is not None:
                return bad
            auth = request.headers.get("authorization", "")
            if self.reject_sessions or auth.removeprefix("Bearer ") not in self.valid_tokens:
                return JSONResponse(
                    [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                    401,
                )
            version = request.path_params["version"]
            soql = request.query_params.get("q", "")
            self.queries.append(soql)
            if not soql.startswith("SELECT ") or " FROM Account WHERE " not in soql:
                return JSONResponse(
                    [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}], 400
                )
            rows = [_sf_record(a, version) for a in SF_ACCOUNTS if _sf_where(soql, a)]
            return JSONResponse({"totalSize": len(rows), "done": True, "records": rows})

        app = Starlette(
            routes=[
                Route("/services/oauth2/token", token, methods=["POST"]),
                Route("/services/data/v{version}/query", query, methods=["GET"]),
            ]
        )
        app.state.fake = self
        return app

    def expire_sessions(self) -> None:
        self.valid_tokens.clear()


# -- HubSpot ----------------------------------------------------------------------------

HS_COMPANIES: list[dict[str, Any]] = [
    {
        "id": "18001",
        "name": "Acme Corporation",
        "domain": "acme.example",
        "annualrevenue": "1250000",
        "hubspot_owner_id": "41629779",
        "tier": "Enterprise",
        "open_tickets": "3",
    },
    {
        "id": "18002",
        "name": "Acme Widgets",
        "domain": "acmewidgets.example",
        "annualrevenue": None,
        "hubspot_owner_id": "",
        "tier": None,
        "open_tickets": "0",
    },
    {
        "id": "18003",
        "name": "Globex Corporation",
        "domain": "globex.example",
        "annualrevenue": "480000.50",
        "hubspot_owner_id": "41629780",
        "tier": "Business",
        "open_tickets": "1",
    },
]

HS_OWNERS = {
    "41629779": ("dana.whitfield@controlroom.example", "Dana", "Whitfield"),
    "41629780": ("marco.ruiz@controlroom.example", "Marco", "Ruiz"),
}

_HS_AUTH_ERROR = {
    "status": "error",
    "message": "Authentication credentials not found. This API supports OAuth 2.0 "
    "authentication and you can find more details at "
    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    "correlationId": "a43683b0-5717-4ceb-80b4-104d02915d8c",
    "category": "INVALID_AUTHENTICATION",
}


def _hs_object(c: dict[str, Any], props: list[str]) -> dict[str, Any]:
    base = {
        "createdate": "2024-03-01T10:00:00.000Z",
        "hs_lastmodifieddate": "2026-11-01T09:30:00.000Z",
        "hs_object_id": c["id"],
    }
    base |= {p: c.get(p) for p in props if p != "hs_object_id"}
    return {
        "id": c["id"],
        "properties": base,
        "createdAt": "2024-03-01T10:00:00.000Z",
        "updatedAt": "2026-11-01T09:30:00.000Z",
        "archived": False,
    }


def _hs_filter(c: dict[str, Any], f: dict[str, Any]) -> bool:
    prop = "id" if f["propertyName"] == "hs_object_id" else f["propertyName"]
    value = c.get(prop)
    if value is None:
        return False
    if f["operator"] == "IN":
        return str(value).lower() in [str(v) for v in f["values"]]
    if f["operator"] == "EQ":
        return str(value).lower() == str(f["value"]).lower()
    if f["operator"] == "CONTAINS_TOKEN":
        return str(f["value"]).lower() in re.findall(r"\w+", str(value).lower())
    raise ValueError(f["operator"])


@dataclass
class FakeHubSpot(Behaviour):
    token: str = "pat-na1-11111111-2222-3333-4444-555555555555"
    searches: list[dict[str, Any]] = field(default_factory=list)
    owner_requests: int = 0
    owners_forbidden: bool = False

    def app(self) -> Starlette:
        def authorised(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {self.token}"

        async def search(request: Request) -> Response:
            bad = await self.misbehave(
                request,
                {
                    "status": "error",
                    "message": "You have reached your secondly limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": "c3b0e1d2-0000-4000-8000-000000000001",
                    "policyName": "SECONDLY",
                },
            )
            if bad is not None:
                return bad
            if not authorised(request):
                return JSONResponse(_HS_AUTH_ERROR, 401)
            body = await request.json()
            self.searches.append(body)
            groups = body.get("filterGroups", [])
            if len(groups) > 5:
                return JSONResponse(
                    {
                        "status": "error",
                        "message": "too many filter groups",
                        "correlationId": "x",
                        "category": "VALIDATION_ERROR",
                    },
                    400,
                )
            hits = [
                c
                for c in HS_COMPANIES
                if any(all(_hs_filter(c, f) for f in g["filters"]) for g in groups)
            ]
            limit = int(body.get("limit", 10))
            page = hits[:limit]
            out: dict[str, Any] = {
                "total": len(hits),
                "results": [_hs_object(c, body.get("properties", [])) for c in page],
            }
            if len(hits) > limit:
                out["paging"] = {"next": {"after": str(limit)}}
            return JSONResponse(out)

        async def company(request: Request) -> Response:
            bad = await self.misbehave(request, {"status": "error", "category": "INTERNAL"})
            if bad is not None:
                return bad
            if not authorised(request):
                return JSONResponse(_HS_AUTH_ERROR, 401)
            cid = request.path_params["cid"]
            props = request.query_params.get("properties", "").split(",")
            for c in HS_COMPANIES:
                if c["id"] == cid:
                    return JSONResponse(_hs_object(c, props))
            return JSONResponse(
                {
                    "status": "error",
                    "message": "Object not found.  objectId are usually numeric.",
                    "correlationId": "7c1b5b4e-0000-4000-8000-000000000002",
                    "context": {"id": [cid]},
                    "category": "OBJECT_NOT_FOUND",
                },
                404,
            )

        async def owner(request: Request) -> Response:
            self.owner_requests += 1
            if not authorised(request):
                return JSONResponse(_HS_AUTH_ERROR, 401)
            oid = request.path_params["oid"]
            if self.owners_forbidden:
                return JSONResponse(
                    {
                        "status": "error",
                        "message": "This app hasn't been granted all required scopes to make "
                        "this call.",
                        "correlationId": "4bd5cbf1-0000-4000-8000-000000000003",
                        "errors": [
                            {
                                "message": "One or more of the following scopes are required.",
                                "context": {"requiredGranularScopes": ["crm.objects.owners.read"]},
                            }
                        ],
                        "category": "MISSING_SCOPES",
                    },
                    403,
                )
            if oid not in HS_OWNERS:
                return JSONResponse(
                    {
                        "status": "error",
                        "message": "Owner not found",
                        "correlationId": "x",
                        "category": "OBJECT_NOT_FOUND",
                    },
                    404,
                )
            email, first, last = HS_OWNERS[oid]
            return JSONResponse(
                {
                    "id": oid,
                    "email": email,
                    "type": "PERSON",
                    "firstName": first,
                    "lastName": last,
                    "userId": 9586504,
                    "userIdIncludingInactive": 9586504,
                    "createdAt": "2019-12-25T13:01:35.228Z",
                    "updatedAt": "2023-08-22T13:40:26.790Z",
                    "archived": False,
                    "teams": [{"id": "368389", "name": "Sales", "primary": True}],
                },
            )

        app = Starlette(
            routes=[
                Route("/crm/v3/objects/companies/search", search, methods=["POST"]),
                Route("/crm/v3/objects/companies/{cid}", company, methods=["GET"]),
                Route("/crm/v3/owners/{oid}", owner, methods=["GET"]),
            ]
        )
        app.state.fake = self
        return app
