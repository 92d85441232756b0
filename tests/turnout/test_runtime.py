"""The slim scoring runtime runs on its own, on every Python the stub may have (3.10, 3.11, 3.12): a
fresh environment with only its requirements, the runtime copied in by ``turnout.runtime.install``, and
the backend's own model.py driven through a stand-in for Triton's ``triton_python_backend_utils``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from packager.build import build_entry
from packager.sources import resolve_source
from tests.conftest import REPO_ROOT, PackageFactory
from turnout import runtime

PYENV = Path.home() / ".pyenv" / "versions"
UV = Path(sys.executable).parent / "uv"

HOOKS_SCORE = """
    import numpy as np

    def preprocess(payload):
        return np.asarray(payload["rows"], dtype=np.float32)

    def predict(batch):
        return batch.sum(axis=1)

    def postprocess(output):
        return {"sums": output.tolist(), "name": "modèle"}
"""

# Drives backends/python_scoring/model.py as Triton's stub would: initialize(), then one execute() of two
# requests (a dynamic batch), one of them bad. Prints what came back, as JSON.
DRIVER = """
import json, sys, types
import numpy as np

pb = types.ModuleType("triton_python_backend_utils")
class Tensor:
    def __init__(self, name, array): self.name, self.array = name, array
    def as_numpy(self): return self.array
class InferenceResponse:
    def __init__(self, output_tensors=None, error=None): self.output_tensors, self.error = output_tensors, error
class TritonError:
    INVALID_ARG, NOT_FOUND, UNAVAILABLE = 3, 5, 14
    def __init__(self, message, code=None): self.message, self.code = message, code
class TritonModelException(Exception):
    pass
class Request:
    def __init__(self, tensors): self.tensors = tensors
pb.Tensor, pb.InferenceResponse, pb.TritonError, pb.TritonModelException = Tensor, InferenceResponse, TritonError, TritonModelException
pb.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
sys.modules["triton_python_backend_utils"] = pb

backend_dir, entry_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, backend_dir)
import model
from turnout import wire
assert "pydantic" not in sys.modules and "gateway" not in sys.modules

def request(body):
    meta = wire.encode_request_meta("POST", "", {"Content-Type": "application/json"})
    return Request({"BODY": Tensor("BODY", np.array([[body]], dtype=object)),
                    "META": Tensor("META", np.array([[meta]], dtype=object))})

backend = model.TritonPythonModel()
backend.initialize({"model_name": "slim", "model_repository": entry_dir, "model_version": "1"})
answers = []
for response in backend.execute([request(b'{"rows": [[1, 2], [3, 4]]}'), request(b"not json")]):
    body, meta = (t.as_numpy()[0][0] for t in response.output_tensors)
    answer = wire.decode_answer(body, meta)
    answers.append({"status": answer.status, "body": json.loads(answer.body)} if isinstance(answer, wire.ScoringResult)
                   else {"error": answer.code})
print(json.dumps({"python": sys.version.split()[0], "answers": answers}))
"""


def _interpreter(version: str) -> Path | None:
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return Path(sys.executable)
    candidates = sorted(PYENV.glob(f"{version}.*/bin/python{version}")) or [Path(p) for p in filter(None, [shutil.which(f"python{version}")])]
    return candidates[-1] if candidates else None


def test_the_runtime_is_a_closed_set_of_files() -> None:
    files = {p.as_posix() for p in runtime.files()}
    assert {"wire.py", "manifest.py", "errors.py", "scoring/loader.py", "scoring/hooks.py"} <= files
    assert not any(f.startswith("triton/") for f in files)
    assert len(runtime.fingerprint()) == 16


@pytest.mark.integration
@pytest.mark.parametrize("version", runtime.PYTHONS)
def test_the_backend_runs_on_the_slim_runtime_alone(version: str, tmp_path: Path, make_package: PackageFactory) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (pyenv install {version} to run this check)")
    env_dir = tmp_path / "env"
    subprocess.run([str(UV), "venv", "-q", "-p", str(python), str(env_dir)], check=True)
    subprocess.run([str(UV), "pip", "install", "-q", "-p", str(env_dir / "bin" / "python"), *runtime.REQUIREMENTS],
                   check=True)
    site = Path(subprocess.run([str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    runtime.install(site)
    assert (site / "turnout" / "RUNTIME").read_text().strip() == runtime.fingerprint()

    with resolve_source(str(make_package(HOOKS_SCORE, model_yaml={"description": "un modèle à accents"}))) as package:
        built = build_entry(package, tmp_path / "repository", entry="slim")
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    completed = subprocess.run(
        [str(env_dir / "bin" / "python"), str(tmp_path / "driver.py"), str(REPO_ROOT / "backends" / "python_scoring"),
         str(built.path)],
        capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["python"].startswith(version)
    assert result["answers"] == [{"status": 200, "body": {"sums": [3.0, 7.0], "name": "modèle"}},
                                 {"error": "bad_input"}]
