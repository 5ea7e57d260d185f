"""The OpenAPI document's parts the handlers cannot declare: the submission bodies that they
read and validate themselves (a single object or a batch), and the CSV upload's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from services.ingest.schemas import (
    MAX_BATCH,
    BatchOut,
    DrugCheckIn,
    OverdoseReportIn,
    SubmissionOut,
)

SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
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

CSV_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string",
                                                               "format": "binary"}}}},
    "text/csv": {"schema": {"type": "string"}}}}}


def body_doc(single: str, wrapper: str, batch_of: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{single}"}
    array = {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_BATCH}
    schema = {"title": batch_of, "oneOf": [
        ref, {"type": "object", "properties": {wrapper: array}, "required": [wrapper],
              "additionalProperties": False}, array]}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}},
            "security": [{"HTTPBearer": []}]}  # the handler reads the key itself


def install(app: FastAPI) -> None:
    """The generated document plus the request models that the handlers validate
    themselves (single object or batch)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        _, defs = models_json_schema(
            [(DrugCheckIn, "validation"), (OverdoseReportIn, "validation"),
             (BatchOut, "serialization"), (SubmissionOut, "serialization")],
            ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            defs.get("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
