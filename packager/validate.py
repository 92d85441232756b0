"""``packager validate``: load the script with the backend's own loader, in a subprocess.

The subprocess runs the same ``turnout.scoring.load_scorer`` as Triton's stub (import, mode detection,
``init()``), in a fresh interpreter: a script that calls ``os._exit``, leaks threads or pollutes
``sys.modules`` cannot harm the packager, and a clean bill here means the entry will load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packager.sources import StagedPackage
from turnout.manifest import Manifest

_RESULT_MARK = "@@turnout-validate@@"


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    mode: str | None
    message: str
    log: str
    advice: str | None = None


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


def validate_package(package: StagedPackage, version: int = 1) -> ValidationResult:
    manifest = package.manifest(version)
    with tempfile.TemporaryDirectory(prefix="turnout-validate-") as tmp:
        manifest_file = Path(tmp) / "manifest.json"
        manifest_file.write_text(manifest.model_dump_json())
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "packager.validate", str(package.root), str(manifest_file), package.name],
                capture_output=True,
                text=True,
                timeout=manifest.init_timeout_seconds + 30,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return ValidationResult(False, None, "loading the script did not finish in time", output)
    log = completed.stdout + completed.stderr
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_MARK):
            result = json.loads(line[len(_RESULT_MARK):])
            log = "\n".join(line for line in log.splitlines() if not line.startswith(_RESULT_MARK))
            return ValidationResult(result["ok"], result.get("mode"), result["message"], log, result.get("advice"))
    return ValidationResult(
        False, None, f"the script ended the validating process (exit code {completed.returncode})", log
    )


def _child(package_root: Path, manifest_file: Path, entry: str) -> None:
    import logging

    from turnout.errors import TurnoutError
    from turnout.scoring import load_scorer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    manifest = Manifest.model_validate_json(manifest_file.read_text())
    try:
        scorer = load_scorer(manifest, package_root, entry)
        advice = batching_advice(scorer.mode, {name.split(".")[0] for name in sys.modules})
        result = {"ok": True, "mode": scorer.describe(), "message": f"loads as {scorer.describe()}", "advice": advice}
    except TurnoutError as exc:
        result = {"ok": False, "message": exc.message}
    sys.stdout.flush()
    print(_RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
