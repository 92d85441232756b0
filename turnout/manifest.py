"""``manifest.json``: what the packager tells the backend about one built entry.

The packager writes it into ``<entry>/<version>/``; the backend reads it at ``initialize()``. Per-model
files are data: no code is generated per model beyond ``config.pbtxt``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turnout.errors import PackageError

MANIFEST_FILE = "manifest.json"
CODE_DIR = "code"
# AZUREML_MODEL_DIR: holds the registered model folder under its own name, or a single registered file.
MODELS_DIR = "azureml-models"


class ScoringKind(StrEnum):
    """What the script serves. ``online`` scripts are told apart (Azure run() vs hooks) when loaded;
    ``batch`` must be declared because ``run(mini_batch)`` and ``run(raw_data)`` look alike."""

    online = "online"
    batch = "batch"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Model name; the gateway serves it at /models/{name}.")
    version: int = Field(ge=1, description="Model version; /models/{name}/versions/{version}.")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    content_hash: str = Field(description="sha256 over the package's files, as registered.")
    scoring_script: str = Field(description="Path of the scoring script inside code/.")
    model_name: str | None = Field(
        default=None, description="Name of the model folder or file under azureml-models/, if any."
    )
    kind: ScoringKind = ScoringKind.online
    timeout_seconds: float = Field(default=60.0, gt=0, description="Bound on one call into the script.")
    init_timeout_seconds: float = Field(default=600.0, gt=0, description="Bound on import + init().")
    threads: int = Field(default=1, ge=1, description="torch/onnxruntime/TF/BLAS threads per instance.")
    environment_variables: dict[str, str] = Field(default_factory=dict)
    signature: dict[str, object] | None = Field(default=None, description="Optional typed signature.")
    sample_request: str | None = Field(default=None, description="sample-request.json under code/, if any.")
    source: str = Field(default="", description="Where the package came from, for humans.")

    def write(self, version_dir: Path) -> None:
        (version_dir / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        path = version_dir / MANIFEST_FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError:
            raise PackageError(f"{path} is missing: this entry was not built by the packager") from None
        except (ValueError, ValidationError) as exc:
            raise PackageError(f"{path} is invalid: {exc}") from None
