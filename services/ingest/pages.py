"""The CSV upload page: a form that works without JavaScript, and an NDJSON stream of the
import's progress for upload.js."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic_core import to_json
from starlette.datastructures import UploadFile

from services.ingest.auth import check_caller
from services.ingest.csv_import import decode
from services.ingest.service.common import Caller
from services.ingest.service.csv_upload import import_csv
from shared.db import session_scope
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import AppSettings

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "upload.html", {"result": None})


async def _upload_form(request: Request, settings: Settings
                       ) -> tuple[Caller, str, str]:
    """The upload page's form, checked: (caller, CSV text, province)."""
    form = await request.form(max_part_size=settings.ingest_max_csv_bytes)
    api_key, upload = str(form.get("api_key") or "").strip(), form.get("file")
    province = str(form.get("province") or "BC").strip()[:50] or "BC"
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ProblemError(422, "No file", "Choose a CSV file to upload.")

    def auth() -> Caller:
        with session_scope(settings.sqlalchemy_url) as session:
            return check_caller(session, settings, request, f"Bearer {api_key}", "results")

    caller = await run_in_threadpool(auth)
    return caller, decode(await upload.read()), province


@router.post("/upload", response_class=HTMLResponse)
async def upload_submit(request: Request, settings: AppSettings) -> HTMLResponse:
    """The page's form without JavaScript: the result rendered in the page when done."""
    error, status, result, province = "", 200, None, "BC"
    try:
        caller, text, province = await _upload_form(request, settings)
        result = await run_in_threadpool(import_csv, settings.sqlalchemy_url, caller,
                                         text, province)
    except ProblemError as exc:
        error, status = f"{exc.title}: {exc.detail}", exc.status
    return templates.TemplateResponse(
        request, "upload.html", {"result": result, "error": error, "province": province},
        status_code=status)


@router.post("/upload/stream")
async def upload_stream(request: Request, settings: AppSettings) -> Response:
    """The page's form with JavaScript (upload.js): NDJSON lines as the import goes,
    {"done", "total"} after each committed chunk, then {"result"} (or {"error"})."""
    try:
        caller, text, province = await _upload_form(request, settings)
    except ProblemError as exc:
        return JSONResponse({"error": f"{exc.title}: {exc.detail}"}, status_code=exc.status)
    return StreamingResponse(_import_lines(settings, caller, text, province),
                             media_type="application/x-ndjson")


async def _import_lines(settings: Settings, caller: Caller, text: str,
                        province: str) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(line: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, None if line is None else to_json(line) + b"\n")

    def run() -> None:
        try:
            result = import_csv(settings.sqlalchemy_url, caller, text, province,
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


@router.get("/upload.js")
def upload_script() -> Response:
    return Response((Path(__file__).parent / "templates" / "upload.js").read_bytes(),
                    media_type="text/javascript")
