"""Load a scoring script by path and pick its mode, once. The backend's ``initialize()`` and
the packager's inspection (packager/inspection.py) both come here, so "it validates" means "it will load".

Each script is imported under its own module name (two entries never collide). This runs in a process
that serves this one script (Triton's stub, or the validator's subprocess), which is why the code folder
stays on ``sys.path`` and becomes the working directory: the script's lazy imports and relative paths work
for its whole life, as on Azure.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from turnout.errors import ScriptLoadError, TurnoutError
from turnout.manifest import CODE_DIR, ENVIRONMENT_DIR, MODELS_DIR, Manifest, ScoringKind
from turnout.scoring.azure import AzureOnlineScorer
from turnout.scoring.base import Scorer
from turnout.scoring.batch import BatchScorer
from turnout.scoring.guard import call_user
from turnout.scoring.hooks import HooksScorer

log = logging.getLogger("turnout.scoring")

_HOOKS = ("preprocess", "predict", "postprocess")
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)


def detect_scorer(module: ModuleType, script: str, kind: ScoringKind, timeout: float) -> Scorer:
    """The scoring mode follows from what the script defines (and, for batch, from the manifest)."""
    has_run = callable(getattr(module, "run", None))
    if kind is ScoringKind.batch:
        if not has_run:
            raise ScriptLoadError(f"{script}: a batch scoring script must define run(mini_batch)")
        return BatchScorer(module, script, timeout)
    if has_run:
        return AzureOnlineScorer(module, script, timeout)
    if any(callable(getattr(module, hook, None)) for hook in _HOOKS):
        return HooksScorer(module, script, timeout)
    raise ScriptLoadError(
        f"{script}: defines neither run() (Azure style) nor any of preprocess()/predict()/postprocess() (hooks)"
    )


def _limit_threads(threads: int) -> None:
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)


def _limit_framework_threads(threads: int) -> None:
    """Frameworks the script imported read thread counts at first use, which is init(): set them now.
    Two instances on two cores each running a default-sized pool fight each other (14x slower)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only settable before torch's first parallel work
            pass
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except (RuntimeError, AttributeError):
            pass
    ort = sys.modules.get("onnxruntime")
    if ort is not None and not getattr(ort.InferenceSession, "_turnout_threads", None):
        _default_ort_threads(ort, threads)


def _default_ort_threads(ort: Any, threads: int) -> None:
    """onnxruntime ignores OMP_NUM_THREADS; sessions created without options get ``threads``."""
    original = ort.InferenceSession

    class InferenceSession(original):  # type: ignore[misc, valid-type]
        _turnout_threads = threads

        def __init__(self, path_or_bytes: object, sess_options: Any = None, *args: object, **kwargs: object):
            if sess_options is None:
                sess_options = ort.SessionOptions()
                sess_options.intra_op_num_threads = threads
                sess_options.inter_op_num_threads = threads
            super().__init__(path_or_bytes, sess_options, *args, **kwargs)

    ort.InferenceSession = InferenceSession


def import_script(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# Import names whose distribution is called otherwise (what a requirements or conda file lists).
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml",
                  "skimage": "scikit-image", "bs4": "beautifulsoup4", "google.protobuf": "protobuf"}


def _declared_hint(cause: BaseException, environment_dir: Path) -> str:
    """For a module the package's own requirements or conda file declares: say so, and why it is missing."""
    if not isinstance(cause, ModuleNotFoundError) or not cause.name or not environment_dir.is_dir():
        return ""
    top = cause.name.split(".")[0]
    wanted = {top.lower(), top.lower().replace("_", "-"), _DISTRIBUTIONS.get(top, top).lower()}
    for declared in sorted(environment_dir.iterdir()):
        try:
            text = declared.read_text(encoding="utf-8", errors="replace").lower()
        except OSError:
            continue
        for name in sorted(wanted):
            if re.search(rf"(^|[\s'\"-]){re.escape(name)}($|[\s=<>!~;,\['\"])", text, re.MULTILINE):
                return (f"; the package's {declared.name} lists {name}, but the script runs in the serving "
                        "environment, which lacks it (per-deployment environments are not built yet): install "
                        "it there, or vendor it into the code folder")
    return ""


def _phase(fn: object, *args: object, script: Path, phase: str, timeout: float,
           environment_dir: Path | None = None) -> object:
    """Run the import or init() of a script; any failure becomes a ScriptLoadError naming file and phase."""
    try:
        return call_user(fn, *args, timeout=timeout, what=f"{phase} of {script}")  # type: ignore[arg-type]
    except TurnoutError as exc:
        cause = exc.__cause__ or exc
        log.error("%s failed during %s", script, phase, exc_info=cause)
        hint = _declared_hint(cause, environment_dir) if environment_dir is not None else ""
        raise ScriptLoadError(f"{script}: {phase} failed: {type(cause).__name__}: {cause}{hint}") from cause


def prepare_environment(manifest: Manifest, version_dir: Path) -> Path:
    """Set the process up as the script expects (Azure's variables, thread limits, its folder on the
    path and as working directory); return the script's path."""
    code_dir = version_dir / CODE_DIR
    script = code_dir / manifest.scoring_script
    if not script.is_file():
        raise ScriptLoadError(f"{script}: scoring script not found")
    os.environ["AZUREML_MODEL_DIR"] = str(version_dir / MODELS_DIR)
    os.environ["AML_APP_ROOT"] = str(code_dir)
    os.environ["AZUREML_ENTRY_SCRIPT"] = manifest.scoring_script
    _limit_threads(manifest.threads)
    os.environ.update(manifest.environment_variables)
    for folder in {script.parent, code_dir}:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    os.chdir(code_dir)
    return script


def import_user_script(manifest: Manifest, version_dir: Path, entry: str) -> tuple[Path, ModuleType]:
    script = prepare_environment(manifest, version_dir)
    digest = hashlib.sha1(f"{entry}:{script}".encode()).hexdigest()[:10]
    module_name = f"turnout_script_{''.join(c if c.isalnum() else '_' for c in entry)}_{digest}"
    module = cast(ModuleType, _phase(import_script, script, module_name, script=script, phase="import",
                                     timeout=manifest.init_timeout_seconds, environment_dir=version_dir / ENVIRONMENT_DIR))
    return script, module


def load_scorer(manifest: Manifest, version_dir: Path, entry: str) -> Scorer:
    """Prepare the environment, import the script, detect its mode and call its ``init()``."""
    script, module = import_user_script(manifest, version_dir, entry)
    scorer = detect_scorer(module, manifest.scoring_script, manifest.kind, manifest.timeout_seconds)
    _limit_framework_threads(manifest.threads)
    init = getattr(module, "init", None)
    if callable(init):
        _phase(init, script=script, phase="init()", timeout=manifest.init_timeout_seconds,
               environment_dir=Path(os.environ["AZUREML_MODEL_DIR"]).parent / ENVIRONMENT_DIR)
    log.info("%s: loaded %s as %s", entry, manifest.scoring_script, scorer.describe())
    return scorer
