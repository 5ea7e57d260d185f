"""The ingest HTTP API."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response

from services.ingest import service
from services.ingest.schemas import DrugCheckIn, SiteCreate, SiteCreated, SubmissionOut
from shared.web import AdminOnly, DbSession, bearer_token, create_app

router = APIRouter()


def _caller(scope: str) -> Any:
    def dependency(
        session: DbSession, authorization: Annotated[str | None, Header()] = None
    ) -> service.Caller:
        return service.authenticate(session, bearer_token(authorization), scope)

    return Depends(dependency)


ResultsCaller = Annotated[service.Caller, _caller("results")]


@router.post(
    "/v1/drug-checks", status_code=202, response_model=SubmissionOut, tags=["drug checks"],
    responses={200: {"description": "Duplicate of an earlier submission"},
               409: {"description": "Same sample id, different content"}},
)
def submit_drug_check(
    body: DrugCheckIn, caller: ResultsCaller, session: DbSession, response: Response
) -> SubmissionOut:
    row, created = service.submit_drug_check(session, caller, body)
    if not created:
        response.status_code = 200
    return SubmissionOut(id=row.id, event_id=row.event_id, region_id=row.region_id,
                         status="accepted" if created else "duplicate")


@router.get("/v1/drug-checks/{result_id}", tags=["drug checks"])
def get_drug_check(
    result_id: uuid.UUID, caller: ResultsCaller, session: DbSession
) -> dict[str, Any]:
    row = service.get_drug_check(session, caller, result_id)
    return {"id": str(row.id), "received_at": row.received_at.isoformat(), "event": row.event}


@router.post("/v1/admin/sites", status_code=201, dependencies=[AdminOnly], tags=["admin"])
def create_site(body: SiteCreate, session: DbSession) -> SiteCreated:
    site, key = service.create_site(session, body.name, list(body.scopes))
    return SiteCreated(site_id=site.id, name=site.name, api_key=key, scopes=list(body.scopes))


app = create_app("ingest", title="Lookout ingest",
                 description="Drug-checking results and overdose reports from sites.")
app.include_router(router)
