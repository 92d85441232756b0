"""The inspecting child: ``python -m packager.inspect_child PACKAGE MANIFEST ENTRY`` loads a staged package's
script with the backend's own loader and prints one result line.

It runs in the serving Python or in the deployment's own environment, so it imports nothing but the slim
scoring runtime and the standard library (a deployment may pin any pydantic, or none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from turnout.manifest import Manifest

RESULT_MARK = "@@turnout-inspect@@"


# Libraries that score a batch of rows in about the time of one row: a run() script using one of them
# leaves most of its throughput unused, because run() is called once per request.
_BATCHING_LIBRARIES = {
    "torch": "torch", "tensorflow": "TensorFlow", "keras": "Keras", "onnxruntime": "onnxruntime",
    "sklearn": "scikit-learn", "xgboost": "XGBoost", "lightgbm": "LightGBM", "catboost": "CatBoost",
}


def batching_advice(mode: str, loaded_modules: set[str]) -> str | None:
    """What a run() script would gain from hooks, when the libraries it loaded say it would."""
    if mode != "azure-online":
        return None
    found = sorted({label for module, label in _BATCHING_LIBRARIES.items() if module in loaded_modules})
    if not found:
        return None
    return (
        f"run() is called once per request, so Triton cannot hand this script a batch, yet it uses "
        f"{', '.join(found)}, which scores many rows at little more than the cost of one. For batched "
        "throughput, split run() into preprocess() (per request), predict() (once per batch) and "
        "postprocess() (per request): README, 'Scoring modes'. Until then, throughput grows only with "
        "instances (instance_count in Azure's YAML, instance.count in model.yaml)."
    )


def _schemas(module: Any) -> dict[str, Any]:
    run = getattr(module, "run", None)
    try:
        from inference_schema.schema_util import get_input_schema, get_output_schema, is_schema_decorated
    except ImportError:
        return {}
    if callable(run) and is_schema_decorated(run):
        return {"input": get_input_schema(run), "output": get_output_schema(run)}
    return {}


def _child(package_root: Path, manifest_file: Path, entry: str) -> None:
    import logging

    from turnout.errors import TurnoutError
    from turnout.scoring import load_scorer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    manifest = Manifest.from_dict(json.loads(manifest_file.read_text(encoding="utf-8")), str(manifest_file))
    result: dict[str, Any]
    try:
        scorer = load_scorer(manifest, package_root, entry)
        advice = batching_advice(scorer.mode, {name.split(".")[0] for name in sys.modules})
        result = {"ok": True, "mode": scorer.describe(), "message": f"loads as {scorer.describe()}", "advice": advice}
        try:
            result["schemas"] = _schemas(scorer.module)
        except Exception as exc:  # a schema that cannot be read costs the OpenAPI types, never the load
            logging.getLogger("turnout.inspect").warning("the inference-schema of run() cannot be read: %s", exc)
            result["schemas"] = {"error": f"{type(exc).__name__}: {exc}"}
    except TurnoutError as exc:
        result = {"ok": False, "message": exc.message}
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
