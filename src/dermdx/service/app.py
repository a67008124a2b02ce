"""The FastAPI app: REST API under ``/api``, the web page at ``/``, OpenAPI docs at ``/docs``.

Build it with ``create_app(predictor, settings)``: the model is loaded once by the caller, the
database is migrated to the newest schema, and nothing else happens until a request comes.

Every bad request is a 4xx answer ``{"detail": "..."}`` that names the problem. Logs carry ids
and hashes only: never ages, sexes, body sites, file names or report contents.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run
# time, and they name dependencies defined inside create_app.
import hashlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from dermdx import __version__
from dermdx.data.images import ImageReadError
from dermdx.inference import DISCLAIMER, Predictor
from dermdx.service.report import CasePredictor
from dermdx.service.settings import MAX_AGE, SEXES, SITES, ServiceSettings
from dermdx.service.storage import ROLES, AuditEntry, Caller, Case, ConflictError, NotFoundError, Storage, as_utc
from dermdx.service.uploads import UploadError, check_image

log = logging.getLogger("dermdx.service")

STATIC_DIR = Path(__file__).parent / "static"
# The page loads nothing from elsewhere; images are fetched with the token and shown as blob: URLs.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
FORM_OVERHEAD_BYTES = 1 << 20  # room for multipart boundaries and the metadata fields

Sex = Literal[SEXES]  # type: ignore[valid-type]
Site = Literal[SITES]  # type: ignore[valid-type]


# --------------------------------------------------------------------------- API schemas


class FeedbackIn(BaseModel):
    """A clinician's answer on a case: the final diagnosis, agreement with the model, or both."""

    model_config = ConfigDict(extra="forbid")

    final_diagnosis: str | None = Field(None, min_length=1, max_length=200, description="one of the model's classes (e.g. 'mel') or free text")
    agrees: bool | None = Field(None, description="whether the clinician agrees with the model's top class")
    comment: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _something_given(self) -> "FeedbackIn":
        if self.final_diagnosis is None and self.agrees is None:
            raise ValueError("give final_diagnosis, agrees or both")
        return self


class FeedbackOut(BaseModel):
    id: int
    created_at: datetime
    created_by: str
    final_diagnosis: str | None
    agrees: bool | None
    comment: str | None


class CaseOut(BaseModel):
    id: str
    created_at: datetime
    created_by: str
    image_sha256: str
    image_url: str
    age: int | None
    sex: str
    site: str
    predicted: str = Field(description="the model's top class")
    final_diagnosis: str | None = Field(description="the latest final diagnosis recorded by feedback")
    report: dict[str, Any] = Field(description="probabilities, differential, model, disclaimer; heatmap/triage/recommendation/abstention when available")
    feedback: list[FeedbackOut]


class CaseList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[CaseOut]


class ModelOut(BaseModel):
    name: str
    sha256: str
    dermdx_version: str
    classes: list[str]
    data_fingerprint: str
    metrics: dict[str, Any] = Field(description="validation metrics stored with the model")
    image_size: int
    uses_metadata: bool


class Health(BaseModel):
    status: str
    version: str
    database: str
    models: int
    disclaimer: str


class WhoAmI(BaseModel):
    name: str
    role: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="who will use the token, e.g. a user name")
    role: Literal[ROLES] = "clinician"  # type: ignore[valid-type]

    @field_validator("name")
    @classmethod
    def _not_blank(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("a token name must not be blank")
        return name.strip()


class TokenOut(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown once; only its SHA-256 is stored")


class TokenInfo(BaseModel):
    name: str
    role: str
    created_at: datetime
    active: bool


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    case_id: str | None
    model_name: str | None
    model_sha256: str | None
    input_sha256: str | None
    output: dict[str, Any] | None


class AuditList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AuditOut]


def _case_out(case: Case) -> CaseOut:
    return CaseOut(
        id=case.id,
        created_at=as_utc(case.created_at),
        created_by=case.created_by,
        image_sha256=case.image_sha256,
        image_url=f"/api/cases/{case.id}/image",
        age=case.age,
        sex=case.sex,
        site=case.site,
        predicted=case.predicted,
        final_diagnosis=case.final_diagnosis,
        report=case.report,
        feedback=[
            FeedbackOut(id=f.id, created_at=as_utc(f.created_at), created_by=f.created_by, final_diagnosis=f.final_diagnosis, agrees=f.agrees, comment=f.comment)
            for f in case.feedback
        ],
    )


def _audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id, at=as_utc(entry.at), actor=entry.actor, role=entry.role, action=entry.action, case_id=entry.case_id,
        model_name=entry.model_name, model_sha256=entry.model_sha256, input_sha256=entry.input_sha256, output=entry.output,
    )  # fmt: skip


def input_sha256(image_sha256: str, *, age: int | None, sex: str, site: str) -> str:
    """The hash of everything the model was given: the image's hash and the metadata."""
    payload = json.dumps({"image_sha256": image_sha256, "age": age, "sex": sex, "site": site}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------- middleware


class _BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: Any, max_bytes: int, image_limit: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"the request is larger than {max_bytes / 1_000_000:.1f} MB; image files may be at most {image_limit / 1_000_000:.1f} MB"

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": self.message}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        state = {"received": 0, "started": False, "refused": False}

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes and not state["refused"]:
                    state["refused"] = True
                    if not state["started"]:
                        await self._refuse(send)
                    # The app sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if state["refused"]:
                return  # our 413 went out already
            state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


# --------------------------------------------------------------------------- the app


def create_app(predictor: Predictor | CasePredictor, settings: ServiceSettings, *, storage: Storage | None = None) -> FastAPI:
    """The service around one loaded model.

    Args:
        predictor: the model, loaded once (``Predictor.from_checkpoint(path, batch_size=1)``).
        settings: data folder, database URL, upload limits, CORS origins.
        storage: an open ``Storage`` to use instead of one built from ``settings`` (tests).

    Returns:
        A FastAPI app; run it with ``uvicorn.run(app, host="127.0.0.1", port=8000)``.

    Example:
        >>> app = create_app(Predictor.from_checkpoint("model.safetensors", batch_size=1), ServiceSettings(data_dir=Path("~/.dermdx")))
    """
    reporter = predictor if isinstance(predictor, CasePredictor) else CasePredictor(predictor)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = storage or Storage(settings.database_url, settings.image_dir)
    page = _render_page(reporter)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        yield
        if storage is None:
            store.dispose()

    app = FastAPI(
        title="dermdx clinician service",
        version=__version__,
        description=f"Skin-lesion decision support. {DISCLAIMER} Send `Authorization: Bearer <token>` on every /api call except /api/health.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = store
    app.state.reporter = reporter

    # ------------------------------------------------------------------ dependencies

    def get_session() -> Iterator[Session]:
        session = store.session()
        try:
            yield session
        finally:
            session.close()

    bearer = HTTPBearer(auto_error=False, description="an API token from `dermdx serve --create-token NAME` or POST /api/tokens")

    def clinician(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        session: Annotated[Session, Depends(get_session)],
    ) -> Caller:
        if credentials is None:
            raise HTTPException(401, "missing API token: send the header 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
        caller = store.verify_token(session, credentials.credentials)
        if caller is None:
            raise HTTPException(401, "API token not recognised (wrong or revoked); ask an admin for a new one", headers={"WWW-Authenticate": "Bearer"})
        return caller

    def admin(caller: Annotated[Caller, Depends(clinician)]) -> Caller:
        if caller.role != "admin":
            raise HTTPException(403, f"this needs an admin token; the token {caller.name!r} has role {caller.role!r}")
        return caller

    SessionDep = Annotated[Session, Depends(get_session)]
    ClinicianDep = Annotated[Caller, Depends(clinician)]
    AdminDep = Annotated[Caller, Depends(admin)]
    CaseId = Annotated[str, PathParam(max_length=64, description="a case id from POST /api/cases or GET /api/cases")]

    # ------------------------------------------------------------------ error answers

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(error.errors())}, status_code=422)

    @app.exception_handler(UploadError)
    async def _upload(_request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, error: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, error: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        # The type, the route and where it was raised; not the exception's text, which may quote request data.
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(traceback.extract_tb(error.__traceback__)[-4:]))
        log.error("incident %s: %s on %s %s at %s", incident, type(error).__name__, request.method, request.url.path, where)
        return JSONResponse({"detail": f"internal error (incident {incident}); nothing was stored. Tell the administrator"}, status_code=500)

    # ------------------------------------------------------------------ cases

    @app.post("/api/cases", status_code=201, response_model=CaseOut, tags=["cases"], summary="Create a case from a photo and metadata; returns its report")
    def create_case(
        caller: ClinicianDep,
        session: SessionDep,
        image: Annotated[UploadFile, File(description="the photo: JPEG or PNG")],
        age: Annotated[int | None, Form(ge=0, le=MAX_AGE, description="age in whole years, 0-120; empty if unknown")] = None,
        sex: Annotated[Sex, Form(description="male, female or unknown")] = "unknown",
        site: Annotated[Site, Form(description="body site")] = "unknown",
    ) -> CaseOut:
        started = time.perf_counter()
        data = image.file.read(settings.max_upload_bytes + 1)
        checked = check_image(data, settings)
        image_sha, path = store.save_image(session, checked.data, media_type=checked.media_type, width=checked.width, height=checked.height)
        try:
            report = reporter.report(path, age=age, sex=sex, site=site)
        except ImageReadError:
            raise UploadError(422, "the image could not be decoded for the model (truncated or corrupt); take or export the photo again") from None
        case = store.create_case(
            session, caller=caller, image_sha256=image_sha, age=age, sex=sex, site=site, report=report,
            input_sha256=input_sha256(image_sha, age=age, sex=sex, site=site),
        )  # fmt: skip
        log.info("case %s created by %s: image %s, model %s, %.0f ms", case.id, caller.name, image_sha[:16], reporter.card["sha256"][:16], 1000 * (time.perf_counter() - started))
        return _case_out(case)

    @app.get("/api/cases", response_model=CaseList, tags=["cases"], summary="List cases, newest first")
    def list_cases(
        _caller: ClinicianDep,
        session: SessionDep,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=settings.max_page_size)] = 20,
        diagnosis: Annotated[str | None, Query(max_length=200, description="final diagnosis recorded by feedback")] = None,
        predicted: Annotated[str | None, Query(max_length=100, description="the model's top class")] = None,
        since: Annotated[datetime | None, Query(description="only cases created at or after this time (ISO 8601)")] = None,
    ) -> CaseList:
        total, rows = store.list_cases(session, offset=offset, limit=limit, diagnosis=diagnosis, predicted=predicted, since=since)
        return CaseList(total=total, offset=offset, limit=limit, items=[_case_out(c) for c in rows])

    @app.get("/api/cases/{case_id}", response_model=CaseOut, tags=["cases"], summary="One case with its report and feedback")
    def get_case(case_id: CaseId, _caller: ClinicianDep, session: SessionDep) -> CaseOut:
        return _case_out(store.get_case(session, case_id))

    @app.get("/api/cases/{case_id}/image", tags=["cases"], summary="The case's photo", response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    def get_case_image(case_id: CaseId, _caller: ClinicianDep, session: SessionDep) -> FileResponse:
        case = store.get_case(session, case_id)
        path = store.image_file(case.image)
        if not path.is_file():
            raise HTTPException(404, f"the image file of case {case_id!r} is missing from the data folder; restore it from a backup")
        return FileResponse(path, media_type=case.image.media_type, headers={"Cache-Control": "no-store"})

    @app.post("/api/cases/{case_id}/feedback", status_code=201, response_model=CaseOut, tags=["cases"], summary="Record the final diagnosis and/or agreement")
    def post_feedback(case_id: CaseId, feedback: FeedbackIn, caller: ClinicianDep, session: SessionDep) -> CaseOut:
        diagnosis = feedback.final_diagnosis.strip() if feedback.final_diagnosis else None
        if diagnosis and diagnosis.lower() in reporter.card["classes"]:
            diagnosis = diagnosis.lower()
        entry = store.add_feedback(session, case_id, caller=caller, final_diagnosis=diagnosis or None, agrees=feedback.agrees, comment=feedback.comment)
        log.info("feedback %s on case %s by %s", entry.id, case_id, caller.name)
        return _case_out(store.get_case(session, case_id))

    # ------------------------------------------------------------------ models, health

    @app.get("/api/me", response_model=WhoAmI, tags=["service"], summary="The name and role of the calling token")
    def who_am_i(caller: ClinicianDep) -> WhoAmI:
        return WhoAmI(name=caller.name, role=caller.role)

    @app.get("/api/models", response_model=list[ModelOut], tags=["models"], summary="The loaded model(s): name, hash, classes, validation metrics")
    def list_models(_caller: ClinicianDep) -> list[ModelOut]:
        return [ModelOut(**reporter.card)]

    @app.get("/api/health", response_model=Health, tags=["service"], summary="Liveness and database check (no token needed)")
    def health(session: SessionDep) -> Health | JSONResponse:
        try:
            store.ping(session)
        except Exception as error:  # noqa: BLE001 (any database failure means "unhealthy")
            log.error("health check: database unreachable (%s)", type(error).__name__)
            return JSONResponse({"detail": "database unreachable"}, status_code=503)
        return Health(status="ok", version=__version__, database="ok", models=1, disclaimer=DISCLAIMER)

    # ------------------------------------------------------------------ admin

    @app.post("/api/tokens", status_code=201, response_model=TokenOut, tags=["admin"], summary="Create an API token (admin); the token is shown once")
    def create_token(body: TokenIn, caller: AdminDep, session: SessionDep) -> TokenOut:
        token = store.create_token(session, body.name, body.role, caller=caller)
        log.info("token %r (%s) created by %s", body.name, body.role, caller.name)
        return TokenOut(name=body.name, role=body.role, token=token)

    @app.get("/api/tokens", response_model=list[TokenInfo], tags=["admin"], summary="List token names and roles (admin); never the tokens")
    def list_tokens(_caller: AdminDep, session: SessionDep) -> list[TokenInfo]:
        return [TokenInfo(name=t.name, role=t.role, created_at=as_utc(t.created_at), active=t.active) for t in store.list_tokens(session)]

    @app.get("/api/audit", response_model=AuditList, tags=["admin"], summary="The audit log, newest first (admin)")
    def list_audit(
        _caller: AdminDep,
        session: SessionDep,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        case_id: Annotated[str | None, Query(max_length=64)] = None,
    ) -> AuditList:
        total, rows = store.list_audit(session, offset=offset, limit=limit, case_id=case_id)
        return AuditList(total=total, offset=offset, limit=limit, items=[_audit_out(e) for e in rows])

    # ------------------------------------------------------------------ the page

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        path = request.url.path
        if path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        elif path == "/" or path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = PAGE_CSP
            response.headers["X-Frame-Options"] = "DENY"
        return response

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_BodyLimit, max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES, image_limit=settings.max_upload_bytes)
    return app


def _describe(errors: Any) -> str:
    """Pydantic's error list as one sentence per field: ``age: Input should be ... (got 'forty')``."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form", "header")]
        where = ".".join(loc) or "request body"
        message = error.get("msg", "invalid value")
        if error.get("type") == "missing" and where == "image":
            message = "no image attached; send the photo as the multipart form field 'image'"
        text = f"{where}: {message}"
        value = error.get("input")
        if error.get("type") != "missing" and isinstance(value, str | int | float) and not isinstance(value, bool):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...'"
            text += f" (got {shown})"
        parts.append(text)
    return "; ".join(parts) or "invalid request"


def _render_page(reporter: CasePredictor) -> str:
    """index.html with the disclaimer and the form's choices filled in (escaped)."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    options = lambda values: "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)  # noqa: E731
    return (
        template.replace("{{DISCLAIMER}}", escape(DISCLAIMER))
        .replace("{{SEX_OPTIONS}}", options(SEXES))
        .replace("{{SITE_OPTIONS}}", options(SITES))
        .replace("{{MAX_AGE}}", str(MAX_AGE))
        .replace("{{VERSION}}", escape(__version__))
        .replace("{{MODEL}}", escape(f"{reporter.card['name']} ({reporter.card['sha256'][:12]})"))
    )
