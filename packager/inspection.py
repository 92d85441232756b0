"""Inspect a staged package: load its script with the backend's own loader, in one child process, and
report how it loads (its scoring mode), hints, and the inference-schema of its ``run()`` if decorated.

The child runs the same ``turnout.scoring.load_scorer`` as Triton's stub (import, mode detection,
``init()``), in a fresh interpreter: a script that calls ``os._exit``, leaks threads or pollutes
``sys.modules`` cannot harm the packager or the gateway, and a clean bill here means the entry will load.

Before any of that, :func:`check_entry_points` reads the script without running it: a script that defines
no entry point is refused at once, naming what is missing.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager import scratch
from packager.inspect_child import RESULT_MARK
from packager.package import StagedPackage
from turnout.errors import PackageError
from turnout.manifest import CODE_DIR, ScoringKind

_HOOKS = ("preprocess", "predict", "postprocess")


@dataclass(frozen=True)
class Inspection:
    ok: bool
    mode: str | None
    message: str
    log: str
    advice: str | None = None
    schemas: dict[str, Any] = field(default_factory=dict)  # {"input", "output"} from inference-schema,
    # or {"error": why} when run() is decorated but its schema could not be read


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
            if any(alias.name == "*" for alias in node.names):
                names.add("*")
        elif isinstance(node, (ast.If, ast.Try)):  # definitions under `if`/`try` at the top level count too
            names |= _top_level_names(ast.Module(body=[*node.body, *getattr(node, "orelse", [])], type_ignores=[]))
    return names


def check_entry_points(package: StagedPackage) -> None:
    """Refuse a script with no entry point (read, not run: a star import or a syntax error is left to
    the loader, which names them)."""
    script = package.root / CODE_DIR / package.spec.scoring_script
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), str(script))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    names = _top_level_names(tree)
    if "*" in names or "run" in names:
        return
    if package.spec.kind is ScoringKind.batch:
        raise PackageError(f"{package.spec.scoring_script}: a batch scoring script must define run(mini_batch) "
                           "(and optionally init()); it defines none")
    if not names & set(_HOOKS):
        defined = sorted(n for n in names if not n.startswith("_"))[:8]
        raise PackageError(
            f"{package.spec.scoring_script} defines no entry point: define init() and run(raw_data) (Azure "
            "style), or any of preprocess(payload), predict(batch), postprocess(output) (hooks)"
            + (f"; it defines {', '.join(defined)}" if defined else "")
        )


def inspect_package(package: StagedPackage, version: int = 1, python: Path | None = None) -> Inspection:
    """Load the script in a child process: the serving Python, or ``python`` (its own environment's)."""
    check_entry_points(package)
    manifest = package.manifest(version)
    with scratch.temporary("inspect") as tmp:
        manifest_file = Path(tmp) / "manifest.json"
        manifest_file.write_text(manifest.to_json(), encoding="utf-8")
        try:
            completed = subprocess.run(
                [str(python or sys.executable), "-m", "packager.inspect_child", str(package.root.resolve()),
                 str(manifest_file),
                 package.name],
                capture_output=True, text=True, encoding="utf-8", errors="replace",
                timeout=manifest.init_timeout_seconds + 30, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return Inspection(False, None, "loading the script did not finish in time", output)
    log = completed.stdout + completed.stderr
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            log = "\n".join(line for line in log.splitlines() if not line.startswith(RESULT_MARK))
            return Inspection(result["ok"], result.get("mode"), result["message"], log, result.get("advice"),
                              result.get("schemas") or {})
    return Inspection(False, None, f"the script ended the inspecting process (exit code {completed.returncode})", log)
