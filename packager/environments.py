"""Per-deployment Python environments: what a package declares, built with uv, cached by content.

A package's ``environment/`` folder (its ``requirements.txt`` or ``conda.yaml``, from the package, its
``model.yaml`` ``environment:``, or an Azure deployment's ``environment``) declares the Python packages its
script needs. :func:`prepare` turns that into a virtual environment in a cache shared by every entry with the
same spec; the entry links to it and its ``config.pbtxt`` names it in ``EXECUTION_ENV_PATH`` (Triton activates
it before the stub starts). Decisions (docs/environments.md):

* **Layered over the serving environment.** The environment's own site-packages come first on ``sys.path``; the
  serving environment's come after (a ``.pth`` hook). The resolver prefers the serving environment's versions,
  and a package resolved to the version the serving environment has is not installed again, nor are the
  dependencies only such packages need: torch and TensorFlow stay the serving environment's CPU builds
  (PyPI's torch is a several-GB CUDA build) and builds stay small. A resolution that would still install
  torch, TensorFlow, JAX or an ``nvidia-*`` package is refused.
* **One Python.** Triton's stub runs the serving Python; a spec pinning another (Azure's samples say
  ``python=3.8``) is resolved for the stub's Python, and the build says so.
* **numpy < 2**, always (the stub speaks the numpy 1 ABI); Turnout's slim scoring runtime is copied in.
* **Content-addressed, atomic.** The key hashes the resolved lock, the stub's Python, the runtime's
  fingerprint, the constraints and the serving environment's packages. uv builds a *relocatable* venv in a
  scratch folder beside the cache, and one rename puts it into place: an interrupted build is never used.
* **Reproducible.** The resolved lock goes into the package (``environment/requirements.lock``): a registered
  version, deployed again, installs exactly those pins without resolving.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from packager import scratch
from packager.spec import load_yaml
from turnout import runtime
from turnout.errors import DeploymentFailed, PackageError
from turnout.manifest import ENTRY_ENVIRONMENT

MARKER = ".turnout-env.json"
BUILD_LOG = "build.log"
LOCK_FILE = "requirements.lock"
IMAGE_FILE = "image.txt"  # an Azure environment's base image: recorded, not used
ENVIRONMENTS_ENV = "TURNOUT_ENVIRONMENTS_DIR"  # the gateway's setting too
SERVING_SITE_ENV = "TURNOUT_SERVING_SITE"  # where a node's serving site-packages are, if not where they were built
DEFAULT_TIMEOUT = 600.0
LAYER_FILE = "_turnout_serving_layer.pth"
# What Triton's stub can speak.
CONSTRAINTS = ("numpy<2",)
HEAVY = {"torch", "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "jax", "jaxlib", "triton",
         "cuda-toolkit", "cuda-bindings"}
# conda names whose PyPI name differs.
CONDA_TO_PYPI = {
    "pytorch": "torch", "pytorch-cpu": "torch", "py-xgboost": "xgboost", "py-lightgbm": "lightgbm",
    "matplotlib-base": "matplotlib", "opencv": "opencv-python-headless", "py-opencv": "opencv-python-headless",
    "tensorflow": "tensorflow-cpu", "tensorflow-base": "tensorflow-cpu", "pytables": "tables",
    "libopencv": "opencv-python-headless", "pyarrow-core": "pyarrow", "arrow-cpp": "pyarrow",
}
CONDA_TOOLS = {"python", "pip", "setuptools", "wheel"}
# Packages conda has and PyPI does not (system libraries, toolchains): refused by name.
CONDA_ONLY = {
    "cudatoolkit", "cudnn", "cuda", "nccl", "mkl", "mkl-service", "mkl_fft", "mkl_random", "intel-openmp",
    "libgcc-ng", "libstdcxx-ng", "libgomp", "_libgcc_mutex", "_openmp_mutex", "ld_impl_linux-64", "openssl",
    "ca-certificates", "libffi", "ncurses", "readline", "sqlite", "tk", "xz", "zlib", "blas", "libblas",
    "openblas", "libopenblas", "nodejs", "r-base", "gcc", "gxx", "gcc_linux-64", "gxx_linux-64", "cmake", "make",
    "cpuonly", "magma-cuda", "libiconv", "icu", "libuuid", "bzip2", "libzlib", "tzdata-conda",
}
# Azure's inference HTTP server (and what only it needs): Turnout's gateway and backend take its place.
REPLACED = {"azureml-defaults", "azureml-inference-server-http"}
# Azure's batch runtime (its data mounts, which Azure's docs tell every batch environment to install): Turnout's
# job runner reads the inputs itself.
BATCH_RUNTIME = {"azureml-dataset-runtime"}
_PIP_FILES = ("requirements.txt",)
_CONDA_SUFFIXES = (".yml", ".yaml")


def default_root() -> Path:
    """The packager's cache when none is given: ``$TURNOUT_ENVIRONMENTS_DIR``, else the gateway's default."""
    explicit = os.environ.get(ENVIRONMENTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    state = os.environ.get("TURNOUT_STATE_DIR", ".turnout/gateway")
    return Path(state).expanduser() / "environments"


@dataclass(frozen=True)
class EnvironmentSpec:
    """A package's declared environment, normalised: PEP 508 lines, sorted, and what was asked of Python."""

    requirements: tuple[str, ...]
    python: str | None = None  # the conda.yaml pin, if any
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    lock: str | None = None  # a resolved lock the package carries: installed as it is
    image: str | None = None

    @classmethod
    def of(cls, folder: Path) -> EnvironmentSpec | None:
        """The spec in a package's environment folder, or None (the package runs in the serving environment)."""
        if not folder.is_dir():
            return None
        files = sorted(p for p in folder.iterdir() if p.is_file() and (
            p.name in _PIP_FILES or p.suffix in _CONDA_SUFFIXES or (p.suffix == ".txt" and p.name != IMAGE_FILE)))
        if not files:
            return None
        requirements: list[str] = []
        python, notes = None, []
        for path in files:
            if path.suffix in _CONDA_SUFFIXES:
                found, pinned, more = _conda(path)
                requirements += found
                python = python or pinned
                notes += more
            else:
                requirements += _pip_lines(path.read_text(encoding="utf-8"), path.name)
        image = (folder / IMAGE_FILE).read_text(encoding="utf-8").strip() if (folder / IMAGE_FILE).is_file() else None
        if image:
            notes.append(f"base image {image} is recorded, not used: the model runs in a uv-built environment "
                         "layered over the Triton node's serving Python")
        lock = (folder / LOCK_FILE).read_text(encoding="utf-8") if (folder / LOCK_FILE).is_file() else None
        parsed = [_requirement(line, "the environment") for line in requirements]
        for requirement in parsed:
            if canonicalize_name(requirement.name) == "mlflow":
                requirement.name = "mlflow-skinny"
                notes.append("mlflow is installed as mlflow-skinny (the same version): scoring needs neither its "
                             "tracking server nor its UI")
        replaced = sorted({r.name for r in parsed if canonicalize_name(r.name) in REPLACED})
        if replaced:
            notes.append(f"{', '.join(replaced)} (Azure's inference HTTP server) is not installed: Turnout serves "
                         "the script in its place")
        runtime_only = sorted({r.name for r in parsed if canonicalize_name(r.name) in BATCH_RUNTIME})
        if runtime_only:
            notes.append(f"{', '.join(runtime_only)} (Azure's batch runtime) is not installed: Turnout's job runner "
                         "reads the inputs itself")
        normalised = sorted({str(r) for r in parsed if canonicalize_name(r.name) not in REPLACED | BATCH_RUNTIME})
        if not normalised and lock is None:  # nothing to install: the serving environment, as before
            return None
        return cls(tuple(normalised), python, tuple(p.name for p in files), tuple(notes), lock, image)

    def check(self) -> None:
        """Refuse what no build could serve (numpy 2)."""
        for line in self.requirements:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == "numpy" and _asks_numpy_2(requirement):
                raise PackageError(f"the environment asks for {line}: Triton's Python stub speaks numpy 1's ABI, so "
                                   "every environment has numpy < 2 (ask for numpy<2, or leave the version open)")

    def digest(self, serving: str) -> str:
        """The spec's identity before resolution (what Azure hashes an image by), for the resolution index."""
        document = {"requirements": self.requirements, "lock": self.lock, "python": _stub_python(),
                    "runtime": runtime.fingerprint(), "constraints": CONSTRAINTS, "serving": serving}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:20]


def _asks_numpy_2(requirement: Requirement) -> bool:
    """A lower bound (or a pin) at 2 or above: nothing numpy 1 can satisfy."""
    for clause in requirement.specifier:
        if clause.operator in (">=", ">", "==", "~=", "===") and clause.version.split(".")[0].isdigit() \
                and int(clause.version.split(".")[0]) >= 2:
            return True
    return False


def _stub_python() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def _pip_lines(text: str, where: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise PackageError(f"{where}: {line!r}: pip options are not supported in an environment file "
                               "(list the packages themselves; indexes come from the machine's uv/pip settings)")
        lines.append(line)
    return lines


def _requirement(line: str, where: str) -> Requirement:
    try:
        return Requirement(line)
    except InvalidRequirement as exc:
        raise PackageError(f"{where}: {line!r} is not a requirement: {exc}") from None


def _conda_requirement(text: str, where: str) -> str:
    """``numpy=1.21`` (conda: 1.21.*), ``numpy=1.21.2=py38h0`` (a build string), ``numpy>=1.2`` -> PEP 508."""
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", text.strip())
    if match is None:
        raise PackageError(f"{where}: {text!r} is not a package")
    name, rest = match.group(1), match.group(2).strip().replace(" ", "")
    pypi = CONDA_TO_PYPI.get(name.lower(), name)
    if not rest:
        return pypi
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=")[0]
        return f"{pypi}=={version}" if version.endswith("*") or version.count(".") >= 2 else f"{pypi}=={version}.*"
    if rest.startswith("==") and rest.count("=") > 2:  # name==1.2.3=build
        rest = "==" + rest[2:].split("=")[0]
    return f"{pypi}{rest}"


def _conda(path: Path) -> tuple[list[str], str | None, list[str]]:
    data = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("dependencies", []), list):
        raise PackageError(f"{path.name}: expected a conda environment file (a mapping with a 'dependencies' list)")
    found: list[str] = []
    python, notes = None, []
    for item in data.get("dependencies") or []:
        if isinstance(item, dict):
            found += _pip_lines("\n".join(str(x) for x in item.get("pip") or []), f"{path.name} (pip:)")
            continue
        text = str(item).strip()
        name = re.split(r"[=<>!~ ]", text.split("::")[-1], maxsplit=1)[0].strip().lower()
        text = text.split("::")[-1]  # conda-forge::numpy
        if name == "python":
            python = re.sub(r"^[=<>!~]+", "", text[len("python"):].strip()) or None
            continue
        if name in CONDA_TOOLS:
            continue
        if name in CONDA_ONLY or name.startswith("cuda-") or name.startswith("lib"):
            raise PackageError(f"{path.name}: {text!r} is a conda-only package (PyPI has no {name}); environments "
                               "are built from PyPI with uv: remove it (system libraries come with the node's image)")
        found.append(_conda_requirement(text, path.name))
    if data.get("channels"):
        notes.append(f"conda channels ({', '.join(map(str, data['channels']))}) are not used: packages come from PyPI")
    return found, python, notes


def serving_packages() -> dict[str, str]:
    """The serving environment's packages (canonical name -> public version), as the stub would see them."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonicalize_name(name) != "turnout":
            found[canonicalize_name(name)] = _public(dist.version)
    return found


def _fingerprint(serving: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(serving.items())).encode()).hexdigest()[:16]


def _public(version: str) -> str:
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise PackageError("uv is not installed: per-deployment environments are built with it "
                               "(pip install uv)") from None
        return found


@dataclass
class Built:
    """An environment ready in the cache."""

    path: Path
    key: str
    cached: bool
    seconds: float
    installed: list[str] = field(default_factory=list)
    layered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.path / BUILD_LOG

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


_KINDS = (
    ("no matching distribution", ("was not found in the package registry", "no matching distribution",
                                  "not found in the package registry", "there are no versions of",
                                  "there is no version of",
                                  "has no wheels", "no wheels with a matching")),
    ("resolution conflict", ("no solution found", "are incompatible", "unsatisfiable", "conflicting")),
    ("network", ("failed to fetch", "dns error", "could not connect", "connection refused", "timed out",
                 "network is unreachable", "error sending request")),
    # No wheel for the stub's Python, so uv built it from its sources (a pin from an older Python's era).
    ("source build failed", ("failed to build", "build backend returned an error")),
    ("import error", ("importerror", "modulenotfounderror", "error while loading shared")),
)


def classify(output: str) -> tuple[str, str]:
    """The kind of a failed build, and its first telling statement (what the message leads with). uv wraps
    long lines, so statements are read with their whitespace collapsed; a traceback gives its one line."""
    prefix = r"(?:error|cause|caused by|hint|warning):\s*"
    statements = [part.strip() for part in re.split(rf"\b{prefix}", " ".join(output.split()), flags=re.IGNORECASE)
                  if part.strip()]
    lines = [re.sub(rf"^{prefix}", "", line.strip(), flags=re.IGNORECASE) for line in output.splitlines() if line.strip()]
    for kind, markers in _KINDS:
        statement = next((text for text in statements if any(m in text.lower() for m in markers)), None)
        line = next((text for text in lines if any(m in text.lower() for m in markers)), None)
        if line is not None and (statement is None or "traceback" in statement.lower()):
            return kind, line[:400]
        if statement is not None:
            return kind, statement[:400]
    first = next((line for line in lines if "error" in line.lower()), statements[-1] if statements else "")
    return "build failure", first[:400]


class _Log:
    """The build log, written as the build goes (a killed build leaves what it did)."""

    def __init__(self, path: Path, progress: Callable[[str], None]) -> None:
        self.path = path
        self.progress = progress
        self.started = time.monotonic()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def say(self, text: str) -> None:
        stamped = f"[{time.monotonic() - self.started:6.1f} s] {text}"
        self._file.write(stamped + "\n")
        self._file.flush()
        self.progress(stamped)

    def write(self, text: str) -> None:
        self._file.write(text if text.endswith("\n") or not text else text + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # one build of a spec at a time; the second finds it built
        yield


def prepare(spec: EnvironmentSpec, root: Path, *, progress: Callable[[str], None] = lambda _: None,
            timeout: float = DEFAULT_TIMEOUT) -> Built:
    """The environment for ``spec`` under ``root``: found in the cache, or built now. Raises
    :class:`DeploymentFailed` (424) with the build log's tail, classified, when it cannot be built."""
    spec.check()
    started = time.monotonic()
    serving = serving_packages()
    digest = spec.digest(_fingerprint(serving))
    for folder in (root, root / ".specs", root / ".failed"):
        folder.mkdir(parents=True, exist_ok=True)
    scratch.sweep(root)
    with _locked(root / ".specs" / f"{digest}.lock"):
        index = root / ".specs" / f"{digest}.json"
        if index.is_file():
            key = json.loads(index.read_text(encoding="utf-8"))["key"]
            if (root / key / MARKER).is_file():
                return _cached(root / key, started, progress)
        building = scratch.staging(root)
        log = _Log(building / BUILD_LOG, progress)
        try:
            built = _build(spec, building, root, serving, log, time.monotonic() + timeout, timeout)
        except BaseException as exc:
            log.close()
            if (building / BUILD_LOG).is_file():
                shutil.copy2(building / BUILD_LOG, root / ".failed" / f"{digest}.log")
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, DeploymentFailed):
                exc.details["log"] = str(root / ".failed" / f"{digest}.log")
            raise
        log.close()
        index.write_text(json.dumps({"key": built.key, "requirements": spec.requirements}), encoding="utf-8")
        built.seconds = time.monotonic() - started
        return built


def _cached(path: Path, started: float, progress: Callable[[str], None]) -> Built:
    record = json.loads((path / MARKER).read_text(encoding="utf-8"))
    progress(f"environment {path.name}: cached ({len(record.get('installed', []))} packages of its own)")
    return Built(path, path.name, True, time.monotonic() - started, record.get("installed", []),
                 record.get("layered", []), record.get("notes", []))


def _serving_site() -> str:
    return sysconfig.get_paths()["purelib"]


def _build(spec: EnvironmentSpec, building: Path, root: Path, serving: dict[str, str], log: _Log,
           deadline: float, timeout: float) -> Built:
    uv = uv_binary()
    notes = list(spec.notes)
    here = _stub_python()
    if spec.python and not here.startswith(spec.python.rstrip(".*")):
        notes.append(f"the spec pins python={spec.python}; Triton's stub runs Python {here}, "
                     f"so the environment is built for Python {here}")
    for note in notes:
        log.say(f"note: {note}")

    def run(step: str, *args: str) -> str:
        began = time.monotonic()
        log.write(f"$ {' '.join(args)}")
        left = deadline - time.monotonic()
        if left <= 0:
            log.say(f"{step}: not started, the build's timeout ({timeout:g} s) has passed")
            raise _failure(spec, "timeout", f"the build did not finish within its timeout ({timeout:g} s)", log)
        try:
            done = subprocess.run(args, capture_output=True, text=True, encoding="utf-8", errors="replace",
                                  timeout=left, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            log.say(f"{step}: timed out (the build's timeout is {timeout:g} s)")
            raise _failure(spec, "timeout", f"the build did not finish within its timeout ({timeout:g} s)",
                           log) from None
        log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            log.say(f"{step}: failed (exit {done.returncode}) after {time.monotonic() - began:.1f} s")
            kind, first = classify(done.stderr + "\n" + done.stdout)
            raise _failure(spec, kind, first, log)
        return done.stdout

    python = building / "bin" / "python"
    log.say(f"create: a venv for Python {here}")
    run("create", uv, "venv", "--quiet", "--allow-existing", "--relocatable", "--python", sys.executable, str(building))
    site = building / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    # The serving environment after ours: a spec's own versions win, what it does not name comes from there.
    (site / LAYER_FILE).write_text(
        f"import os, site; site.addsitedir(os.environ.get({SERVING_SITE_ENV!r}) or {_serving_site()!r})\n",
        encoding="utf-8")
    lock_path = building / LOCK_FILE
    if spec.lock is not None:
        lock_path.write_text(spec.lock, encoding="utf-8")
        log.say("resolve: the package carries its lock (requirements.lock): installing exactly it")
    else:
        began = time.monotonic()
        log.say(f"resolve: {len(spec.requirements)} requirement(s): {', '.join(spec.requirements)}")
        (building / "requirements.in").write_text("\n".join(spec.requirements) + "\n", encoding="utf-8")
        pins = [f"{name}=={serving[name]}" for name in sorted(serving) if name in HEAVY]
        (building / "constraints.txt").write_text("\n".join([*CONSTRAINTS, *pins]) + "\n", encoding="utf-8")
        # An existing output file is uv's list of preferred versions: the serving environment's, where they fit.
        lock_path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(serving.items())), encoding="utf-8")
        run("resolve", uv, "pip", "compile", str(building / "requirements.in"), "-c", str(building / "constraints.txt"),
            "--python", str(python), "--annotate", "--no-header", "--quiet", "-o", str(lock_path))
        # The same resolution reads the same wherever it was built (the lock goes into the registered package).
        lock_path.write_text(lock_path.read_text(encoding="utf-8").replace(f"{building}/", ""), encoding="utf-8")
        log.say(f"resolve: done in {time.monotonic() - began:.1f} s")
    pinned, parents = read_lock(lock_path.read_text(encoding="utf-8"))
    key = _key(pinned, serving)
    if (root / key / MARKER).is_file():  # another spec resolved to the same environment
        shutil.rmtree(building, ignore_errors=True)
        return _cached(root / key, log.started, log.progress)
    direct: set[str] = {canonicalize_name(Requirement(line).name) for line in spec.requirements}
    layered = _layered(pinned, parents, serving, direct)
    install = {name: version for name, version in pinned.items() if name not in layered}
    heavy = sorted(name for name in install if name in HEAVY or name.startswith("nvidia-"))
    if heavy:
        ask = ", ".join(f"{n}=={serving[n]}" for n in heavy if n in serving)
        log.say(f"refused: the resolution would install {', '.join(heavy)} from PyPI")
        raise _failure(spec, "heavy package", f"resolving it would install {', '.join(heavy)} from PyPI (CUDA builds "
                       "of several GB): " + (f"ask for the serving environment's version ({ask})" if ask else
                                             "install it into the serving environment instead (pip install torch==2.13.0)"),
                       log)
    log.say(f"resolved {len(pinned)} package(s): {len(install)} to install, {len(layered)} from the serving "
            "environment")
    (building / "install.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(install.items())), encoding="utf-8")
    if install:
        began = time.monotonic()
        log.say(f"install: downloading and installing {', '.join(f'{n}=={v}' for n, v in sorted(install.items()))}")
        run("install", uv, "pip", "install", "--python", str(python), "--no-deps", "--quiet", "-r",
            str(building / "install.txt"))
        log.say(f"install: done in {time.monotonic() - began:.1f} s")
    runtime.install(site)
    log.say(f"runtime: Turnout's scoring runtime {runtime.fingerprint()} copied in")
    check = run("check", str(python), "-c", "import numpy, sys, turnout.scoring; assert numpy.__version__ < '2'; "
                "print(numpy.__version__)")
    log.say(f"check: the environment imports Turnout's runtime (numpy {check.strip()})")
    built = Built(root / key, key, False, 0.0, sorted(f"{n}=={v}" for n, v in install.items()), sorted(layered), notes)
    (building / MARKER).write_text(json.dumps({
        "key": key, "requirements": spec.requirements, "sources": spec.sources, "installed": built.installed,
        "layered": built.layered, "notes": notes, "python": here, "runtime": runtime.fingerprint(),
        "seconds": round(time.monotonic() - log.started, 2),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2), encoding="utf-8")
    log.say(f"ready: environment {key} in {time.monotonic() - log.started:.1f} s")
    log.close()
    try:
        os.rename(building, root / key)
    except OSError:  # built meanwhile under another spec: the same content
        shutil.rmtree(building, ignore_errors=True)
    return built


def _key(pinned: dict[str, str], serving: dict[str, str]) -> str:
    document = {"lock": sorted(pinned.items()), "python": _stub_python(), "runtime": runtime.fingerprint(),
                "constraints": CONSTRAINTS, "serving": _fingerprint(serving)}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:20]


def _layered(pinned: dict[str, str], parents: dict[str, set[str]], serving: dict[str, str], direct: set[str]) -> set[str]:
    """What the serving environment provides: packages it has at the resolved version, and what only they need
    (torch's CUDA libraries, which its CPU build does without)."""
    layered = {name for name, version in pinned.items() if serving.get(name) == _public(version)}
    changed = True
    while changed:
        changed = False
        for name, via in parents.items():
            if name in layered or name in direct or name not in pinned:
                continue
            if via and via <= layered:
                layered.add(name)
                changed = True
    return layered


def read_lock(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """``uv pip compile --annotate`` output: pinned versions, and who needs each (``# via`` lines)."""
    pinned: dict[str, str] = {}
    parents: dict[str, set[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            name, _, version = line.partition("==")
            current = canonicalize_name(name.split("[")[0].strip())
            pinned[current] = version.split(";")[0].strip()
            parents[current] = set()
            continue
        if current is None:
            continue
        via = line.lstrip("#").strip()
        via = via[4:].strip() if via.startswith("via ") else ("" if via == "via" else via)
        if via.startswith("-r") or via.startswith("-c"):
            parents[current].add("<direct>" if via.startswith("-r") else "<constraint>")
        elif via:
            parents[current].add(canonicalize_name(via.split()[0]))
    for needed_by in parents.values():
        needed_by.discard("<constraint>")
    return pinned, parents


def _heavy_clashes(spec: EnvironmentSpec) -> list[str]:
    """The spec's pins of torch/TensorFlow/JAX that exclude the serving environment's version (which every
    environment is constrained to)."""
    serving = serving_packages()
    clashes = []
    for line in spec.requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in HEAVY and name in serving and not requirement.specifier.contains(serving[name], prereleases=True):
            clashes.append(f"{line} (this node serves {name} {serving[name]})")
    return clashes


def _failure(spec: EnvironmentSpec, kind: str, first: str, log: _Log) -> DeploymentFailed:
    clashes = _heavy_clashes(spec) if kind == "resolution conflict" else []
    if clashes:
        return DeploymentFailed(
            f"its environment could not be built (heavy package): {'; '.join(clashes)}: torch, TensorFlow and JAX "
            "come from the serving environment, never from a deployment's own (each would be gigabytes): leave "
            "their versions open or pin the served one", details={"kind": "heavy package",
                                                                  "requirements": list(spec.requirements),
                                                                  "log_tail": log.tail()})
    message = f"its environment could not be built ({kind}): {first}"
    here = _stub_python()
    if kind == "source build failed":
        message += (f": it has no wheel for Python {here[:4]}, so it was built from its sources, and that failed; "
                    "pin a version that publishes wheels for it")
    if spec.python and not here.startswith(spec.python.rstrip(".*")) and kind in (
            "no matching distribution", "resolution conflict", "source build failed"):
        message += (f" (the spec pins python={spec.python}, but environments are built for the stub's Python "
                    f"{here}: pin versions that support Python {here[:4]})")
    return DeploymentFailed(message, details={"kind": kind, "requirements": list(spec.requirements),
                                              "log_tail": log.tail()})


def built_from_lock(lock: str, root: Path) -> Path | None:
    """The cached environment a lock resolves to, if it is built (for ``packager show``)."""
    pinned, _ = read_lock(lock)
    found = root / _key(pinned, serving_packages())
    return found if (found / MARKER).is_file() else None


def entries(root: Path) -> list[dict[str, Any]]:
    """The cache's environments, with their size on disk."""
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not (path / MARKER).is_file():
            continue
        record = json.loads((path / MARKER).read_text(encoding="utf-8"))
        size = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        found.append({**record, "path": str(path), "bytes": size})
    return found


def used_by(repositories: list[Path]) -> dict[str, list[str]]:
    """Environment key -> the entries (in these repositories) that link to it."""
    users: dict[str, list[str]] = {}
    for repository in repositories:
        for entry in sorted(repository.iterdir()) if repository.is_dir() else []:
            target = entry / ENTRY_ENVIRONMENT
            if target.is_symlink():
                users.setdefault(Path(os.readlink(target)).name, []).append(f"{repository}/{entry.name}")
    return users


def prune(root: Path, repositories: list[Path]) -> list[dict[str, Any]]:
    """Remove the environments no entry in ``repositories`` links to; returns what was removed."""
    users = used_by(repositories)
    removed = []
    for record in entries(root):
        if record["key"] not in users:
            shutil.rmtree(record["path"])
            removed.append(record)
    for index in (root / ".specs").glob("*.json") if (root / ".specs").is_dir() else []:
        if not (root / json.loads(index.read_text(encoding="utf-8"))["key"]).is_dir():
            index.unlink()
    return removed

