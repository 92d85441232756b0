"""The gateway's durable state: endpoints, deployments, traffic, keys and their history, in SQLite.

Every change runs in one ``BEGIN IMMEDIATE`` transaction (:meth:`StateStore.transaction`), so it is either
fully applied or not at all, and several gateway processes sharing the file never interleave changes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (endpoint, name)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def now() -> datetime:
    return datetime.now(UTC)


class EndpointRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    auth_mode: str = Field(description="key, aml_token or none")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    traffic: dict[str, int] = Field(default_factory=dict, description="deployment -> percent of live traffic")
    mirror_traffic: dict[str, int] = Field(default_factory=dict, description="deployment -> percent mirrored")
    key_hashes: list[str] = Field(default_factory=list, description="sha256 of the primary and secondary keys")
    sealed_keys: list[str] = Field(default_factory=list, description="the keys, encrypted with the gateway secret")
    uid: str = Field(default="", description="this endpoint's identity: a recreated endpoint of one name is another")
    key_generation: int = Field(default=0, description="bumped by regenerate-keys: older tokens are revoked")
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class DeploymentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    endpoint: str
    name: str
    model_name: str
    model_version: int
    content_hash: str
    entry: str = Field(description="Triton entry in the deployments repository")
    generation: int = 1
    instance_type: str | None = None
    instance_count: int = 1
    concurrency: int = Field(default=1, description="model instances per instance_count (batch: max_concurrency)")
    pool: str = "cpu"
    nodes: list[str] = Field(default_factory=list, description="nodes the entry is loaded on")
    state: str = Field(default="creating", description="creating, updating, ready or failed")
    reason: str = ""
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    max_concurrent_requests: int | None = None
    request_timeout_seconds: float | None = None
    ignored_keys: list[str] = Field(default_factory=list)
    schemas: dict[str, Any] = Field(default_factory=dict, description="run()'s inference-schema, if any")
    load_log: str = Field(default="", description="the inspection's log, when the script failed to load there")
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Private before SQLite opens it: its -wal and -shm files take the database file's permissions.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        # One connection, used from the event loop's thread and the control plane's; serialised by a lock.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process being killed (what the tests and the batch runner's
            # resume rely on); only a power loss may lose the last commits. FULL costs an fsync per commit.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def add_schema(self, schema: str) -> None:
        """Tables another part owns (gateway/batch_state.py), created if missing, on this database."""
        with self._lock:
            self._db.executescript(schema)

    def close(self) -> None:
        self._db.close()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Called after every committed transaction (the route table republishes itself)."""
        self._listeners.append(listener)

    @contextmanager
    def transaction(self, notify: bool = True) -> Iterator[sqlite3.Connection]:
        """``notify=False``: a change no subscriber reads (batch jobs' progress), so no republishing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        for listener in self._listeners if notify else ():
            listener()

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._rows(sql, *args)

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- endpoints ---
    def endpoint(self, name: str) -> EndpointRecord | None:
        rows = self._rows("SELECT record FROM endpoints WHERE name = ?", name)
        return EndpointRecord.model_validate_json(rows[0][0]) if rows else None

    def endpoints(self) -> list[EndpointRecord]:
        return [EndpointRecord.model_validate_json(r[0]) for r in self._rows("SELECT record FROM endpoints ORDER BY name")]

    @staticmethod
    def put_endpoint(db: sqlite3.Connection, record: EndpointRecord) -> None:
        record.updated = now()
        db.execute(
            "INSERT INTO endpoints(name, record) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            (record.name, record.model_dump_json()),
        )

    @staticmethod
    def delete_endpoint(db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM deployments WHERE endpoint = ?", (name,))
        db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    # --- deployments ---
    def deployment(self, endpoint: str, name: str) -> DeploymentRecord | None:
        rows = self._rows("SELECT record FROM deployments WHERE endpoint = ? AND name = ?", endpoint, name)
        return DeploymentRecord.model_validate_json(rows[0][0]) if rows else None

    def deployments(self, endpoint: str | None = None) -> list[DeploymentRecord]:
        if endpoint is None:
            rows = self._rows("SELECT record FROM deployments ORDER BY endpoint, name")
        else:
            rows = self._rows("SELECT record FROM deployments WHERE endpoint = ? ORDER BY name", endpoint)
        return [DeploymentRecord.model_validate_json(r[0]) for r in rows]

    @staticmethod
    def put_deployment(db: sqlite3.Connection, record: DeploymentRecord) -> None:
        record.updated = now()
        db.execute(
            "INSERT INTO deployments(endpoint, name, record) VALUES(?, ?, ?) "
            "ON CONFLICT(endpoint, name) DO UPDATE SET record = excluded.record",
            (record.endpoint, record.name, record.model_dump_json()),
        )

    @staticmethod
    def delete_deployment(db: sqlite3.Connection, endpoint: str, name: str) -> None:
        db.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name))

    # --- history ---
    @staticmethod
    def record_history(db: sqlite3.Connection, endpoint: str, action: str, detail: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO history(at, endpoint, action, detail) VALUES(?, ?, ?, ?)",
            (now().isoformat(), endpoint, action, orjson.dumps(detail).decode()),
        )

    def history(self, endpoint: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT at, action, detail FROM history WHERE endpoint = ? ORDER BY id DESC LIMIT ?", endpoint, limit
        )
        return [{"at": at, "action": action, "detail": orjson.loads(detail)} for at, action, detail in rows]
