"""OpenAPI documents for scoring URLs, as Azure ML builds its swagger.json: from ``run()``'s
inference-schema decorators when it has them (read by the inspection, packager/inspection.py), else from
the package's declared signature, else from its sample request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from turnout.manifest import CODE_DIR, Manifest


def _sample(version_dir: Path, manifest: Manifest) -> Any:
    if manifest.sample_request is None:
        return None
    try:
        return json.loads((version_dir / CODE_DIR / manifest.sample_request).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_document(title: str, path: str, version_dir: Path, schemas: dict[str, Any]) -> dict[str, Any]:
    manifest = Manifest.read(version_dir)
    request_schema: dict[str, Any] = schemas.get("input") or {"type": "object"}
    response_schema: dict[str, Any] = schemas.get("output") or {}
    if not schemas.get("input") and manifest.signature:
        request_schema = dict(manifest.signature.get("inputs", request_schema))
        response_schema = dict(manifest.signature.get("outputs", response_schema))
    description = manifest.description
    if schemas.get("error"):
        description = (f"{description}\n\n" if description else "") + (
            f"Note: run()'s inference-schema decorators could not be read ({schemas['error']}); this document "
            "falls back to the package's signature or sample request.")
    sample = _sample(version_dir, manifest)
    if sample is not None and "example" not in request_schema:
        request_schema = {**request_schema, "example": sample}
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}, "request_id": {"type": "string"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": str(manifest.version), "description": description,
                 **({"x-turnout-schema-error": schemas["error"]} if schemas.get("error") else {})},
        "paths": {path: {"post": {
            "summary": f"Score with {manifest.name}:{manifest.version}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}},
            "responses": {
                "200": {"description": "The model's answer",
                        "content": {"application/json": {"schema": response_schema}}},
                "400": {"description": "Bad input", "content": {"application/json": {"schema": error}}},
                "401": {"description": "Missing or invalid credential"},
                "500": {"description": "The scoring script failed"},
            },
            "security": [{"bearer": []}],
        }}},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
