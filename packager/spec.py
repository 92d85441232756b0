"""The two files a data scientist may hand over with a model: our ``model.yaml`` and Azure ML CLI v2's
deployment YAML. Both are parsed strictly: an unknown key is an error that names the key."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from turnout.errors import PackageError
from turnout.manifest import InstanceKind, ScoringKind, parse_bytes

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(name: str, what: str = "name") -> str:
    if not NAME_PATTERN.match(name):
        raise PackageError(
            f"invalid {what} {name!r}: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


# Azure ML's rule for online/batch endpoint and deployment names (azure-ai-ml's
# validate_endpoint_or_deployment_name): 3-32 characters, a letter first, letters, digits and hyphens,
# no hyphen last. No dots: that is what keeps every entry and registry name made from them unique.
AZURE_NAME_PATTERN = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")


def check_azure_name(name: str, what: str) -> str:
    if not 3 <= len(name) <= 32 or not AZURE_NAME_PATTERN.match(name):
        raise PackageError(
            f"invalid {what} {name!r}: Azure's rule is 3-32 characters, starting with a letter, then letters, "
            "digits or hyphens, not ending with a hyphen (no dots or underscores)"
        )
    return name


def _as_text(values: Any) -> Any:
    """YAML reads ``WORKERS: 2`` as a number and ``DEBUG: true`` as a boolean; an environment variable is text."""
    if not isinstance(values, dict):
        return values
    return {k: ("true" if v is True else "false" if v is False else str(v) if isinstance(v, (int, float)) else v)
            for k, v in values.items()}


EnvironmentVariables = Annotated[dict[str, str], BeforeValidator(_as_text)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstanceSpec(Strict):
    kind: InstanceKind = Field(default=InstanceKind.cpu, description="cpu or gpu (KIND_GPU instance group).")
    count: int = Field(default=1, ge=1, le=64, description="Triton instances of this model per node.")


class BatchingSpec(Strict):
    enabled: bool = Field(default=True, description="Triton's dynamic batcher (hook scripts gain most).")
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Most requests in one predict().")
    max_queue_delay_microseconds: int = Field(
        default=0, ge=0, description="How long a request may wait for others; 0 never delays a lone request."
    )


class RetrySettings(Strict):
    """A batch deployment's ``retry_settings``, with Azure's defaults."""

    max_retries: int = Field(default=3, ge=0, description="Attempts after the first for a failed mini-batch.")
    timeout: float = Field(default=30, gt=0, description="Seconds one mini-batch may take.")


class BatchSettings(Strict):
    """A batch deployment's ``settings`` (Azure's keys and defaults; a key Azure does not have is an error)."""

    max_concurrency_per_instance: int = Field(default=1, ge=1, description="Mini-batches in flight per instance.")
    mini_batch_size: int = Field(default=10, ge=1, description="Files per call of run(mini_batch).")
    output_action: str = Field(default="append_row", description="append_row or summary_only.")
    output_file_name: str = Field(default="predictions.csv", min_length=1)
    retry_settings: RetrySettings = Field(default_factory=RetrySettings)
    error_threshold: int = Field(default=-1, ge=-1, description="Failed files before the job fails (-1: never).")
    logging_level: str = Field(default="info", description="debug, info, warning or error.")
    environment_variables: EnvironmentVariables = Field(default_factory=dict)

    @field_validator("output_action")
    @classmethod
    def _action(cls, value: str) -> str:
        normalised = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", value).lower()  # Azure's SDK spells it AppendRow
        if normalised not in ("append_row", "summary_only"):
            raise ValueError(f"output_action must be append_row or summary_only, got {value!r}")
        return normalised

    @field_validator("logging_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"logging_level must be debug, info, warning, error or critical, got {value!r}")
        return value.lower()

    @field_validator("output_file_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"output_file_name must be a file name, not a path: {value!r}")
        return value


class PackageSpec(Strict):
    """``model.yaml``: every field optional; the defaults fit a folder with score.py and model/."""

    name: str | None = Field(default=None, description="Model name; defaults to the folder's name.")
    version: int | None = Field(default=None, ge=1, description="Requested version; else the next free one.")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    scoring_script: str = Field(default="score.py", description="Scoring script, relative to the code folder.")
    code: str = Field(default=".", description="Code folder, relative to the package.")
    model_path: str | None = Field(default=None, description="Model file or folder; default 'model' if present.")
    kind: ScoringKind = Field(default=ScoringKind.online, description="online, or batch for run(mini_batch).")
    instance: InstanceSpec = Field(default_factory=InstanceSpec)
    instance_type: str | None = Field(default=None, description="Azure SKU; sets instance.kind (see docs).")
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    timeout_seconds: float = Field(default=60.0, gt=0, description="Bound on each call into the script.")
    init_timeout_seconds: float = Field(default=600.0, gt=0, description="Bound on import + init().")
    threads: int = Field(default=1, ge=1, description="torch/onnxruntime/TF/BLAS threads per instance.")
    environment: str | list[str] | None = Field(
        default=None, description="Its own Python environment: a requirements.txt or conda.yaml, or a list of requirements.")
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    signature: dict[str, Any] | None = Field(default=None, description="Optional typed signature (OpenAPI).")
    batch_settings: dict[str, Any] = Field(
        default_factory=dict, description="Azure batch deployment settings, as given (BatchSettings checks them).")
    memory_limit: int | str | None = Field(
        default=None, description="Most memory one instance may use (bytes, or 512Mi, 2Gi); past it it is restarted."
    )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_bytes(value, "memory_limit")

    @field_validator("batch_settings")
    @classmethod
    def _batch(cls, value: dict[str, Any]) -> dict[str, Any]:
        # What was given is kept (a package's content hash does not change with Turnout's defaults).
        return BatchSettings.model_validate(value).model_dump(mode="json", exclude_unset=True) if value else value

    @property
    def batch(self) -> BatchSettings:
        """The batch settings in force: what was given, Azure's defaults for the rest."""
        return BatchSettings.model_validate(self.batch_settings)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)


# Azure SKUs with GPUs: the N-series (NC, ND, NV, ...).
_GPU_SKU = re.compile(r"^(standard_)?n[cdvgp]", re.IGNORECASE)


def kind_for_instance_type(instance_type: str) -> InstanceKind:
    return InstanceKind.gpu if _GPU_SKU.match(instance_type) or instance_type.lower() == "gpu" else InstanceKind.cpu


def format_validation(error: ValidationError, source: Path) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}'")
        else:
            lines.append(f"'{where}': {item['msg']} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


class _NoAliases(yaml.SafeLoader):  # type: ignore[misc]
    """YAML without aliases: ``*name`` lets a few hundred bytes expand to gigabytes ("billion laughs"), and
    no file we read needs one. An anchor alone (``&name``) is harmless and stays allowed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not accepted (line {mark.line + 1}): write the value out "
                                 "where it is used")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """The one way Turnout parses YAML (model.yaml, Azure files, nodes files)."""
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 (a SafeLoader that also refuses aliases)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PackageError(f"{path}: cannot be read as YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PackageError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_package_spec(path: Path) -> PackageSpec:
    try:
        spec = PackageSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise PackageError(format_validation(exc, path)) from None
    if spec.instance_type:
        spec.instance.kind = kind_for_instance_type(spec.instance_type)
    return spec


# --- Azure ML CLI v2 deployment YAML -------------------------------------------------------------------

# Keys of Azure's online/batch deployment schemas that Turnout accepts but does not act on.
AZURE_IGNORED_KEYS = frozenset({
    "app_insights_enabled", "scale_settings", "liveness_probe", "readiness_probe",
    "egress_public_network_access", "data_collector", "properties", "type", "resources", "compute",
    "model_mount_path", "default_instance_type", "private_network_connection", "data_collection",
    "deployment_configuration", "job_definition", "component", "creation_context",
    "provisioning_state", "id",
})
# Older batch schemas put these at the top level; newer ones under ``settings``.
AZURE_BATCH_KEYS = frozenset({
    "mini_batch_size", "output_action", "output_file_name", "retry_settings", "error_threshold",
    "max_concurrency_per_instance", "logging_level",
})


class AzureModel(Strict):
    name: str | None = None
    version: str | int | None = None
    path: str | None = None
    description: str | None = None
    type: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, Any] | None = None
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AzureModelFile(Strict):
    """Azure ML's model YAML (``az ml model create -f model.yml``): a bare model, no code."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    path: str
    version: int | None = Field(default=None, ge=1)
    type: str = Field(default="custom_model", description="custom_model, mlflow_model or triton_model (recorded).")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)
    stage: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value, "model name")


def load_azure_model(path: Path) -> AzureModelFile:
    data = read_yaml(path)
    data.pop("$schema", None)
    try:
        return AzureModelFile.model_validate(data)
    except ValidationError as exc:
        raise PackageError(format_validation(exc, path)) from None


class AzureCode(Strict):
    code: str = "."
    scoring_script: str


class AzureEnvironment(Strict):
    name: str | None = None
    version: str | int | None = None
    image: str | None = None
    conda_file: str | None = None
    description: str | None = None
    build: dict[str, Any] | None = None
    inference_config: dict[str, Any] | None = None
    os_type: str | None = None
    tags: dict[str, str] | None = None


class AzureRequestSettings(Strict):
    request_timeout_ms: int | None = Field(default=None, gt=0)
    max_concurrent_requests_per_instance: int | None = None
    max_queue_wait_ms: int | None = None


class AzureDeployment(BaseModel):
    """The keys of an Azure ML CLI v2 online or batch deployment YAML that Turnout uses."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    endpoint_name: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    model: str | AzureModel | None = None
    code_configuration: AzureCode | None = None
    environment: str | AzureEnvironment | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    instance_type: str | None = None
    instance_count: int = Field(default=1, ge=1)
    memory_limit: int | str | None = Field(default=None, description="Taken from resources.limits.memory.")
    request_settings: AzureRequestSettings | None = None
    settings: BatchSettings | None = None

    @property
    def is_batch(self) -> bool:
        return self.settings is not None


def apply_overrides(overrides: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` as ``az ml`` takes it (dotted keys reach nested ones; values are YAML
    scalars), merged into ``overrides``."""
    merged = dict(overrides)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PackageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set instance_count=2 or "
                               "--set environment_variables.COLOR=red")
        try:
            value = load_yaml(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        *parents, last = key.strip().split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or part not in node else node[part]
        node[last] = value
    return merged


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(data)
    for key, value in overrides.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


# Keys inside sections Turnout uses that it accepts but does not act on.
_IGNORED_NESTED = (("environment", "inference_config"), ("environment", "build"),
                   ("request_settings", "max_queue_wait_ms"))


def load_azure_deployment(path: Path, overrides: dict[str, Any] | None = None) -> tuple[AzureDeployment, list[str]]:
    """Parse an Azure deployment YAML, with command-line overrides applied first (so a templated name
    such as ``<my-endpoint-name>`` is never read); returns it and the Azure keys accepted but ignored."""
    data = _merge(read_yaml(path), overrides or {})
    schema = str(data.pop("$schema", ""))  # metadata, not a setting: never reported
    ignored = sorted(k for k in data if k in AZURE_IGNORED_KEYS)
    nested = [(section, key) for section, key in _IGNORED_NESTED
              if isinstance(data.get(section), dict) and data[section].get(key) is not None]
    batch = {k: data.pop(k) for k in list(data) if k in AZURE_BATCH_KEYS}
    resources = data.get("resources")
    limits = resources.get("limits") if isinstance(resources, dict) else None
    if isinstance(limits, dict) and limits.get("memory") is not None:  # Kubernetes online deployments
        data["memory_limit"] = limits["memory"]
    for key in ignored:
        data.pop(key)
    ignored += [f"{section}.{key}" for section, key in nested]  # accepted, kept, not acted on
    if "batchDeployment" in schema or batch or "settings" in data:
        data["settings"] = {**batch, **(data.get("settings") or {})}
        if isinstance(resources, dict) and "instance_count" in resources:
            data.setdefault("instance_count", resources["instance_count"])
    try:
        return AzureDeployment.model_validate(data), ignored
    except ValidationError as exc:
        raise PackageError(format_validation(exc, path)) from None


def looks_like_azure_deployment(path: Path) -> bool:
    if path.suffix.lower() not in (".yml", ".yaml"):
        return False
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and ("code_configuration" in data or "endpoint_name" in data or "model" in data)
