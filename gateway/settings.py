"""Gateway settings: one model, the single home of every default.

Each field is set, strongest first, by its ``gateway serve`` option (derived from this model, see
gateway/cli.py), by a ``TURNOUT_<FIELD>`` environment variable (``TURNOUT_STATE_DIR``, ``TURNOUT_NODES_FILE``,
``TURNOUT_INSTANCE_TYPE_POOLS='{"Standard_X": "gpu"}'``), or by its default here. Built once by the CLI
(or a test) and handed to create_app().
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TURNOUT_", extra="forbid", frozen=True)

    repository: Path = Field(default=Path("model_repository"), description="Model repository of dropped/built models.")
    state_dir: Path = Field(default=Path(".turnout/gateway"), description="SQLite state, keys, deployment entries.")
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0: a free one).")
    grpc_port: int | None = Field(default=None, ge=0, le=65535, description="gRPC port; None disables gRPC.")
    nodes_file: Path | None = Field(default=None, description="Triton nodes; None starts an embedded Triton.")
    admin_key: str | None = Field(default=None, description="Admin credential; else read/created in state_dir.")
    allow_anonymous: bool = Field(
        default=False, description="Local development: model URLs need no key, endpoints may use auth_mode none."
    )
    max_body_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="Largest request body (413 above).")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest request line + headers (431).")
    max_header_count: int = Field(default=100, ge=8, description="Most header fields in a request (431).")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="Time to send a request's headers (408).")
    body_timeout_seconds: float = Field(default=30.0, gt=0, description="Longest gap within a request body (408).")
    keep_alive_timeout_seconds: int = Field(default=5, ge=1, description="Idle keep-alive connections close after this.")
    max_connections: int = Field(
        default=4096, ge=16, description="Open connections per listener; past it the longest-idle one is closed."
    )
    upstream_timeout_seconds: float = Field(default=120.0, gt=0, description="Bound on one call to Triton (504).")
    coalesce_depth: int = Field(
        default=4, ge=0, le=1024,
        description="Triton requests in flight per entry and node before concurrent requests are coalesced "
                    "into one (0: never coalesce).",
    )
    max_inflight_per_deployment: int = Field(default=512, gt=0, description="Concurrent requests before 429.")
    token_ttl_seconds: int = Field(default=3600, gt=0, description="Lifetime of aml_token tokens.")
    health_interval_seconds: float = Field(default=5.0, gt=0, description="Node health check period.")
    default_pool: str = Field(default="cpu", description="Pool that serves repository models.")
    keep_versions: int = Field(default=1, ge=1, description="Versions of a dropped model kept loaded.")
    watch: bool = Field(default=True, description="Watch the repository for dropped packages.")
    drop_quiet_seconds: float = Field(
        default=1.0, ge=0, description="A drop is acted on once nothing in it changed for this long."
    )
    instance_type_pools: dict[str, str] = Field(
        default_factory=dict, description="Extra instance_type -> pool mappings (override the built-in table)."
    )
    environments_dir: Path | None = Field(
        default=None, description="Cache of per-deployment Python environments (none: <state_dir>/environments).")
    environment_build_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Longest time one environment may take to build (then 424).")
    batch_input_roots: list[Path] = Field(
        default_factory=list, description="Folders a batch job submitted with an endpoint credential may read and "
        "write (the admin key may use any path outside the state folder).")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$",
                           description="debug, info, warning or error.")

    @field_validator("repository", "state_dir", "nodes_file", "environments_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Resolved once, here: child processes and Triton run in other working directories.
        return path.expanduser().resolve() if path is not None else None

    @property
    def deployments_repository(self) -> Path:
        """Gateway-owned entries (one per deployment generation), a second Triton repository."""
        return self.state_dir / "deployments"

    @property
    def built_repository(self) -> Path:
        """Entries built from packages dropped into the repository, a third Triton repository."""
        return self.state_dir / "built"

    @property
    def environments_root(self) -> Path:
        """Per-deployment environments, beside the repositories on the volume every node reads."""
        return self.environments_dir or self.state_dir / "environments"

    @property
    def jobs_dir(self) -> Path:
        """Batch jobs' parts, logs and (unless an output path is given) outputs."""
        return self.state_dir / "jobs"

    @property
    def database(self) -> Path:
        return self.state_dir / "state.sqlite3"
