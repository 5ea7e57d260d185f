"""The ingest HTTP API: results (one, a batch, a CSV), overdose reports, a site's own
submissions, the CSV upload page, and the admin API for sites and keys."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from pydantic_core import to_json
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from services.ingest import metrics, service
from services.ingest.csv_import import parse_csv
from services.ingest.schemas import (
    MAX_BATCH,
    NUL_FREE,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    BatchOut,
    CsvImportOut,
    CsvRejectedRow,
    DrugCheckIn,
    ItemError,
    OverdoseReportIn,
    SiteCreate,
    SiteCreated,
    SiteOut,
    SubmissionItem,
    SubmissionOut,
    SubmissionsPage,
)
from services.ingest.writer import writer_for
from shared import regions
from shared.db import get_engine, session_scope, write_session
from shared.problems import ProblemError
from shared.ratelimit import KeyedRateLimiter
from shared.settings import Settings
from shared.web import AdminOnly, AppSettings, DbSession, bearer_token, create_app, settings_of

CSV_CHUNK = 1000  # rows per transaction in a CSV import
MAX_IDEMPOTENCY_KEY = 120
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()


# --- auth and rate limit -----------------------------------------------------------------

_limiters: dict[tuple[float, float], KeyedRateLimiter] = {}


def _limiter(settings: Settings) -> KeyedRateLimiter:
    key = (settings.ingest_rate_per_second, settings.ingest_rate_burst)
    if key not in _limiters:
        _limiters[key] = KeyedRateLimiter(*key)
    return _limiters[key]


def _kind_of(path: str) -> metrics.Kind:
    return "overdose_report" if "overdose" in path else "drug_check"


def _count_refused(request: Request, exc: ProblemError) -> None:
    if request.method == "POST":
        metrics.count(_kind_of(request.url.path), "rejected",
                      "unauthorized" if exc.status == 401 else "forbidden")


def _check_caller(session: Session, settings: Settings, request: Request,
                  authorization: str | None, scope: str | None) -> service.Caller:
    try:
        caller = service.authenticate(session, bearer_token(authorization), scope)
    except ProblemError as exc:
        _count_refused(request, exc)
        raise
    _rate_limit(settings, request, caller)
    return caller


def _authenticate(url: str, api_key: str, scope: str | None) -> service.Caller:
    with session_scope(url) as session:
        return service.authenticate(session, api_key, scope)


async def _caller_of(request: Request, settings: Settings, scope: str) -> service.Caller:
    """The hot path's auth and rate limit, on the event loop: the database (in a worker
    thread) only when this process has not checked the key within the last seconds. (It
    reads the header itself: a `Depends(HTTPBearer)` costs a tenth of a request.)"""
    try:
        api_key = bearer_token(request.headers.get("authorization"))
        caller = service.cached_caller(api_key, scope)
        if caller is None:
            caller = await run_in_threadpool(_authenticate, settings.sqlalchemy_url, api_key,
                                             scope)
    except ProblemError as exc:
        _count_refused(request, exc)
        raise
    _rate_limit(settings, request, caller)
    return caller


def _rate_limit(settings: Settings, request: Request, caller: service.Caller) -> None:
    wait = _limiter(settings).try_take(str(caller.key_id))
    if wait > 0:
        if request.method == "POST":
            metrics.count(_kind_of(request.url.path), "rejected", "rate_limited")
        raise ProblemError(429, "Too many requests",
                           f"Rate limit of {settings.ingest_rate_per_second:g} requests/s per "
                           "API key exceeded; retry later.",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})


_bearer = HTTPBearer(auto_error=False, description="The site's API key")


def _caller(scope: str | None) -> Any:
    def dependency(
        session: DbSession, settings: AppSettings, request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    ) -> service.Caller:
        authorization = (f"Bearer {credentials.credentials}" if credentials is not None
                         else None)
        return _check_caller(session, settings, request, authorization, scope)

    return Depends(dependency)


ResultsCaller = Annotated[service.Caller, _caller("results")]
ReportsCaller = Annotated[service.Caller, _caller("reports")]
AnyCaller = Annotated[service.Caller, _caller(None)]


# --- request bodies ----------------------------------------------------------------------


def _pointer(loc: Sequence[Any]) -> str:
    return "/" + "/".join(str(p) for p in loc)


def _item_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": _pointer(e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()]


def _parse_json(raw: bytes, kind: metrics.Kind) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays or objects nested deeper than the parser goes (~1,000)
        message = "nested too deeply" if isinstance(exc, RecursionError) else "invalid JSON"
        metrics.count(kind, "rejected", "malformed")
        raise ProblemError(400, "Malformed JSON", f"The request body is not valid JSON: "
                           f"{message}.", errors=[{"field": "/", "in": "body",
                                                   "message": message,
                                                   "type": "json_invalid"}]) from None


def _split_batch(data: Any, wrapper: str, kind: metrics.Kind) -> list[Any] | None:
    """The items of a batch ({wrapper: [...]} or [...]), or None for a single object."""
    if isinstance(data, dict) and wrapper in data:
        if set(data) != {wrapper} or not isinstance(data[wrapper], list):
            metrics.count(kind, "rejected", "validation")
            message = f"a batch is {{\"{wrapper}\": [...]}} with nothing else"
            raise ProblemError(422, "Validation failed", message, errors=[
                {"field": "/", "in": "body", "message": message, "type": "batch_shape"}])
        data = data[wrapper]
    if not isinstance(data, list):
        return None
    if not 1 <= len(data) <= MAX_BATCH:
        metrics.count(kind, "rejected", "validation")
        message = f"a batch holds 1 to {MAX_BATCH} items; this one has {len(data)}"
        raise ProblemError(422, "Validation failed", message, errors=[
            {"field": f"/{wrapper}", "in": "body", "message": message, "type": "batch_size"}])
    return data


def _validation_context(raw: bytes) -> dict[str, Any]:
    """What the body's bytes already tell the models' validators: in UTF-8 JSON a NUL can
    only be written `\\u0000` (a raw control character is invalid JSON, and a NUL byte
    means another encoding), so a body without either holds no NUL anywhere and the
    models skip their per-field NUL check (a fifth of a result's validation)."""
    return {NUL_FREE: b"\\u0000" not in raw and b"\x00" not in raw}


def _validate_single(model: type[M], data: Any, kind: metrics.Kind,
                     context: dict[str, Any]) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        metrics.count(kind, "rejected", "validation")
        errors = _item_errors(exc)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise ProblemError(422, "Validation failed", f"Invalid field(s): {fields}",
                           errors=[{**e, "in": "body"} for e in errors]) from None


def _validate_items(
    model: type[M], items: list[Any], context: dict[str, Any]
) -> tuple[list[M | None], dict[int, list[dict[str, str]]]]:
    bodies: list[M | None] = []
    errors: dict[int, list[dict[str, str]]] = {}
    for i, item in enumerate(items):
        try:
            bodies.append(model.model_validate(item, context=context))
        except ValidationError as exc:
            bodies.append(None)
            errors[i] = _item_errors(exc)
    return bodies, errors


def _batch_response(kind: metrics.Kind, outcomes: list[service.ItemOutcome],
                    errors: dict[int, list[dict[str, str]]]) -> Response:
    """A `BatchOut`, built as plain dicts (pydantic models for 1,000 items cost more than
    the rest of the answer)."""
    items = [{"index": i, "status": o.status, "id": o.id, "event_id": o.event_id,
              "region_id": o.region_id, "reason": o.reason,
              "errors": [{"field": e["field"], "message": e["message"], "type": e["type"]}
                         for e in errors.get(i, o.errors)],
              "existing_id": o.existing_id} for i, o in enumerate(outcomes)]
    metrics.count_outcomes(kind, ((o.status, o.reason) for o in outcomes))
    counts = Counter(o.status for o in outcomes)
    out = {"accepted": counts["accepted"], "duplicate": counts["duplicate"],
           "rejected": counts["rejected"], "items": items}
    # pydantic's serializer: UUIDs as strings, three times as fast as json.dumps
    return Response(to_json(out), status_code=202 if counts["accepted"] else 200,
                    media_type="application/json")


def _single_response(kind: metrics.Kind, outcome: service.ItemOutcome) -> JSONResponse:
    metrics.count(kind, outcome.status, outcome.reason)
    if outcome.status == "rejected":
        if outcome.reason == "conflict":
            raise ProblemError(409, "Conflict", outcome.errors[0]["message"],
                               existing_id=str(outcome.existing_id))
        raise ProblemError(422, "Unknown location", outcome.errors[0]["message"]
                           if outcome.errors else "", errors=outcome.errors)
    assert outcome.id and outcome.event_id and outcome.region_id
    body = SubmissionOut(id=outcome.id, event_id=outcome.event_id, region_id=outcome.region_id,
                         status="accepted" if outcome.status == "accepted" else "duplicate")
    return JSONResponse(body.model_dump(mode="json"),
                        status_code=202 if outcome.status == "accepted" else 200)


# --- drug checks -------------------------------------------------------------------------

_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Single: a duplicate of an earlier submission (its id). Batch: "
                         "nothing new accepted; per-item statuses."},
    202: {"description": "Single: accepted (`SubmissionOut`). Batch: per-item statuses "
                         "(`BatchOut`)."},
    400: {"description": "Malformed JSON"},
    409: {"description": "Single: same id, different content"},
    413: {"description": "Body over the size limit"},
    422: {"description": "Invalid fields, or an unknown location (problem+json)"},
    429: {"description": "Rate limit; see Retry-After"},
}


def _body_doc(single: str, wrapper: str, batch_of: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{single}"}
    array = {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_BATCH}
    schema = {"title": batch_of, "oneOf": [
        ref, {"type": "object", "properties": {wrapper: array}, "required": [wrapper],
              "additionalProperties": False}, array]}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}},
            "security": [{"HTTPBearer": []}]}  # the handler reads the key itself


@router.post("/v1/drug-checks", tags=["drug checks"], response_model=None,
             responses=_SUBMIT_RESPONSES,
             openapi_extra=_body_doc("DrugCheckIn", "results", "DrugCheckSubmission"))
async def submit_drug_checks(request: Request) -> Response:
    """One result, or a batch of up to 1,000 (`{"results": [...]}` or a JSON array).

    A batch is stored in one transaction: invalid items are rejected one by one (with their
    field errors), the valid ones accepted.

    The hot path: auth (cached keys), parsing and validation run on the event loop; the
    write goes to the process's group-commit writer (services/ingest/writer.py), and the
    answer comes after the commit."""
    settings = settings_of(request)
    caller = await _caller_of(request, settings, "results")
    raw = await request.body()
    data = _parse_json(raw, "drug_check")
    context = _validation_context(raw)
    items = _split_batch(data, "results", "drug_check")
    if items is None:
        body = _validate_single(DrugCheckIn, data, "drug_check", context)
        outcomes = await _store_drug_checks(settings, caller, [body])
        return _single_response("drug_check", outcomes[0])
    bodies, errors = _validate_items(DrugCheckIn, items, context)
    outcomes = await _store_drug_checks(settings, caller, bodies)
    return _batch_response("drug_check", outcomes, errors)


async def _store_drug_checks(settings: Settings, caller: service.Caller,
                             bodies: list[DrugCheckIn | None]) -> list[service.ItemOutcome]:
    """Prepared here (hashes, events: CPU work, outside any lock), then stored through the
    group commit, merged with the same site's other requests of the group (an item sees
    the ones before it)."""
    url = settings.sqlalchemy_url
    prepared = service.prepare_drug_checks(caller, bodies, get_engine(url).dialect)

    def lookup(session: Session, items: Sequence[Any]) -> service.Known:
        return service.known_drug_checks(session, caller, items)

    def store(session: Session, items: Sequence[Any], known: service.Known
              ) -> list[service.ItemOutcome]:
        return service.store_drug_checks(session, caller, items, known)

    return await writer_for(url).store(prepared, store, ("results", caller), lookup)


_OLDEST = datetime.min.replace(tzinfo=UTC)


def import_csv(settings: Settings, caller: service.Caller, text: str, province: str,
               progress: Callable[[int, int], None] | None = None) -> CsvImportOut:
    """Import a CSV file, one transaction per chunk of rows, oldest rows first: exports
    are often newest first, and detection takes each partition in the order it comes
    (docs/detection.md, "Event time, not arrival order"). `progress(done, total)` is called
    after each chunk's commit."""
    fmt, parsed = parse_csv(text, province)
    rows = sorted(parsed, key=lambda r: r.body.collected_at if r.body else _OLDEST)
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    rejected: list[CsvRejectedRow] = []
    total = 0

    def flush(chunk: list[Any]) -> None:
        with write_session(settings.sqlalchemy_url) as s:
            outcomes = service.submit_drug_checks(s, caller, [r.body for r in chunk])
        for row, outcome in zip(chunk, outcomes, strict=True):
            reason = row.reason or outcome.reason or ""
            status = outcome.status
            counts[status] += 1
            metrics.count("drug_check", status, reason or None)
            if status == "rejected":
                rejected.append(CsvRejectedRow(
                    line=row.line, reason=reason,
                    errors=[ItemError(**e) for e in (row.errors or outcome.errors)]))

    for start in range(0, len(rows), CSV_CHUNK):
        chunk = rows[start:start + CSV_CHUNK]
        flush(chunk)
        total += len(chunk)
        if progress is not None:
            progress(total, len(rows))
    rejected.sort(key=lambda r: r.line)
    return CsvImportOut(format=fmt, rows=total, rejected_rows=rejected, **counts)


async def _csv_text(request: Request, settings: Settings) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=settings.ingest_max_csv_bytes)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ProblemError(422, "Validation failed", "Send the CSV in the field `file`.",
                               errors=[{"field": "/file", "in": "body",
                                        "message": "missing file", "type": "missing"}])
        data = await upload.read()
    else:
        data = await request.body()
    from services.ingest.csv_import import decode

    return decode(data)


@router.post(
    "/v1/drug-checks/csv", tags=["drug checks"], response_model=CsvImportOut,
    responses={202: {"description": "Rows accepted", "model": CsvImportOut},
               413: {"description": "File over the size limit"},
               422: {"description": "Unknown CSV header"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string",
                                                                   "format": "binary"}}}},
        "text/csv": {"schema": {"type": "string"}}}}},
)
async def submit_drug_checks_csv(
    request: Request, caller: ResultsCaller, settings: AppSettings,
    province: Annotated[str, Query(max_length=50, description="Province or state of the "
                                   "Drug Checking BC export's City/Town column")] = "BC",
) -> JSONResponse:
    """A CSV file: the Drug Checking BC export as is, or the generic template
    (docs/ingest.md). Says how many rows were accepted, duplicates and rejected, with each
    rejected row's line number and reason."""
    text = await _csv_text(request, settings)
    out = await run_in_threadpool(import_csv, settings, caller, text, province)
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if out.accepted else 200)


@router.get("/v1/drug-checks/{result_id}", tags=["drug checks"])
def get_drug_check(
    result_id: uuid.UUID, caller: ResultsCaller, session: DbSession
) -> dict[str, Any]:
    row = service.get_drug_check(session, caller, result_id)
    return {"id": str(row.id), "received_at": row.received_at.isoformat(), "event": row.event}


# --- overdose reports --------------------------------------------------------------------


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        metrics.count("overdose_report", "rejected", "validation")
        message = f"1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        raise ProblemError(422, "Validation failed", f"Idempotency-Key: {message}", errors=[
            {"field": "/Idempotency-Key", "in": "header", "message": message,
             "type": "value_error"}])
    return value


@router.post("/v1/overdose-reports", tags=["overdose reports"], response_model=None,
             responses=_SUBMIT_RESPONSES,
             openapi_extra=_body_doc("OverdoseReportIn", "reports", "OverdoseReportSubmission"))
async def submit_overdose_reports(
    request: Request,
    idempotency_key: Annotated[str | None, Header(
        description="Same key and content again: the first id; other content: 409. "
                    "In a batch, item i uses `<key>#<i>`.")] = None,
) -> Response:
    """One overdose report or a batch (`{"reports": [...]}` or a JSON array). No names.
    The same path as results: checks on the event loop, the write in a group commit."""
    settings = settings_of(request)
    caller = await _caller_of(request, settings, "reports")
    key = _idempotency_key(idempotency_key)
    raw = await request.body()
    data = _parse_json(raw, "overdose_report")
    context = _validation_context(raw)
    items = _split_batch(data, "reports", "overdose_report")
    if items is None:
        body = _validate_single(OverdoseReportIn, data, "overdose_report", context)
        outcomes = await _store_reports(settings, caller, [body], [key])
        return _single_response("overdose_report", outcomes[0])
    bodies, errors = _validate_items(OverdoseReportIn, items, context)
    keys = [None if key is None else f"{key}#{i}" for i in range(len(items))]
    outcomes = await _store_reports(settings, caller, bodies, keys)
    return _batch_response("overdose_report", outcomes, errors)


async def _store_reports(settings: Settings, caller: service.Caller,
                         bodies: list[OverdoseReportIn | None],
                         keys: list[str | None]) -> list[service.ItemOutcome]:
    """Through the group commit, alone (not merged: a race on an Idempotency-Key fails the
    whole call with a 409)."""
    def store(session: Session, items: Sequence[Any], _: None) -> list[service.ItemOutcome]:
        return service.submit_overdose_reports(session, caller, bodies, keys)

    return await writer_for(settings.sqlalchemy_url).store(bodies, store)


@router.get("/v1/overdose-reports/{report_id}", tags=["overdose reports"])
def get_overdose_report(
    report_id: uuid.UUID, caller: ReportsCaller, session: DbSession
) -> dict[str, Any]:
    row = service.get_overdose_report(session, caller, report_id)
    return {"id": str(row.id), "received_at": row.received_at.isoformat(), "event": row.event}


# --- a site's own submissions ------------------------------------------------------------


@router.get("/v1/submissions", tags=["submissions"])
def list_submissions(
    caller: AnyCaller, session: DbSession,
    since: Annotated[str | None, Query(max_length=100, description=(
        "Received after this time (ISO 8601 with a zone), or a page's `next_since`"))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SubmissionsPage:
    """The caller's own site's results and reports (those its key's scopes cover), oldest
    first. Another site's submissions are never listed."""
    page, next_since = service.list_submissions(session, caller, since, limit)
    return SubmissionsPage(
        items=[SubmissionItem(kind=kind, id=row.id,
                              received_at=row.received_at, region_id=row.region_id,
                              event=row.event) for kind, row in page],
        next_since=next_since)


# --- the upload page ---------------------------------------------------------------------


@router.get("/upload", response_class=HTMLResponse, include_in_schema=False)
def upload_page(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "upload.html", {"result": None})


async def _upload_form(request: Request, settings: Settings
                       ) -> tuple[service.Caller, str, str]:
    """The upload page's form, checked: (caller, CSV text, province)."""
    form = await request.form(max_part_size=settings.ingest_max_csv_bytes)
    api_key, upload = str(form.get("api_key") or "").strip(), form.get("file")
    province = str(form.get("province") or "BC").strip()[:50] or "BC"
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ProblemError(422, "No file", "Choose a CSV file to upload.")

    def auth() -> service.Caller:
        with session_scope(settings.sqlalchemy_url) as session:
            return _check_caller(session, settings, request, f"Bearer {api_key}", "results")

    caller = await run_in_threadpool(auth)
    from services.ingest.csv_import import decode

    return caller, decode(await upload.read()), province


@router.post("/upload", response_class=HTMLResponse, include_in_schema=False)
async def upload_submit(request: Request, settings: AppSettings) -> HTMLResponse:
    """The page's form without JavaScript: the result rendered in the page when done."""
    error, status, result, province = "", 200, None, "BC"
    try:
        caller, text, province = await _upload_form(request, settings)
        result = await run_in_threadpool(import_csv, settings, caller, text, province)
    except ProblemError as exc:
        error, status = f"{exc.title}: {exc.detail}", exc.status
    return templates.TemplateResponse(
        request, "upload.html", {"result": result, "error": error, "province": province},
        status_code=status)


@router.post("/upload/stream", include_in_schema=False)
async def upload_stream(request: Request, settings: AppSettings) -> Response:
    """The page's form with JavaScript (upload.js): NDJSON lines as the import goes,
    {"done", "total"} after each committed chunk, then {"result"} (or {"error"})."""
    try:
        caller, text, province = await _upload_form(request, settings)
    except ProblemError as exc:
        return JSONResponse({"error": f"{exc.title}: {exc.detail}"}, status_code=exc.status)
    return StreamingResponse(_import_lines(settings, caller, text, province),
                             media_type="application/x-ndjson")


async def _import_lines(settings: Settings, caller: service.Caller, text: str,
                        province: str) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(line: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, None if line is None else to_json(line) + b"\n")

    def run() -> None:
        try:
            result = import_csv(settings, caller, text, province,
                                lambda done, total: put({"done": done, "total": total}))
            put({"result": result.model_dump(mode="json")})
        except ProblemError as exc:
            put({"error": f"{exc.title}: {exc.detail}"})
        finally:
            put(None)

    task = loop.run_in_executor(None, run)
    while (line := await lines.get()) is not None:
        yield line
    await task


@router.get("/upload.js", include_in_schema=False)
def upload_script() -> Response:
    return Response((Path(__file__).parent / "templates" / "upload.js").read_bytes(),
                    media_type="text/javascript")


# --- admin: sites and keys ---------------------------------------------------------------


def _key_out(row: Any) -> ApiKeyOut:
    return ApiKeyOut(id=row.id, site_id=row.site_id, prefix=row.prefix, scopes=list(row.scopes),
                     created_at=row.created_at, revoked_at=row.revoked_at)


def _key_created(row: Any, key: str) -> ApiKeyCreated:
    return ApiKeyCreated(**_key_out(row).model_dump(), api_key=key)


@router.post("/v1/admin/sites", status_code=201, dependencies=[AdminOnly], tags=["admin"])
def create_site(body: SiteCreate, session: DbSession) -> SiteCreated:
    site, key = service.create_site(session, body.name, list(body.scopes))
    return SiteCreated(site_id=site.id, name=site.name, api_key=key, scopes=list(body.scopes))


@router.get("/v1/admin/sites", dependencies=[AdminOnly], tags=["admin"])
def list_sites(session: DbSession) -> list[SiteOut]:
    return [SiteOut(id=s.id, name=s.name, created_at=s.created_at, active_keys=n)
            for s, n in service.list_sites(session)]


@router.get("/v1/admin/sites/{site_id}/keys", dependencies=[AdminOnly], tags=["admin"])
def list_keys(site_id: uuid.UUID, session: DbSession) -> list[ApiKeyOut]:
    return [_key_out(k) for k in service.list_keys(session, site_id)]


@router.post("/v1/admin/sites/{site_id}/keys", status_code=201, dependencies=[AdminOnly],
             tags=["admin"])
def add_key(site_id: uuid.UUID, body: ApiKeyCreate, session: DbSession) -> ApiKeyCreated:
    """A new key for the site (shown once)."""
    row, key = service.add_key(session, site_id, list(body.scopes))
    return _key_created(row, key)


@router.post("/v1/admin/sites/{site_id}/keys/{key_id}/revoke", dependencies=[AdminOnly],
             tags=["admin"])
def revoke_key(site_id: uuid.UUID, key_id: uuid.UUID, session: DbSession) -> ApiKeyOut:
    return _key_out(service.revoke_key(session, site_id, key_id))


@router.post("/v1/admin/sites/{site_id}/keys/{key_id}/rotate", status_code=201,
             dependencies=[AdminOnly], tags=["admin"])
def rotate_key(site_id: uuid.UUID, key_id: uuid.UUID, session: DbSession) -> ApiKeyCreated:
    """A new key with the same scopes (shown once); the old one stops working at once."""
    row, key = service.rotate_key(session, site_id, key_id)
    return _key_created(row, key)


# --- body size limit ---------------------------------------------------------------------


def _body_limit(path: str, settings: Settings) -> int:
    """The JSON limit everywhere, the (larger) CSV limit on the CSV endpoints (shared/edge.py
    refuses a larger body with 413 before it is read)."""
    return (settings.ingest_max_csv_bytes
            if path.endswith("/csv") or path in ("/upload", "/upload/stream")
            else settings.ingest_max_json_bytes)


def _count_too_large(path: str) -> None:
    metrics.count(_kind_of(path), "rejected", "too_large")


app = create_app("ingest", title="Lookout ingest",
                 description="Drug-checking results and overdose reports from sites.",
                 body_limit=_body_limit, on_body_refused=_count_too_large)
app.include_router(router)


async def _load_zip_codes() -> None:
    """The ZIP code table is loaded on its first lookup: a second on a quiet machine, five
    under load, which the first result after a start had waited for. Load it before the
    service answers instead."""
    await run_in_threadpool(regions.by_postal_code, "98104")


app.router.add_event_handler("startup", _load_zip_codes)


def _openapi() -> dict[str, Any]:
    """The generated document plus the request models that the handlers validate
    themselves (single object or batch)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    _, defs = models_json_schema([(DrugCheckIn, "validation"), (OverdoseReportIn, "validation"),
                                  (BatchOut, "serialization"),
                                  (SubmissionOut, "serialization")],
                                 ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    app.openapi_schema = schema
    return schema


app.openapi = _openapi  # type: ignore[method-assign]
