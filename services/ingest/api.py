"""The ingest HTTP API: results (one, a batch, a CSV), overdose reports, a site's own
submissions, and the admin API for sites and keys. The upload page is in pages.py."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from services.ingest import bodies, metrics, openapi, pages
from services.ingest.auth import AnyCaller, ReportsCaller, ResultsCaller, caller_of, kind_of
from services.ingest.bodies import answer, csv_text, item_keys, read_submission
from services.ingest.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    CsvImportOut,
    DrugCheckIn,
    OverdoseReportIn,
    SiteCreate,
    SiteCreated,
    SiteOut,
    SubmissionItem,
    SubmissionsPage,
)
from services.ingest.service import csv_upload, drug_checks, reports, sites, submissions
from shared import regions
from shared.settings import Settings
from shared.web import AdminOnly, AppSettings, DbSession, create_app, settings_of

router = APIRouter()


# --- drug checks -------------------------------------------------------------------------


@router.post("/v1/drug-checks", tags=["drug checks"], response_model=None,
             responses=openapi.SUBMIT_RESPONSES,
             openapi_extra=openapi.body_doc("DrugCheckIn", "results", "DrugCheckSubmission"))
async def submit_drug_checks(request: Request) -> Response:
    """One result, or a batch of up to 1,000 (`{"results": [...]}` or a JSON array).

    A batch is stored in one transaction: invalid items are rejected one by one (with their
    field errors), the valid ones accepted.

    The hot path: auth (cached keys), parsing and validation run on the event loop; the
    write goes to the process's group-commit writer (shared/group_commit.py), and the
    answer comes after the commit."""
    settings = settings_of(request)
    caller = await caller_of(request, settings, "results")
    body = await read_submission(request, DrugCheckIn, "results", "drug_check")
    outcomes = await drug_checks.submit_grouped(settings.sqlalchemy_url, caller,
                                            body.items)
    return answer("drug_check", body, outcomes)


@router.post(
    "/v1/drug-checks/csv", tags=["drug checks"], response_model=CsvImportOut,
    responses={202: {"description": "Rows accepted", "model": CsvImportOut},
               413: {"description": "File over the size limit"},
               422: {"description": "Unknown CSV header"}},
    openapi_extra=openapi.CSV_BODY,
)
async def submit_drug_checks_csv(
    request: Request, caller: ResultsCaller, settings: AppSettings,
    province: Annotated[str, Query(max_length=50, description="Province or state of the "
                                   "Drug Checking BC export's City/Town column")] = "BC",
) -> JSONResponse:
    """A CSV file: the Drug Checking BC export as is, or the generic template
    (docs/ingest.md). Says how many rows were accepted, duplicates and rejected, with each
    rejected row's line number and reason."""
    text = await csv_text(request, settings)
    out = await run_in_threadpool(csv_upload.import_csv, settings.sqlalchemy_url, caller, text,
                                  province)
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if out.accepted else 200)


@router.get("/v1/drug-checks/{result_id}", tags=["drug checks"])
def get_drug_check(
    result_id: uuid.UUID, caller: ResultsCaller, session: DbSession
) -> dict[str, Any]:
    row = drug_checks.get_drug_check(session, caller, result_id)
    return {"id": str(row.id), "received_at": row.received_at.isoformat(), "event": row.event}


# --- overdose reports --------------------------------------------------------------------


@router.post("/v1/overdose-reports", tags=["overdose reports"], response_model=None,
             responses=openapi.SUBMIT_RESPONSES,
             openapi_extra=openapi.body_doc("OverdoseReportIn", "reports",
                                            "OverdoseReportSubmission"))
async def submit_overdose_reports(
    request: Request,
    idempotency_key: Annotated[str | None, Header(
        description="Same key and content again: the first id; other content: 409. "
                    "In a batch, item i uses `<key>#<i>`.")] = None,
) -> Response:
    """One overdose report or a batch (`{"reports": [...]}` or a JSON array). No names.
    The same path as results: checks on the event loop, the write in a group commit."""
    settings = settings_of(request)
    caller = await caller_of(request, settings, "reports")
    key = bodies.idempotency_key(idempotency_key)
    body = await read_submission(request, OverdoseReportIn, "reports", "overdose_report")
    outcomes = await reports.submit_grouped(settings.sqlalchemy_url, caller,
                                        body.items, item_keys(key, body))
    return answer("overdose_report", body, outcomes)


@router.get("/v1/overdose-reports/{report_id}", tags=["overdose reports"])
def get_overdose_report(
    report_id: uuid.UUID, caller: ReportsCaller, session: DbSession
) -> dict[str, Any]:
    row = reports.get_overdose_report(session, caller, report_id)
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
    page, next_since = submissions.list_submissions(session, caller, since, limit)
    return SubmissionsPage(
        items=[SubmissionItem(kind=kind, id=row.id,
                              received_at=row.received_at, region_id=row.region_id,
                              event=row.event) for kind, row in page],
        next_since=next_since)


# --- admin: sites and keys ---------------------------------------------------------------


def _key_out(row: Any) -> ApiKeyOut:
    return ApiKeyOut(id=row.id, site_id=row.site_id, prefix=row.prefix, scopes=list(row.scopes),
                     created_at=row.created_at, revoked_at=row.revoked_at)


def _key_created(row: Any, key: str) -> ApiKeyCreated:
    return ApiKeyCreated(**_key_out(row).model_dump(), api_key=key)


@router.post("/v1/admin/sites", status_code=201, dependencies=[AdminOnly], tags=["admin"])
def create_site(body: SiteCreate, session: DbSession) -> SiteCreated:
    site, key = sites.create_site(session, body.name, list(body.scopes))
    return SiteCreated(site_id=site.id, name=site.name, api_key=key, scopes=list(body.scopes))


@router.get("/v1/admin/sites", dependencies=[AdminOnly], tags=["admin"])
def list_sites(session: DbSession) -> list[SiteOut]:
    return [SiteOut(id=s.id, name=s.name, created_at=s.created_at, active_keys=n)
            for s, n in sites.list_sites(session)]


@router.get("/v1/admin/sites/{site_id}/keys", dependencies=[AdminOnly], tags=["admin"])
def list_keys(site_id: uuid.UUID, session: DbSession) -> list[ApiKeyOut]:
    return [_key_out(k) for k in sites.list_keys(session, site_id)]


@router.post("/v1/admin/sites/{site_id}/keys", status_code=201, dependencies=[AdminOnly],
             tags=["admin"])
def add_key(site_id: uuid.UUID, body: ApiKeyCreate, session: DbSession) -> ApiKeyCreated:
    """A new key for the site (shown once)."""
    row, key = sites.add_key(session, site_id, list(body.scopes))
    return _key_created(row, key)


@router.post("/v1/admin/sites/{site_id}/keys/{key_id}/revoke", dependencies=[AdminOnly],
             tags=["admin"])
def revoke_key(site_id: uuid.UUID, key_id: uuid.UUID, session: DbSession) -> ApiKeyOut:
    return _key_out(sites.revoke_key(session, site_id, key_id))


@router.post("/v1/admin/sites/{site_id}/keys/{key_id}/rotate", status_code=201,
             dependencies=[AdminOnly], tags=["admin"])
def rotate_key(site_id: uuid.UUID, key_id: uuid.UUID, session: DbSession) -> ApiKeyCreated:
    """A new key with the same scopes (shown once); the old one stops working at once."""
    row, key = sites.rotate_key(session, site_id, key_id)
    return _key_created(row, key)


# --- body size limit ---------------------------------------------------------------------


def _body_limit(path: str, settings: Settings) -> int:
    """The JSON limit everywhere, the (larger) CSV limit on the CSV endpoints (shared/edge.py
    refuses a larger body with 413 before it is read)."""
    return (settings.ingest_max_csv_bytes
            if path.endswith("/csv") or path in ("/upload", "/upload/stream")
            else settings.ingest_max_json_bytes)


def _count_too_large(path: str) -> None:
    metrics.count(kind_of(path), "rejected", "too_large")


app = create_app("ingest", title="Lookout ingest",
                 description="Drug-checking results and overdose reports from sites.",
                 body_limit=_body_limit, on_body_refused=_count_too_large)
app.include_router(router)
app.include_router(pages.router)
openapi.install(app)


async def _load_zip_codes() -> None:
    """The ZIP code table is loaded on its first lookup: a second on a quiet machine, five
    under load, which the first result after a start had waited for. Load it before the
    service answers instead."""
    await run_in_threadpool(regions.by_postal_code, "98104")


app.router.add_event_handler("startup", _load_zip_codes)
