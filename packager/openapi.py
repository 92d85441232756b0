"""OpenAPI documents for scoring URLs, as Azure ML builds its swagger.json: from ``run()``'s
inference-schema decorators when it has them, else from the package's declared signature, else from its
sample request. The script is imported (never initialised) in a subprocess to read its decorators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from turnout.manifest import CODE_DIR, MANIFEST_FILE, Manifest

_MARK = "@@turnout-schema@@"


def script_schemas(version_dir: Path, timeout: float = 120.0) -> dict[str, Any]:
    """{"input": ..., "output": ...} from the script's inference-schema decorators ({} when none)."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "packager.openapi", str(version_dir)],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {}
    for line in completed.stdout.splitlines():
        if line.startswith(_MARK):
            return dict(json.loads(line[len(_MARK):]))
    return {}


def _sample(version_dir: Path, manifest: Manifest) -> Any:
    if manifest.sample_request is None:
        return None
    try:
        return json.loads((version_dir / CODE_DIR / manifest.sample_request).read_text())
    except (OSError, ValueError):
        return None


def build_document(title: str, path: str, version_dir: Path, schemas: dict[str, Any]) -> dict[str, Any]:
    manifest = Manifest.read(version_dir)
    request_schema: dict[str, Any] = schemas.get("input") or {"type": "object"}
    response_schema: dict[str, Any] = schemas.get("output") or {}
    if not schemas.get("input") and manifest.signature:
        request_schema = dict(manifest.signature.get("inputs", request_schema))  # type: ignore[arg-type]
        response_schema = dict(manifest.signature.get("outputs", response_schema))  # type: ignore[arg-type]
    sample = _sample(version_dir, manifest)
    if sample is not None and "example" not in request_schema:
        request_schema = {**request_schema, "example": sample}
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}, "request_id": {"type": "string"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": str(manifest.version), "description": manifest.description},
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


def _child(version_dir: Path) -> None:
    from inference_schema.schema_util import get_input_schema, get_output_schema, is_schema_decorated

    from turnout.errors import TurnoutError
    from turnout.scoring.loader import import_user_script

    result: dict[str, Any] = {}
    try:
        manifest = Manifest.model_validate_json((version_dir / MANIFEST_FILE).read_text())
        _, module = import_user_script(manifest, version_dir, "schema")
        run = getattr(module, "run", None)
        if callable(run) and is_schema_decorated(run):
            result = {"input": get_input_schema(run), "output": get_output_schema(run)}
    except (TurnoutError, OSError, ValueError):
        pass
    print(_MARK + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
