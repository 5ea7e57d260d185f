"""Submission bodies read by the handlers themselves (a single object or a batch, in one
JSON parse), and the answers built from the items' outcomes, with their metrics."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.datastructures import UploadFile

from services.ingest import metrics
from services.ingest.csv_import import decode
from services.ingest.schemas import MAX_BATCH, NUL_FREE, SubmissionOut
from services.ingest.service.common import ItemOutcome
from shared.problems import ProblemError
from shared.settings import Settings

MAX_IDEMPOTENCY_KEY = 120
M = TypeVar("M", bound=BaseModel)


@dataclass
class Submission(Generic[M]):
    """A request's items, validated: `single` for one object (then `items` holds it), else a
    batch whose invalid items are None, with their field errors by index."""

    single: bool
    items: list[M | None]
    errors: dict[int, list[dict[str, str]]] = field(default_factory=dict)


async def read_submission(request: Request, model: type[M], wrapper: str,
                          kind: metrics.Kind) -> Submission[M]:
    """One `model` or a batch of them (`{wrapper: [...]}` or a JSON array). A single invalid
    object, malformed JSON or a badly shaped batch is refused (problem+json)."""
    raw = await request.body()
    data = _parse_json(raw, kind)
    context = _validation_context(raw)
    items = _split_batch(data, wrapper, kind)
    if items is None:
        return Submission(True, [_validate_single(model, data, kind, context)])
    bodies, errors = _validate_items(model, items, context)
    return Submission(False, bodies, errors)


def answer(kind: metrics.Kind, submission: Submission[Any],
           outcomes: list[ItemOutcome]) -> Response:
    if submission.single:
        return _single_response(kind, outcomes[0])
    return _batch_response(kind, outcomes, submission.errors)


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


def _batch_response(kind: metrics.Kind, outcomes: list[ItemOutcome],
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
    # pydantic's serializer: UUIDs as strings, and faster than json.dumps
    return Response(to_json(out), status_code=202 if counts["accepted"] else 200,
                    media_type="application/json")


def _single_response(kind: metrics.Kind, outcome: ItemOutcome) -> JSONResponse:
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


def idempotency_key(value: str | None) -> str | None:
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


def item_keys(key: str | None, submission: Submission[Any]) -> list[str | None]:
    """Each item's idempotency key: the header's, or `<key>#<i>` in a batch."""
    if submission.single:
        return [key]
    return [None if key is None else f"{key}#{i}" for i in range(len(submission.items))]


async def csv_text(request: Request, settings: Settings) -> str:
    """A CSV upload's text: the multipart field `file`, or the whole body."""
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
    return decode(data)
