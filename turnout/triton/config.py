"""``config.pbtxt`` for a python_scoring entry, built from Triton's own protobuf types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from turnout.manifest import ENTRY_ENVIRONMENT, InstanceKind, Manifest
from turnout.triton.embedded import BACKEND_NAME


@dataclass(frozen=True)
class EntryConfig:
    """What the packager decides about one entry's serving; everything else is fixed by the backend."""

    name: str
    instance_kind: InstanceKind = InstanceKind.cpu
    instance_count: int = 1
    max_batch_size: int = 64
    dynamic_batching: bool = True
    # 0: a lone request never waits; under load batches still form while an instance is busy.
    max_queue_delay_microseconds: int = 0
    # $$TRITON_MODEL_DIRECTORY/python-env: the entry's link to its own environment (None: the serving one).
    execution_env_path: str | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest, name: str, *, instance_kind: InstanceKind | None = None,
                      instance_count: int | None = None) -> EntryConfig:
        """The entry's config from its manifest; a node may say its own instance kind and count."""
        return cls(
            name=name,
            instance_kind=instance_kind or manifest.instance_kind,
            instance_count=instance_count or manifest.instance_count,
            max_batch_size=manifest.max_batch_size,
            dynamic_batching=manifest.dynamic_batching,
            max_queue_delay_microseconds=manifest.max_queue_delay_microseconds,
            execution_env_path=f"$$TRITON_MODEL_DIRECTORY/{ENTRY_ENVIRONMENT}" if manifest.environment else None,
        )


def _bytes_tensor(cls: type, name: str, optional: bool = False) -> object:
    tensor = cls(name=name, data_type=mc.TYPE_STRING, dims=[1])
    if optional:
        tensor.optional = True
    return tensor


def build_model_config(entry: EntryConfig) -> mc.ModelConfig:
    config = mc.ModelConfig(name=entry.name, backend=BACKEND_NAME, max_batch_size=entry.max_batch_size)
    config.input.extend([_bytes_tensor(mc.ModelInput, "BODY"), _bytes_tensor(mc.ModelInput, "META", optional=True)])
    config.output.extend([_bytes_tensor(mc.ModelOutput, "BODY"), _bytes_tensor(mc.ModelOutput, "META")])
    kind = mc.ModelInstanceGroup.KIND_GPU if entry.instance_kind is InstanceKind.gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=entry.instance_count))
    if entry.dynamic_batching and entry.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = entry.max_queue_delay_microseconds
    if entry.execution_env_path:
        config.parameters["EXECUTION_ENV_PATH"].string_value = entry.execution_env_path
    return config


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def render(config: mc.ModelConfig) -> str:
    return str(text_format.MessageToString(config))
