"""``manifest.json``: what the packager tells the backend (and the gateway) about one built entry.

The packager writes it into ``<entry>/<version>/``; the backend reads it at ``initialize()``, the gateway
when it places the entry (its serving settings: instances, batching). Per-model files are data: no code
is generated per model beyond ``config.pbtxt``.

Part of the slim scoring runtime (:mod:`turnout.runtime`): a dataclass checked by hand rather than a
pydantic model, so a deployment's own environment may pin any pydantic it likes, or none.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from turnout.errors import PackageError

MANIFEST_FILE = "manifest.json"
CODE_DIR = "code"
# AZUREML_MODEL_DIR: holds the registered model folder under its own name, or a single registered file.
MODELS_DIR = "azureml-models"
# The package's own requirements.txt / conda.yaml, recorded beside code/.
ENVIRONMENT_DIR = "environment"
# <entry>/python-env: a relative link to the entry's own environment, when it has one (EXECUTION_ENV_PATH).
ENTRY_ENVIRONMENT = "python-env"


class ScoringKind(str, Enum):
    """What the script serves. ``online`` scripts are told apart (Azure run() vs hooks) when loaded;
    ``batch`` must be declared because ``run(mini_batch)`` and ``run(raw_data)`` look alike."""

    online = "online"
    batch = "batch"

    def __str__(self) -> str:
        return self.value


class InstanceKind(str, Enum):
    cpu = "cpu"
    gpu = "gpu"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Manifest:
    name: str  # the gateway serves it at /models/{name}
    version: int  # /models/{name}/versions/{version}
    content_hash: str  # sha256 over the package's files, as registered
    scoring_script: str  # path of the scoring script inside code/
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    model_name: str | None = None  # name of the model folder or file under azureml-models/, if any
    kind: ScoringKind = ScoringKind.online
    timeout_seconds: float = 60.0  # bound on one call into the script
    init_timeout_seconds: float = 600.0  # bound on import + init()
    threads: int = 1  # torch/onnxruntime/TF/BLAS threads per instance
    environment_variables: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] | None = None  # optional typed signature (OpenAPI)
    sample_request: str | None = None  # sample-request.json under code/, if any
    source: str = ""  # where the package came from, for humans
    # Serving settings, the one source of config.pbtxt and of the gateway's per-node configs.
    instance_kind: InstanceKind = InstanceKind.cpu
    instance_count: int = 1
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_microseconds: int = 0
    memory_limit_bytes: int | None = None  # an instance using more is restarted by the gateway
    environment: str | None = None  # the key of its own Python environment (None: the serving one)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ScoringKind(self.kind))
        object.__setattr__(self, "instance_kind", InstanceKind(self.instance_kind))
        problems = [f"{name} must be at least {low}, got {getattr(self, name)}"
                    for name, low in (("version", 1), ("threads", 1), ("instance_count", 1), ("max_batch_size", 1),
                                      ("max_queue_delay_microseconds", 0))
                    if getattr(self, name) < low]
        problems += [f"{name} must be positive, got {getattr(self, name)}"
                     for name in ("timeout_seconds", "init_timeout_seconds") if getattr(self, name) <= 0]
        if problems:
            raise PackageError("invalid manifest: " + "; ".join(problems))

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"], data["instance_kind"] = self.kind.value, self.instance_kind.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise PackageError(f"{where}: expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        missing = sorted(n for n, f in known.items() if n not in data and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        wrong = [f"{name}: expected {_TYPES[name][1]}, got {type(value).__name__}"
                 for name, value in data.items() if name in _TYPES and not _TYPES[name][0](value)]
        problems = ([f"unknown key '{k}'" for k in unknown] + [f"missing key '{k}'" for k in missing] + wrong)
        if problems:
            raise PackageError(f"{where} is invalid: " + "; ".join(problems))
        try:
            return cls(**data)
        except ValueError as exc:  # an unknown kind or instance kind
            raise PackageError(f"{where} is invalid: {exc}") from None

    def write(self, version_dir: Path) -> None:
        (version_dir / MANIFEST_FILE).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        path = version_dir / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PackageError(f"{path} is missing: this entry was not built by the packager") from None
        except (OSError, ValueError) as exc:
            raise PackageError(f"{path} is invalid: {exc}") from None
        return cls.from_dict(data, str(path))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


_TYPES: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "version": (_is_int, "an integer"),
    "content_hash": (lambda v: isinstance(v, str), "a string"),
    "scoring_script": (lambda v: isinstance(v, str), "a string"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "tags": (_is_str_map, "a map of strings"),
    "model_name": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "kind": (lambda v: isinstance(v, str), "online or batch"),
    "timeout_seconds": (_is_number, "a number"),
    "init_timeout_seconds": (_is_number, "a number"),
    "threads": (_is_int, "an integer"),
    "environment_variables": (_is_str_map, "a map of strings"),
    "signature": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "sample_request": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "memory_limit_bytes": (_optional(_is_int), "an integer or null"),
    "environment": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "instance_kind": (lambda v: isinstance(v, str), "cpu or gpu"),
    "instance_count": (_is_int, "an integer"),
    "max_batch_size": (_is_int, "an integer"),
    "dynamic_batching": (lambda v: isinstance(v, bool), "true or false"),
    "max_queue_delay_microseconds": (_is_int, "an integer"),
}


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_bytes(value: int | str, what: str = "memory") -> int:
    """A byte count: an integer, or a quantity as Kubernetes and Azure write it ("512Mi", "2Gi", "1.5G", "800MB")."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _QUANTITY.match(str(value))
        if match is None:
            raise PackageError(f"{what}: {value!r} is not a size (write bytes, or e.g. 512Mi, 2Gi, 1.5G)")
        number = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if number <= 0:
        raise PackageError(f"{what}: {value!r} must be more than 0 bytes")
    return number
