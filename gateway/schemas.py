"""The control plane's request bodies. Azure ML CLI v2 endpoint YAML maps onto :class:`EndpointSpec`;
deployment YAML is resolved by the CLI into a package archive plus :class:`DeploymentSpec`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from packager.spec import check_azure_name

# Keys of Azure's endpoint YAML that Turnout accepts but does not act on.
AZURE_ENDPOINT_IGNORED = frozenset({
    "$schema", "identity", "public_network_access", "kind", "properties", "compute", "location", "id",
    "provisioning_state", "scoring_uri", "openapi_uri", "mirror_traffic_enabled",
})


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    auth_mode: str = Field(default="key", description="key, aml_token, or none (gateways in dev mode only).")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    traffic: dict[str, int] = Field(default_factory=dict)
    mirror_traffic: dict[str, int] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_azure_name(value, "endpoint name")

    @field_validator("auth_mode")
    @classmethod
    def _auth_mode(cls, value: str) -> str:
        """Azure's spellings, whatever their case (its Kubernetes example says ``Key``, SDKs ``AMLToken``)."""
        folded = value.replace("_", "").replace("-", "").lower()
        modes = {"key": "key", "amltoken": "aml_token", "none": "none"}
        if folded not in modes:
            raise ValueError(f"auth_mode {value!r} is not offered: Turnout endpoints use key, aml_token, or none "
                             "(gateways in dev mode); aad_token needs Azure's own identity service")
        return modes[folded]


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    traffic: dict[str, int] | None = Field(default=None, description="Replaces the whole traffic map.")
    mirror_traffic: dict[str, int] | None = Field(default=None, description="Replaces the mirror map.")
    description: str | None = None
    tags: dict[str, str] | None = None


class RequestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_timeout_ms: int | None = Field(default=None, gt=0)
    max_concurrent_requests_per_instance: int | None = Field(default=None, gt=0)
    max_queue_wait_ms: int | None = None


class DeploymentSpec(BaseModel):
    """``deployment.json`` inside an uploaded deployment archive."""

    model_config = ConfigDict(extra="forbid")

    name: str
    endpoint_name: str
    instance_type: str | None = None
    instance_count: int = Field(default=1, ge=1)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    request_settings: RequestSettings | None = None
    ignored_keys: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_azure_name(value, "deployment name")

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str) -> str:
        return check_azure_name(value, "endpoint name")


class PackageHeader(BaseModel):
    """``package.json`` inside an uploaded deployment archive: the staged package's identity."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    spec: dict[str, Any]
    model_name: str | None = None
    source: str = ""


class RegenerateKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_type: str = Field(default="primary", pattern="^(primary|secondary)$")


# --- batch endpoints -----------------------------------------------------------------------------------

# Keys of Azure's batch endpoint YAML that Turnout accepts but does not act on.
AZURE_BATCH_ENDPOINT_IGNORED = frozenset({"$schema", "properties", "location", "id", "provisioning_state",
                                          "scoring_uri", "swagger_uri", "identity"})


class BatchDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deployment_name: str | None = None


class BatchEndpointSpec(BaseModel):
    """Azure's batch endpoint YAML. Azure's only ``auth_mode`` there is ``aad_token``: Turnout reads it as
    its own token (``aml_token``), since no Entra ID stands behind a self-hosted gateway."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    auth_mode: str = "aad_token"
    defaults: BatchDefaults = Field(default_factory=BatchDefaults)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_azure_name(value, "batch endpoint name")

    @field_validator("auth_mode")
    @classmethod
    def _auth_mode(cls, value: str) -> str:
        folded = value.replace("_", "").replace("-", "").lower()
        modes = {"key": "key", "amltoken": "aml_token", "aadtoken": "aml_token", "none": "none"}
        if folded not in modes:
            raise ValueError(f"auth_mode {value!r} is not offered: use aad_token (read as Turnout's token), "
                             "aml_token, key, or none (gateways in dev mode)")
        return modes[folded]


class BatchEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: BatchDefaults | None = None
    description: str | None = None
    tags: dict[str, str] | None = None


class BatchDeploymentSpec(BaseModel):
    """``deployment.json`` inside an uploaded batch deployment archive."""

    model_config = ConfigDict(extra="forbid")

    name: str
    endpoint_name: str
    instance_type: str | None = None
    instance_count: int = Field(default=1, ge=1)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    compute: str | None = None
    ignored_keys: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_azure_name(value, "deployment name")

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str) -> str:
        return check_azure_name(value, "batch endpoint name")


class JobSpec(BaseModel):
    """``POST /batch-endpoints/{e}/jobs``: what ``az ml batch-endpoint invoke`` takes. Azure's own REST body
    (``{"properties": {"InputData": {"NAME": {"JobInputType": "UriFolder", "Uri": PATH}}}}``, or the newer
    ``inputs`` / ``jobInputType`` / ``uri`` spelling) is read as the same."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _azure_rest(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "properties" not in data:
            return data
        properties = data.get("properties")
        inputs = {k.lower(): v for k, v in (properties or {}).items()} if isinstance(properties, dict) else {}
        given = inputs.get("inputdata") or inputs.get("inputs")
        if not isinstance(given, dict) or len(given) != 1:
            raise ValueError('Azure\'s REST body needs one input: {"properties": {"InputData": {"NAME": '
                             '{"JobInputType": "UriFolder", "Uri": "/path/on/the/gateway"}}}}')
        ((_, found),) = given.items()
        fields = {k.lower(): v for k, v in found.items()} if isinstance(found, dict) else {}
        kind = str(fields.get("jobinputtype", "")).lower()
        types = {"urifolder": "uri_folder", "urifile": "uri_file", "": None}
        if kind not in types or "uri" not in fields:
            raise ValueError(f"Azure's REST input needs a Uri and a JobInputType of UriFolder or UriFile, got {found!r}")
        return {k: v for k, v in data.items() if k != "properties"} | {"input": fields["uri"],
                                                                          "input_type": types[kind]}

    input: str = Field(description="A folder (read recursively), a file, or a glob, on the gateway's machine.")
    input_type: str | None = Field(default=None, description="uri_folder or uri_file (default: what the path is).")
    deployment_name: str | None = None
    job_name: str | None = Field(default=None, description="Makes the submit idempotent.")
    output_path: str | None = Field(default=None, description="Folder for the output file (default: the job's).")
    mini_batch_size: int | None = Field(default=None, ge=1)
    instance_count: int | None = Field(default=None, ge=1)
    set: dict[str, Any] = Field(default_factory=dict, description="settings.KEY (or KEY) -> value; overwrite=true.")

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}", value):
            raise ValueError(f"invalid job name {value!r}: letters, digits, '-' and '_', starting with a letter or "
                             "digit, at most 255 characters")
        return value
