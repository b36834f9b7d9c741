"""The search API and the patient page: ``create_app(settings)`` builds the FastAPI app.

Routes live in :mod:`pipeline.api.documents` and :mod:`pipeline.api.record`, the FHIR R4
read API in :mod:`pipeline.api.fhir` (mounted at ``/fhir``); every one goes through
:mod:`pipeline.api.guard` (token, access decision, audit). The page is
static HTML + JS under ``static/``, served at ``/``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.access import AccessRules
from pipeline.api import documents, record
from pipeline.api.auth import TokenVerifier
from pipeline.api.fhir import FHIR_PREFIX, create_fhir_app, error_response
from pipeline.api.guard import Caller, Services
from pipeline.api.schemas import ERRORS, Me
from pipeline.audit import AuditLog
from pipeline.crypto import EncryptedStore, audit_key, open_encrypted_store, patient_ref_key
from pipeline.errors import BackendUnavailable
from pipeline.index import DocumentIndex, open_index
from pipeline.settings import ApiSettings, Settings
from pipeline.state.opening import open_state

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
TITLE = "Carnet search API"
VERSION = "1.0.0"

_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class _SafeStaticFiles(StaticFiles):
    """Static files where a path the file system cannot take (a NUL byte) is a 404."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if "\x00" in path:
            return "", None
        return super().lookup_path(path)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Room for the multipart framing around the largest accepted file.
_MULTIPART_OVERHEAD = 64 * 1024
# Every other body is a small JSON object (a delegation's classes, a reason of 500 characters).
JSON_MAX_BYTES = 64 * 1024


class _BodyLimit:
    """A request body larger than its route takes is a 413 before anything holds it: FastAPI
    reads a body whole before the route's token check, so an anonymous 200 MB JSON body was
    taken into memory (several times over, parsed) only to be answered 401. A declared
    length is refused at once; a streamed body is counted as it is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and str(scope["path"]).endswith("/documents")
        stated = documents.UPLOAD_MAX_BYTES if upload else JSON_MAX_BYTES
        limit = stated + _MULTIPART_OVERHEAD if upload else stated
        detail = f"larger than {stated} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            # The FHIR API's errors are OperationOutcomes, this one too.
            fhir = str(scope["path"]).startswith(f"{FHIR_PREFIX}/") or scope["path"] == FHIR_PREFIX
            refusal = (
                error_response(413, detail)
                if fhir
                else JSONResponse(status_code=413, content={"detail": detail})
            )
            await refusal(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # Raised to the route's body reading, which FastAPI answers as this status.
                raise HTTPException(status_code=413, detail=detail)
            return message

        await self.app(scope, counted, send)


def create_app(
    settings: Settings,
    *,
    config: ApiSettings | None = None,
    clock: Callable[[], dt.datetime] = _utcnow,
    index: DocumentIndex | None = None,
    store: EncryptedStore | None = None,
) -> FastAPI:
    """The API over ``settings``' index, encrypted store, access rules and audit log.

    Token keys come from ``config`` (tests) or ``settings.api``.
    """
    verifier = TokenVerifier(config or settings.api)
    store = store or open_encrypted_store(settings)
    # One engine on the state database for the rules and the audit chain (closed with them).
    state = open_state(settings)
    svc = Services(
        settings=settings,
        index=index or open_index(settings.effective_index_url, alias=settings.index.es_alias),
        store=store,
        rules=AccessRules(state, ref_key=patient_ref_key(settings)),
        audit=AuditLog(state, key=audit_key(settings), anchors=store),
        verifier=verifier,
        clock=clock,
        state=state,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        lifespan=lifespan,
        description="Search and manage a patient's record in Carnet. Every call needs the "
        "portal's bearer token; every access is audited.",
    )
    app.state.services = svc
    app.include_router(documents.router)
    app.include_router(record.router)

    @app.get(
        "/me",
        response_model=Me,
        tags=["record"],
        summary="Who the token says is asking",
        responses={401: ERRORS[401]},
    )
    def me(who: Caller) -> Me:
        return Me(role=who.role.value, subject=who.subject, name=who.name)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", _SafeStaticFiles(directory=STATIC), name="static")
    # The FHIR R4 read API: its own app (FHIR errors, described by its CapabilityStatement),
    # over the same backends, guard and audit.
    app.mount(FHIR_PREFIX, create_fhir_app(svc, version=VERSION))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: the rejected input is not echoed (it may be health data, or
        # a number JSON cannot carry, such as Infinity, which would make this a 500).
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        log.error("backend unavailable: %s", exc)
        return JSONResponse(status_code=503, content={"detail": "service unavailable"})

    app.add_middleware(_BodyLimit)  # inside ``headers``: its 413s get them too

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        # Health data: never cached, never sniffed, never framed, no referrer leaks.
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = _PAGE_CSP
        return response

    return app
